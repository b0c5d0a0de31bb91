//! Full row rank of a Jacobian, certified from its Gram matrix (docs/definitions.md §6).
//!
//! Most Jacobians of a class on fewer inputs than it has parameters have full row rank, and for
//! them the rank needs no singular values: a Cholesky factorisation of the Gram matrix `J Jᵀ`,
//! shifted down by what rounding and the rank threshold allow, proves every singular value of `J`
//! above `rtol · σ_1`. The Gram matrix is cheap because a Jacobian is sparse by blocks: a row is
//! zero on every expert its input's tokens did not choose, so each block's contribution is taken
//! over the rows that use it only. A Jacobian this test cannot certify goes to the caller's
//! rank-revealing factorisation; the test never certifies a rank-deficient one.
//!
//! The bound. Let a = (width + 1)·rows·ε and c = rows·(rows + 1)·ε. Each computed Gram entry is a
//! sum of at most `width` products, so G̃ = J Jᵀ + E with ‖E‖₂ ≤ a·σ_1² (|J||J|ᵀ ≤ ‖J‖_F² ≤
//! rows·σ_1²). μ = ‖G̃‖_F bounds λ_max(G̃) above. A Cholesky factorisation of A = G̃ − s·I that
//! completes in floating point proves λ_min(A) ≥ −c·‖A‖₂ (Higham, *Accuracy and Stability*,
//! Thm 10.3, with ‖|R̃ᵀ||R̃|‖₂ ≤ rows·‖R̃‖₂²). With s = 4(rtol² + a + c)·μ this gives
//! σ_min² ≥ s − c(μ + s) − a(μ + a·μ) > rtol²·(μ + a·μ) ≥ rtol²·σ_1² whenever a + c < 10⁻².

use std::ops::Range;

/// The shift's safety factor over the rounding terms (two would do; see the module's bound).
const SAFETY: f64 = 4.0;

/// Scratch for one thread: the Gram matrix, each block's rows that are nonzero in it, and the
/// packed columns of the current run of blocks.
pub struct GramScratch {
    gram: Vec<f64>,
    masks: Vec<u64>,
    users: Vec<usize>,
    panel: Vec<f64>,
}

impl GramScratch {
    pub fn new(rows: usize) -> Self {
        GramScratch {
            gram: vec![0.0; rows * rows],
            masks: Vec::new(),
            users: Vec::with_capacity(rows),
            panel: Vec::new(),
        }
    }
}

/// Whether the `rows × stride` row-major `matrix`, restricted to the columns in `blocks` (which
/// do not overlap), certainly has every singular value above `rtol · σ_1` (see the module's
/// bound). A zero matrix, or one with more rows than columns, is never certified.
pub fn full_row_rank(
    matrix: &[f64],
    rows: usize,
    stride: usize,
    blocks: &[Range<usize>],
    rtol: f64,
    scratch: &mut GramScratch,
) -> bool {
    let mut masks = std::mem::take(&mut scratch.masks);
    nonzero_rows(matrix, rows, stride, blocks, &mut masks);
    let certified = full_row_rank_given_rows(matrix, rows, stride, blocks, &masks, rtol, scratch);
    scratch.masks = masks;
    certified
}

/// Per block, a bit per row: whether the row has a nonzero entry in it (`masks[b·words + i/64]`
/// bit `i%64`, `words = rows.div_ceil(64)`).
fn nonzero_rows(matrix: &[f64], rows: usize, stride: usize, blocks: &[Range<usize>], masks: &mut Vec<u64>) {
    masks.clear();
    masks.resize(blocks.len() * rows.div_ceil(64), 0);
    pulp::Arch::new().dispatch(NonzeroRows {
        matrix,
        rows,
        stride,
        blocks,
        masks,
    });
}

