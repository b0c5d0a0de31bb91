//! Where a net keeps its candidates: for each grid cell, the ids of the centres listed under it
//! (every centre is listed under the 3^axes cells around its own), ascending, so that the scan of
//! one list finds the earliest covering centre first.
//!
//! The lists live in a hash map, or, once the map is large and its cells fill a box, in an array
//! over that box (`use_array`). Where a list lives never changes what it holds, so neither choice
//! changes the nets.

use rustc_hash::FxHashMap;
use smallvec::SmallVec;

pub(super) const GRID_AXES: usize = 3;
pub(super) type CellKey = [i32; GRID_AXES];

/// The ids of the centres listed under one cell, ascending. Most lists are short when δ is small
/// (each centre alone in most of its 27 cells), so up to `INLINE_IDS` live in the map entry itself:
/// no allocation of their own, and one cache miss less per lookup.
type CellList = SmallVec<[u32; INLINE_IDS]>;
const INLINE_IDS: usize = 4;

/// What the allocator takes for a list that has left the map entry: glibc's malloc adds an 8-byte
/// header and rounds to 16 bytes.
fn list_heap_bytes(list: &CellList) -> usize {
    if list.spilled() {
        (4 * list.capacity() + 8).next_multiple_of(16)
    } else {
        0
    }
}

/// An array is tried once the map holds this many lists (smaller maps are cheap to probe, and nets
/// that stay small, such as those of rare routing groups, never pay for an array), and again each
/// time the map has doubled.
const ARRAY_FROM_LISTS: usize = 512;

/// The lists of one net.
pub(super) struct Cells {
    map: FxHashMap<CellKey, CellList>,
    /// Where most lists are kept once `use_array` has found it worthwhile.
    array: Option<CellArray>,
    /// The map size at which to try an array next.
    next_array_try: usize,
    /// Heap bytes of the lists, kept as they grow (summing them per block would cost as much as
    /// the scan when the nets are large).
    list_bytes: usize,
    /// Centres too far from the origin for the grid (see `MAX_CELL_INDEX`), candidates for every
    /// point.
    wild: Vec<u32>,
}

impl Default for Cells {
    fn default() -> Self {
        Cells {
            map: FxHashMap::default(),
            array: None,
            next_array_try: ARRAY_FROM_LISTS,
            list_bytes: 0,
            wild: Vec::new(),
        }
    }
}

impl Cells {
    /// The list of the cell `key`, if any centre is listed under it.
    pub(super) fn list(&self, key: &CellKey) -> Option<&[u32]> {
        let in_array = self.array.as_ref().and_then(|a| a.index(key).map(|i| &a.lists[i]));
        in_array.or_else(|| self.map.get(key)).map(|list| &list[..])
    }

    /// The centres outside the grid.
    pub(super) fn wild(&self) -> &[u32] {
        &self.wild
    }

    /// Lists centre `id` under every cell around `key` (varying its first `axes` axes), or with
    /// the wild ones when it has no key.
    pub(super) fn insert(&mut self, key: Option<CellKey>, axes: usize, id: u32) {
        let Some(key) = key else {
            self.wild.push(id);
            return;
        };
        for offset in 0..3usize.pow(axes as u32) {
            let mut neighbour = key;
            let mut rest = offset;
            for k in neighbour.iter_mut().take(axes) {
                *k = k.wrapping_add((rest % 3) as i32 - 1);
                rest /= 3;
            }
            let in_array = self
                .array
                .as_mut()
                .and_then(|a| a.index(&neighbour).map(|i| &mut a.lists[i]));
            let list = match in_array {
                Some(list) => list,
                None => self.map.entry(neighbour).or_default(),
            };
            let before = list_heap_bytes(list);
            list.push(id);
            self.list_bytes += list_heap_bytes(list) - before;
        }
    }

