//! `GroupedNets`: one greedy net per dataset-wide routing pattern (docs/definitions.md §3, "conditioning
//! on routing"), fed values and routes together, chunk by chunk.
//!
//! Σ_r |net_δ(r)| over the groups r is the union-bound estimate, and its ratio to the one net of
//! all the points measures how loose the union over routing patterns is. A class can realise 10^5
//! patterns and more, most of them seen a handful of times, so a group's net starts light: the
//! rows that opened a centre at some scale, and per scale the list of its centres, scanned by brute
//! force. A group whose rows outgrow `PROMOTE` moves to a full [`MultiNet`] (hash grid on one axis, sketches),
//! fed those rows again in their order: a row that was no centre at scale δ is within δ of an
//! earlier centre, which comes before it again, so the replay opens exactly the same centres.
//!
//! Groups are numbered in the order their first point arrives; each group's points are scanned in
//! their stream order, so the nets do not depend on the thread count. A chunk runs in one entry of
//! the thread pool, the groups of the chunk spread over its threads.

use super::sketch::first_non_finite;
use super::stream::MultiNet;
use crate::error::{human_bytes, Error, Result};
use crate::parallel::{pool, run_watched, Interrupt};
use rayon::prelude::*;
use rustc_hash::FxHashMap;
use std::sync::atomic::{AtomicBool, Ordering};

/// Rows a group keeps in its light form before it moves to a full net: past this the brute-force
/// scan (one sup distance per kept row, per point) costs more than the full net's lookups. On 10^6
/// rows in 44 508 groups (16 coordinates, 10 scales): 32 → 4.4 s, 128 → 3.3 s, 512 → 2.8 s and
/// 225 MiB, 1024 → 3.6 s and 183 MiB (with `GRID_AXES` = 1).
const PROMOTE: usize = 512;

/// Grid axes of a group's full net. A centre is listed under 3^axes cells; the global net's 3
/// axes pay for themselves over one large net, but summed over thousands of groups the lists
/// dominate: 10^6 rows in 44 508 groups took 7.8 s and 832 MiB with 3 axes, 3.9 s and 388 MiB
/// with 2, 3.0 s and 295 MiB with 1 (the same nets; `PROMOTE` = 128).
const GRID_AXES: usize = 1;

/// A group's net: light (brute force over its few centres) or full.
enum GroupNet {
    Light {
        /// Every row that opened a centre at some scale, row-major, in stream order.
        rows: Vec<f64>,
        /// Per scale, the indices into `rows` of that scale's centres.
        centres: Vec<Vec<u32>>,
    },
    Full(Box<MultiNet<f64>>),
}

impl GroupNet {
    fn new(scales: usize) -> Self {
        GroupNet::Light {
            rows: Vec::new(),
            centres: vec![Vec::new(); scales],
        }
    }

    fn net_sizes(&self) -> Vec<usize> {
        match self {
            GroupNet::Light { centres, .. } => centres.iter().map(Vec::len).collect(),
            GroupNet::Full(net) => net.net_sizes(),
        }
    }

    fn memory_bytes(&self) -> usize {
        match self {
            GroupNet::Light { rows, centres } => {
                rows.capacity() * 8 + centres.iter().map(|c| c.capacity() * 4 + 24).sum::<usize>()
            }
            GroupNet::Full(net) => net.memory_bytes(),
        }
    }