/// [`full_row_rank`] with each block's rows given: `masks[b·words + i/64]` bit `i%64` set for
/// every row `i < rows` that may be nonzero in block `b` (`words = rows.div_ceil(64)`). Entries of
/// a row outside its blocks are never read, so they may hold anything. A caller that knows the
/// sparsity (the Jacobian's reverse pass knows which experts each row reached) saves the scan.
pub fn full_row_rank_given_rows(
    matrix: &[f64],
    rows: usize,
    stride: usize,
    blocks: &[Range<usize>],
    masks: &[u64],
    rtol: f64,
    scratch: &mut GramScratch,
) -> bool {
    let width: usize = blocks.iter().map(|b| b.len()).sum();
    if rows == 0 || rows > width {
        return false;
    }
    let eps = f64::EPSILON;
    let (a, c) = (
        (width as f64 + 1.0) * rows as f64 * eps,
        rows as f64 * (rows as f64 + 1.0) * eps,
    );
    if a + c >= 1e-2 {
        return false;
    }
    scratch.gram.resize(rows * rows, 0.0);
    gram(matrix, rows, stride, blocks, masks, scratch);
    // ‖G̃‖_F from the lower triangle (the upper is zero)
    let squares: f64 = (0..rows)
        .map(|i| {
            let row = &scratch.gram[i * rows..i * rows + i + 1];
            2.0 * row.iter().map(|g| g * g).sum::<f64>() - row[i] * row[i]
        })
        .sum();
    let mu = squares.sqrt();
    if !(mu > 0.0 && mu.is_finite()) {
        return false;
    }
    let shift = SAFETY * (rtol * rtol + a + c) * mu;
    for i in 0..rows {
        scratch.gram[i * rows + i] -= shift;
    }
    cholesky_completes(&mut scratch.gram, rows)
}

/// The lower triangle of `matrix · matrixᵀ` over `blocks` into `scratch.gram` (`rows × rows`,
/// row-major; the upper triangle is zero). Consecutive blocks with the same nonzero rows form a
/// run; a run's columns are packed (transposed, its rows padded to a multiple of [`TILE`]) and
/// multiplied in `TILE × TILE` tiles of the lower triangle. Runs are added in order and each
/// entry's products in column order, so the sum is the same bits on every machine.
fn gram(matrix: &[f64], rows: usize, stride: usize, blocks: &[Range<usize>], masks: &[u64], scratch: &mut GramScratch) {
    let simd = pulp::Arch::new();
    let GramScratch { gram, users, panel, .. } = scratch;
    gram.fill(0.0);
    let words = rows.div_ceil(64);
    let mut first = 0;
    while first < blocks.len() {
        let mask = &masks[first * words..(first + 1) * words];
        let mut last = first + 1;
        while last < blocks.len() && masks[last * words..(last + 1) * words] == *mask {
            last += 1;
        }
        users.clear();
        users.extend((0..rows).filter(|&i| mask[i / 64] >> (i % 64) & 1 == 1));
        let run = &blocks[first..last];
        first = last;
        if users.is_empty() {
            continue;
        }
        // the run's columns, each the users' entries padded with zeros to whole tiles
        let height = users.len().div_ceil(TILE) * TILE;
        let width: usize = run.iter().map(|b| b.len()).sum();
        panel.clear();
        panel.resize(width * height, 0.0);
        let mut column = 0;
        for block in run {
            for c in block.clone() {
                for (slot, &i) in panel[column * height..].iter_mut().zip(users.iter()) {
                    *slot = matrix[i * stride + c];
                }
                column += 1;
            }
        }
        simd.dispatch(Tiles {
            panel,
            height,
            users,
            gram,
            rows,
        });
    }
}

/// The nonzero rows of every block, as `pulp` dispatches it: `masks[b·words + i/64]` bit `i%64`.
struct NonzeroRows<'a> {
    matrix: &'a [f64],
    rows: usize,
    stride: usize,
    blocks: &'a [Range<usize>],
    masks: &'a mut [u64],
}

impl pulp::WithSimd for NonzeroRows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let words = self.rows.div_ceil(64);
        for (i, row) in self.matrix.chunks_exact(self.stride).take(self.rows).enumerate() {
            for (b, block) in self.blocks.iter().enumerate() {
                // the bits of every entry but the sign, or-ed: zero exactly when all are ±0
                let bits = row[block.clone()].iter().fold(0u64, |acc, v| acc | (v.to_bits() << 1));
                self.masks[b * words + i / 64] |= u64::from(bits != 0) << (i % 64);
            }
        }
    }
}