    /// Forgets the ids from `keep` on (the tail of every list: ids are appended in ascending order).
    pub(super) fn truncate(&mut self, keep: u32) {
        let newer = |list: &[u32]| list.partition_point(|&c| c < keep);
        self.map.retain(|_, list| {
            list.truncate(newer(list));
            !list.is_empty()
        });
        self.wild.truncate(newer(&self.wild));
        if let Some(array) = self.array.as_mut() {
            for list in array.lists.iter_mut() {
                list.truncate(newer(list));
            }
        }
        let array_lists = self.array.iter().flat_map(|a| &a.lists);
        self.list_bytes = self.map.values().chain(array_lists).map(list_heap_bytes).sum();
    }

    /// Bytes held, as the allocator sees them: the map at its capacity, the array, the lists
    /// that left their entries, the wild ids.
    pub(super) fn memory_bytes(&self) -> usize {
        let entry = std::mem::size_of::<(CellKey, CellList)>() + 1; // + hashbrown's control byte
        let map = self.map.capacity() * entry * 8 / 7; // at most 7/8 of the buckets are used
        let array = self
            .array
            .as_ref()
            .map_or(0, |a| a.lists.capacity() * std::mem::size_of::<CellList>());
        map + array + self.list_bytes + 4 * self.wild.len()
    }

    /// Moves the lists into an array once the map is large and a box around its cells is not much
    /// emptier than the map: at most 16 cells per list the map holds (about 8 are usual for data
    /// of low intrinsic dimension, whose cells fill part of their bounding box, plus the margins),
    /// and at most `max_bytes` (24 a cell).
    pub(super) fn use_array(&mut self, axes: usize, max_bytes: usize) {
        if self.array.is_some() || self.map.len() < self.next_array_try {
            return;
        }
        self.next_array_try = 2 * self.map.len();
        let max_cells = (16 * self.map.len()).min(max_bytes / std::mem::size_of::<CellList>());
        let Some(mut array) = CellArray::around(self.map.keys(), axes, max_cells) else {
            return;
        };
        self.map.retain(|key, list| match array.index(key) {
            Some(i) => {
                array.lists[i] = std::mem::take(list);
                false
            }
            None => true,
        });
        self.map.shrink_to_fit();
        self.array = Some(array);
    }

    #[cfg(test)]
    pub(super) fn uses_array(&self) -> bool {
        self.array.is_some()
    }
}

/// The cells of a box around the data, in an array: a lookup is an index and one read, where the
/// hash map hashes and probes (on case (b) of the benches, 6-10 % of the time). Cells outside the
/// box stay in the map.
struct CellArray {
    low: CellKey,
    shape: [u32; GRID_AXES],
    lists: Vec<CellList>,
}

impl CellArray {
    /// The box of `keys` on the first `axes` axes (the others are always 0), widened by an eighth
    /// of its extent and two cells on every side for the data not seen yet; None when it would hold
    /// more than `max_cells`.
    fn around<'a>(keys: impl Iterator<Item = &'a CellKey> + Clone, axes: usize, max_cells: usize) -> Option<CellArray> {
        let mut low = [0i32; GRID_AXES];
        let mut shape = [1u32; GRID_AXES];
        let mut cells = 1usize;
        for ((low, shape), a) in low.iter_mut().zip(shape.iter_mut()).zip(0..axes) {
            let (min, max) = keys.clone().fold((i32::MAX, i32::MIN), |(min, max), key| {
                (min.min(key[a]), max.max(key[a]))
            });
            if min > max {
                return None; // no keys
            }
            let extent = i64::from(max) - i64::from(min);
            let margin = extent / 8 + 2;
            let width = extent + 1 + 2 * margin;
            if width as u64 > max_cells as u64 {
                return None;
            }
            *low = (i64::from(min) - margin) as i32; // wraps like the keys
            *shape = width as u32;
            cells = cells.saturating_mul(width as usize);
        }
        (cells <= max_cells).then(|| CellArray {
            low,
            shape,
            lists: vec![CellList::new(); cells],
        })
    }

    fn index(&self, key: &CellKey) -> Option<usize> {
        let mut index = 0usize;
        for ((&k, &low), &shape) in key.iter().zip(&self.low).zip(&self.shape) {
            // Below `low` wraps to a large offset, so one comparison bounds both sides.
            let offset = k.wrapping_sub(low) as u32;
            if offset >= shape {
                return None;
            }
            index = index * shape as usize + offset as usize;
        }
        Some(index)
    }
}