    /// Scans `points` (row-major) after the group's earlier points.
    fn add(&mut self, points: &[f64], dim: usize, deltas: &[f64], stopped: &(dyn Fn() -> bool + Sync)) -> Result<()> {
        if let GroupNet::Full(net) = self {
            return net.add_in_current_pool(points, stopped);
        }
        let GroupNet::Light { rows, centres } = self else {
            unreachable!("full nets returned above")
        };
        // Each row's sup distance is taken once, against every kept row, and then compared with
        // each scale's δ over that scale's centres: scales × centres comparisons of one number
        // instead of as many of whole rows.
        let mut distance = Vec::with_capacity(PROMOTE + 1);
        for (i, point) in points.chunks_exact(dim).enumerate() {
            distance.clear();
            distance.extend(rows.chunks_exact(dim).map(|row| sup_distance(point, row)));
            let mut opened = false;
            for (scale, &delta) in centres.iter_mut().zip(deltas) {
                // `<=` as `within` tests it: a distance of exactly δ covers
                if !scale.iter().any(|&c| distance[c as usize] <= delta) {
                    scale.push((rows.len() / dim) as u32);
                    opened = true;
                }
            }
            if opened {
                rows.extend_from_slice(point);
                if rows.len() / dim > PROMOTE {
                    let mut net = MultiNet::new(deltas, dim, false)?.with_grid_axes(GRID_AXES);
                    net.add_in_current_pool(rows, stopped)?;
                    net.add_in_current_pool(&points[(i + 1) * dim..], stopped)?;
                    *self = GroupNet::Full(Box::new(net));
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// max_j |a_j − b_j|, exactly as `within` compares each coordinate with δ (a NaN never gets here:
/// rows are checked finite before any group sees them).
fn sup_distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).fold(0.0, |most, (x, y)| most.max((x - y).abs()))
}

/// Greedy nets at several scales, one per routing group, over a stream of (value row, route row)
/// pairs. After an error (a NaN, the memory limit, an interrupt) the nets are unusable: every
/// later call says so.
pub struct GroupedNets {
    deltas: Vec<f64>,
    dim: usize,
    pattern_len: usize,
    ids: FxHashMap<Box<[u32]>, u32>,
    /// Group g's pattern at `patterns[g * pattern_len..]`.
    patterns: Vec<u32>,
    members: Vec<u64>,
    nets: Vec<GroupNet>,
    n_points: u64,
    memory_limit: usize,
    failed: bool,
}

impl GroupedNets {
    /// Nets at `deltas` (each finite and > 0; none at all counts the groups only) of points of
    /// dimension `dim`, grouped by route rows of `pattern_len` entries.
    pub fn new(deltas: &[f64], dim: usize, pattern_len: usize) -> Result<Self> {
        super::check_deltas(deltas)?;
        if dim == 0 {
            return Err(Error::invalid("dim", "points need at least one coordinate"));
        }
        if pattern_len == 0 {
            return Err(Error::invalid("routes", "a routing pattern needs at least one entry"));
        }
        Ok(GroupedNets {
            deltas: deltas.to_vec(),
            dim,
            pattern_len,
            ids: FxHashMap::default(),
            patterns: Vec::new(),
            members: Vec::new(),
            nets: Vec::new(),
            n_points: 0,
            memory_limit: usize::MAX,
            failed: false,
        })
    }

    /// Stops `add` with [`Error::TooLarge`] once the groups and their nets hold more than `bytes`.
    pub fn with_memory_limit(mut self, bytes: usize) -> Self {
        self.memory_limit = bytes;
        self
    }

    /// Scans `points` (rows × dim) with their `routes` (rows × pattern_len) after everything added
    /// before: each row joins the group of its route row, and that group's nets.
    pub fn add(&mut self, points: &[f64], routes: &[u32], n_threads: usize, interrupt: Interrupt) -> Result<()> {
        if self.failed {
            return Err(Error::invalid(
                "nets",
                "an earlier add failed part-way; these grouped nets cannot go on (start new ones)",
            ));
        }
        let rows = points.len() / self.dim;
        if points.len() != rows * self.dim || routes.len() != rows * self.pattern_len {
            return Err(Error::invalid(
                "routes",
                format!(
                    "{} value rows of {} and {} route entries of {} per row do not match",
                    points.len() as f64 / self.dim as f64,
                    self.dim,
                    routes.len(),
                    self.pattern_len
                ),
            ));
        }
        if let Some(position) = first_non_finite(points) {
            return Err(Error::invalid(
                "points",
                format!("row {} holds a NaN or infinite value", position / self.dim),
            ));
        }
        if rows == 0 {
            return Ok(());
        }
        let pool = pool(n_threads)?;
        let result = run_watched(&pool, interrupt, |stop| self.scan(points, routes, stop));
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn scan(&mut self, points: &[f64], routes: &[u32], stop: &AtomicBool) -> Result<()> {
        let dim = self.dim;
        // Each row's group, new groups numbered in order of first arrival.
        let group_of: Vec<u32> = routes
            .chunks_exact(self.pattern_len)
            .map(|route| {
                if let Some(&id) = self.ids.get(route) {
                    return id;
                }
                let id = self.members.len() as u32;
                self.ids.insert(route.into(), id);
                self.patterns.extend_from_slice(route);
                self.members.push(0);
                if !self.deltas.is_empty() {
                    self.nets.push(GroupNet::new(self.deltas.len()));
                }
                id
            })
            .collect();
        // The chunk's rows gathered group by group (a counting sort, stable: stream order within
        // each group).
        let groups = self.members.len();
        let mut start = vec![0usize; groups + 1];
        for &g in &group_of {
            start[g as usize + 1] += 1;
        }
        for g in 0..groups {
            self.members[g] += start[g + 1] as u64;
            start[g + 1] += start[g];
        }
        self.n_points += group_of.len() as u64;
        if self.deltas.is_empty() {
            return Ok(());
        }
        let mut next = start.clone();
        let mut gathered = vec![0.0f64; points.len()];
        for (row, &g) in group_of.iter().enumerate() {
            let at = next[g as usize];
            gathered[at * dim..(at + 1) * dim].copy_from_slice(&points[row * dim..(row + 1) * dim]);
            next[g as usize] += 1;
        }
        let deltas = &self.deltas;
        let stopped = || stop.load(Ordering::Relaxed);
        self.nets
            .par_iter_mut()
            .enumerate()
            .filter(|(g, _)| start[g + 1] > start[*g])
            .try_for_each(|(g, net)| {
                if stopped() {
                    return Err(Error::Interrupted);
                }
                net.add(&gathered[start[g] * dim..start[g + 1] * dim], dim, deltas, &stopped)
            })?;
        let held = self.memory_bytes();
        if held > self.memory_limit {
            return Err(Error::TooLarge {
                argument: "samples",
                message: format!(
                    "the per-pattern nets of {} routing groups hold about {} after {} points, more than the limit of {}; \
                     use fewer scales or samples, or by_routing=False",
                    groups,
                    human_bytes(held),
                    self.n_points,
                    human_bytes(self.memory_limit)
                ),
            });
        }
        Ok(())
    }

    /// Bytes held: the patterns, their lookup table and every group's net.
    pub fn memory_bytes(&self) -> usize {
        let patterns = self.patterns.capacity() * 4 * 2 + self.ids.capacity() * (16 + 8) + self.members.capacity() * 8;
        patterns + self.nets.iter().map(GroupNet::memory_bytes).sum::<usize>()
    }

    pub fn n_points(&self) -> u64 {
        self.n_points
    }

    pub fn n_groups(&self) -> usize {
        self.members.len()
    }

    /// Every group's routing pattern, group after group (`n_groups × pattern_len`).
    pub fn patterns(&self) -> &[u32] {
        &self.patterns
    }

    /// Points per group.
    pub fn members(&self) -> &[u64] {
        &self.members
    }

    /// Net sizes, group after group (`n_groups × scales`; empty when no scales were asked for).
    pub fn net_sizes(&self) -> Vec<usize> {
        self.nets.iter().flat_map(GroupNet::net_sizes).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cover::tests::lcg_points;
    use crate::parallel::never;

    /// The definition: per group, the sequential greedy net of its points in stream order.
    fn by_definition(points: &[f64], routes: &[u32], dim: usize, deltas: &[f64]) -> (Vec<u32>, Vec<Vec<usize>>) {
        let mut order: Vec<u32> = Vec::new();
        for &r in routes {
            if !order.contains(&r) {
                order.push(r);
            }
        }
        let sizes = order
            .iter()
            .map(|&group| {
                let rows: Vec<&[f64]> = points
                    .chunks(dim)
                    .zip(routes)
                    .filter(|(_, &r)| r == group)
                    .map(|(p, _)| p)
                    .collect();
                deltas
                    .iter()
                    .map(|&delta| {
                        let mut centres: Vec<&[f64]> = Vec::new();
                        for p in &rows {
                            if !centres
                                .iter()
                                .any(|c| c.iter().zip(p.iter()).all(|(a, b)| (a - b).abs() <= delta))
                            {
                                centres.push(p);
                            }
                        }
                        centres.len()
                    })
                    .collect()
            })
            .collect();
        (order, sizes)
    }

    #[test]
    fn nets_per_group_are_the_sequential_nets_of_each_group_for_any_chunking_and_threads() {
        let dim = 3;
        let m = 6000;
        let points = lcg_points(m, dim, 5);
        // three groups, one large enough to be promoted to a full net, one tiny
        let routes: Vec<u32> = (0..m as u32)
            .map(|i| if i % 97 == 0 { 7 } else { i.wrapping_mul(2654435761) % 3 })
            .collect();
        let deltas = [1.0, 0.5, 0.25];
        let (order, expected) = by_definition(&points, &routes, dim, &deltas);
        for (chunk, threads) in [(m, 1), (1000, 2), (37, 2)] {
            let mut nets = GroupedNets::new(&deltas, dim, 1).expect("valid");
            for (p, r) in points.chunks(chunk * dim).zip(routes.chunks(chunk)) {
                nets.add(p, r, threads, &mut never()).expect("finite");
            }
            assert_eq!(nets.patterns(), &order[..]);
            let sizes = nets.net_sizes();
            for (g, want) in expected.iter().enumerate() {
                assert_eq!(
                    &sizes[g * 3..g * 3 + 3],
                    &want[..],
                    "group {g}, chunk {chunk}, threads {threads}"
                );
            }
            assert_eq!(nets.members().iter().sum::<u64>(), m as u64);
            assert!(
                nets.nets.iter().any(|n| matches!(n, GroupNet::Full(_))),
                "a group was promoted"
            );
        }
    }

    #[test]
    fn without_scales_the_groups_are_counted_only() {
        let mut nets = GroupedNets::new(&[], 1, 2).expect("valid");
        nets.add(&[0.0, 1.0, 2.0], &[1, 2, 1, 2, 3, 4], 1, &mut never())
            .expect("ok");
        assert_eq!(nets.n_groups(), 2);
        assert_eq!(nets.members(), &[2, 1]);
        assert!(nets.net_sizes().is_empty());
    }

    #[test]
    fn a_failed_add_leaves_nets_that_refuse_to_go_on() {
        let mut nets = GroupedNets::new(&[1.0], 1, 1).expect("valid");
        // a NaN is refused before anything changes: the nets go on
        assert!(nets.add(&[0.0, f64::NAN], &[0, 0], 1, &mut never()).is_err());
        nets.add(&[0.0], &[0], 1, &mut never()).expect("still usable");
        let mut nets = nets.with_memory_limit(1);
        let error = nets.add(&[5.0], &[1], 1, &mut never()).expect_err("over the limit");
        assert!(matches!(error, Error::TooLarge { .. }), "{error:?}");
        assert!(
            nets.add(&[0.0], &[0], 1, &mut never()).is_err(),
            "refused after the failure"
        );
    }
}