/// Rows per side of a tile of the Gram matrix (one f64 register of the widest lanes).
const TILE: usize = 8;

/// The tiles of one packed run, as `pulp` dispatches them.
struct Tiles<'a> {
    panel: &'a [f64],
    height: usize,
    users: &'a [usize],
    gram: &'a mut [f64],
    rows: usize,
}

impl pulp::WithSimd for Tiles<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let Tiles {
            panel,
            height,
            users,
            gram,
            rows,
        } = self;
        for top in (0..height).step_by(TILE) {
            for left in (0..=top).step_by(TILE) {
                let mut tile = [[0.0f64; TILE]; TILE];
                for column in panel.chunks_exact(height) {
                    // whole tiles: `height` is a multiple of TILE
                    let (Some(a), Some(b)) = (
                        column[top..].first_chunk::<TILE>(),
                        column[left..].first_chunk::<TILE>(),
                    ) else {
                        continue;
                    };
                    for (row, &a_i) in tile.iter_mut().zip(a) {
                        for (t, &b_j) in row.iter_mut().zip(b) {
                            *t += a_i * b_j;
                        }
                    }
                }
                for (ii, row) in tile.iter().enumerate() {
                    let Some(&i) = users.get(top + ii) else { break };
                    for (jj, &value) in row.iter().enumerate() {
                        match users.get(left + jj) {
                            Some(&j) if left + jj <= top + ii => gram[i * rows + j] += value,
                            _ => break,
                        }
                    }
                }
            }
        }
    }
}

/// Whether the Cholesky factorisation of the symmetric `n × n` matrix whose lower triangle is in
/// `a` completes with positive pivots (in place: `a`'s lower triangle becomes the factor).
fn cholesky_completes(a: &mut [f64], n: usize) -> bool {
    pulp::Arch::new().dispatch(Cholesky { a, n })
}

/// One [`cholesky_completes`] call, as `pulp` dispatches it.
struct Cholesky<'a> {
    a: &'a mut [f64],
    n: usize,
}

impl pulp::WithSimd for Cholesky<'_> {
    type Output = bool;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> bool {
        let Cholesky { a, n } = self;
        for j in 0..n {
            let (head, rest) = a.split_at_mut((j + 1) * n);
            let row_j = &mut head[j * n..];
            let pivot = row_j[j] - dot(&row_j[..j], &row_j[..j]);
            if !(pivot > 0.0 && pivot.is_finite()) {
                return false;
            }
            let pivot = pivot.sqrt();
            row_j[j] = pivot;
            let factor_j = &row_j[..j];
            for row_i in rest.chunks_exact_mut(n) {
                row_i[j] = (row_i[j] - dot(&row_i[..j], factor_j)) / pivot;
            }
        }
        true
    }
}

/// `Σ a_i b_i` in eight partial sums (a fixed order: the same bits with any instruction set).
#[inline(always)]
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut partial = [0.0; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = a8.remainder().iter().zip(b8.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in a8.zip(b8) {
        for l in 0..8 {
            partial[l] += x[l] * y[l];
        }
    }
    let [p0, p1, p2, p3, p4, p5, p6, p7] = partial;
    ((p0 + p4) + (p1 + p5)) + ((p2 + p6) + (p3 + p7)) + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `rows × width` matrix U·diag(σ)·Vᵀ with U, V from Householder reflections of a
    /// deterministic vector (orthogonal), so its singular values are exactly σ up to rounding.
    fn with_singular_values(sigma: &[f64], width: usize) -> Vec<f64> {
        let rows = sigma.len();
        let reflect = |len: usize, seed: f64| {
            let v: Vec<f64> = (0..len).map(|i| ((i as f64 + 1.0) * seed).sin()).collect();
            let norm2: f64 = v.iter().map(|x| x * x).sum();
            move |i: usize, j: usize| f64::from(u8::from(i == j)) - 2.0 * v[i] * v[j] / norm2
        };
        let (u, v) = (reflect(rows, 0.7), reflect(width, 1.3));
        let mut m = vec![0.0; rows * width];
        for i in 0..rows {
            for j in 0..width {
                m[i * width + j] = (0..rows).map(|r| u(i, r) * sigma[r] * v(j, r)).sum();
            }
        }
        m
    }

    fn certifies(sigma_min: f64) -> bool {
        let (rows, width) = (12, 40);
        let mut sigma = vec![1.0; rows];
        sigma[rows - 1] = sigma_min;
        let m = with_singular_values(&sigma, width);
        full_row_rank(
            &m,
            rows,
            width,
            std::slice::from_ref(&(0..width)),
            1e-9,
            &mut GramScratch::new(rows),
        )
    }

    #[test]
    fn a_well_conditioned_matrix_is_certified_and_a_deficient_one_is_not() {
        assert!(certifies(1e-2));
        assert!(certifies(1e-4));
        assert!(!certifies(1e-7));
        assert!(!certifies(0.0));
    }

    #[test]
    fn the_block_gram_equals_the_dense_one() {
        let (rows, stride) = (7, 30);
        let mut m: Vec<f64> = (0..rows * stride)
            .map(|i| ((i * 37 % 101) as f64 - 50.0) / 17.0)
            .collect();
        // rows 2 and 5 are zero in the second block, as a row of an unchosen expert is
        for i in [2, 5] {
            m[i * stride + 10..i * stride + 25].fill(0.0);
        }
        let blocks = [0..10, 10..25, 27..30];
        let mut scratch = GramScratch::new(rows);
        let mut masks = Vec::new();
        nonzero_rows(&m, rows, stride, &blocks, &mut masks);
        assert_eq!(masks, [0b111_1111, 0b101_1011, 0b111_1111]);
        let dense = |m: &[f64], i: usize, j: usize| -> f64 {
            let columns = blocks.iter().flat_map(|b| b.clone());
            columns.map(|c| m[i * stride + c] * m[j * stride + c]).sum()
        };
        gram(&m, rows, stride, &blocks, &masks, &mut scratch);
        let found = scratch.gram.clone();
        // given rows: a row's entries outside its blocks are never read, whatever they hold
        let mut stale = m.clone();
        for i in [2, 5] {
            stale[i * stride + 10..i * stride + 25].fill(1e300);
        }
        gram(&stale, rows, stride, &blocks, &masks, &mut scratch);
        for i in 0..rows {
            for j in 0..=i {
                let expected = dense(&m, i, j);
                assert!((found[i * rows + j] - expected).abs() <= 1e-12 * expected.abs().max(1.0));
                assert_eq!(scratch.gram[i * rows + j], found[i * rows + j]);
            }
        }
    }

    #[test]
    fn more_rows_than_columns_or_a_zero_matrix_is_never_certified() {
        let m = vec![1.0; 6 * 4];
        assert!(!full_row_rank(
            &m,
            6,
            4,
            std::slice::from_ref(&(0..4)),
            1e-9,
            &mut GramScratch::new(6)
        ));
        let z = vec![0.0; 3 * 5];
        assert!(!full_row_rank(
            &z,
            3,
            5,
            std::slice::from_ref(&(0..5)),
            1e-9,
            &mut GramScratch::new(3)
        ));
    }

    #[test]
    fn cholesky_factors_a_known_matrix() {
        // [[4, 2], [2, 3]] = L Lᵀ with L = [[2, 0], [1, √2]]
        let mut a = vec![4.0, 0.0, 2.0, 3.0];
        assert!(cholesky_completes(&mut a, 2));
        assert_eq!((a[0], a[2]), (2.0, 1.0));
        assert!((a[3] - 2f64.sqrt()).abs() < 1e-15);
        let mut indefinite = vec![1.0, 0.0, 2.0, 1.0];
        assert!(!cholesky_completes(&mut indefinite, 2));
    }
}
