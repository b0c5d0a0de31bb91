//! Full row rank of a Jacobian, certified from its Gram matrix (docs/definitions.md §6).
//!
//! Most Jacobians of a class on fewer inputs than it has parameters have full row rank, and for
//! them the rank needs no singular values: a Cholesky factorisation of the Gram matrix `J Jᵀ`,
//! shifted down by what rounding and the rank threshold allow, proves every singular value of `J`
//! above `rtol · σ_1`. The Gram matrix is cheap because a Jacobian is sparse by blocks: a row is
//! zero on every expert its input's tokens did not choose, so each block's contribution is taken
//! over the rows that use it only. Cheaper still, the columns every row uses (attention, router)
//! are tried alone first when there are at least as many of them as rows: `J Jᵀ ⪰ J_S J_Sᵀ` for any
//! set S of columns, so a certificate of `J_S` is one of `J`, and the experts' blocks are added only
//! when it fails. A Jacobian this test cannot certify goes to the caller's rank-revealing
//! factorisation; the test never certifies a rank-deficient one.
//!
//! The bound. For the Gram matrix of `width` of J's columns (S) let a = (width + 1)·rows·ε and
//! c = rows·(rows + 1)·ε. Each computed entry is a sum of at most `width` products, so
//! G̃ = J_S J_Sᵀ + E with ‖E‖₂ ≤ a·σ_1(J_S)² (|J_S||J_S|ᵀ ≤ ‖J_S‖_F² ≤ rows·σ_1(J_S)²).
//! μ = ‖G̃‖_F bounds λ_max(G̃) above, and B = 2·Σ J_ic² (computed over all of J's columns) bounds
//! σ_1(J)² above. A Cholesky factorisation of A = G̃ − s·I that completes in floating point proves
//! λ_min(A) ≥ −c·‖A‖₂ (Higham, *Accuracy and Stability*, Thm 10.3, with ‖|R̃ᵀ||R̃|‖₂ ≤
//! rows·‖R̃‖₂²). With s = 4(rtol²·B + (a + c)·μ) this gives σ_min(J)² ≥ σ_min(J_S)² ≥
//! s(1 − c) − (a + c + 2a²)·μ > rtol²·B ≥ rtol²·σ_1(J)² whenever a + c < 10⁻².

use std::ops::Range;

/// The shift's safety factor over the rounding terms (two would do; see the module's bound).
const SAFETY: f64 = 4.0;

/// Scratch for one thread: the Gram matrix and its shifted factor, each block's rows that are
/// nonzero in it, and the current run of blocks with its rows.
pub struct GramScratch {
    gram: Vec<f64>,
    factor: Vec<f64>,
    masks: Vec<u64>,
    users: Vec<usize>,
    run: Vec<Range<usize>>,
}

impl GramScratch {
    pub fn new(rows: usize) -> Self {
        GramScratch {
            gram: vec![0.0; rows * rows],
            masks: Vec::new(),
            factor: Vec::with_capacity(rows * rows),
            users: Vec::with_capacity(rows),
            run: Vec::new(),
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
    let words = rows.div_ceil(64);
    let mask = |b: usize| &masks[b * words..(b + 1) * words];
    // σ_1² ≤ ‖J‖_F², and the computed sum of squares is within a factor 1 + (width + 1)·ε of it
    let squares = 2.0 * sum_of_squares(matrix, rows, stride, blocks, masks);
    if !(squares > 0.0 && squares.is_finite()) {
        return false;
    }
    let all_rows: Vec<u64> = (0..words).map(|w| u64::MAX >> (64 - (rows - 64 * w).min(64))).collect();
    let every_row = |b: usize| mask(b) == all_rows.as_slice();
    let (shared, rest): (Vec<usize>, Vec<usize>) = (0..blocks.len()).partition(|&b| every_row(b));
    let shared_width: usize = shared.iter().map(|&b| blocks[b].len()).sum();
    scratch.gram.resize(rows * rows, 0.0);
    scratch.gram.fill(0.0);
    // the columns every row uses first: J Jᵀ ⪰ J_S J_Sᵀ, so their certificate is J's, at a
    // fraction of the cost (the experts' blocks are most of the Gram's work)
    gram(matrix, rows, stride, blocks, &shared, masks, scratch);
    if shared_width >= rows && !rest.is_empty() && certified(rows, shared_width, rtol, squares, scratch) {
        return true;
    }
    gram(matrix, rows, stride, blocks, &rest, masks, scratch);
    certified(rows, width, rtol, squares, scratch)
}

/// Whether row `i` is set in a block's `mask` (bit `i%64` of word `i/64`).
#[inline(always)]
fn has_row(mask: &[u64], i: usize) -> bool {
    mask[i / 64] >> (i % 64) & 1 == 1
}

/// Whether `scratch.gram`, the computed Gram matrix of `width` columns of J, proves every singular
/// value of J above `rtol · σ_1`, given `bound` ≥ σ_1(J)² (the module's bound). The Gram is kept;
/// its shifted copy is factorised in `scratch.factor`.
fn certified(rows: usize, width: usize, rtol: f64, bound: f64, scratch: &mut GramScratch) -> bool {
    let eps = f64::EPSILON;
    let (a, c) = (
        (width as f64 + 1.0) * rows as f64 * eps,
        rows as f64 * (rows as f64 + 1.0) * eps,
    );
    if a + c >= 1e-2 {
        return false;
    }
    let GramScratch { gram, factor, .. } = scratch;
    // ‖G̃‖_F from the lower triangle (the upper is zero)
    let squares: f64 = (0..rows)
        .map(|i| {
            let row = &gram[i * rows..i * rows + i + 1];
            2.0 * row.iter().map(|g| g * g).sum::<f64>() - row[i] * row[i]
        })
        .sum();
    let mu = squares.sqrt();
    if !(mu > 0.0 && mu.is_finite()) {
        return false;
    }
    let shift = SAFETY * (rtol * rtol * bound + (a + c) * mu);
    factor.clear();
    factor.extend_from_slice(gram);
    for i in 0..rows {
        factor[i * rows + i] -= shift;
    }
    cholesky_completes(factor, rows)
}

/// `Σ J_ic²` over each block's rows (an upper bound on σ_1² once rounding is allowed for), a row
/// at a time over the longest runs of adjacent blocks it is nonzero in.
fn sum_of_squares(matrix: &[f64], rows: usize, stride: usize, blocks: &[Range<usize>], masks: &[u64]) -> f64 {
    pulp::Arch::new().dispatch(SumOfSquares {
        matrix,
        rows,
        stride,
        blocks,
        masks,
    })
}

/// One [`sum_of_squares`] call, as `pulp` dispatches it.
struct SumOfSquares<'a> {
    matrix: &'a [f64],
    rows: usize,
    stride: usize,
    blocks: &'a [Range<usize>],
    masks: &'a [u64],
}

impl pulp::WithSimd for SumOfSquares<'_> {
    type Output = f64;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> f64 {
        let SumOfSquares {
            matrix,
            rows,
            stride,
            blocks,
            masks,
        } = self;
        let words = rows.div_ceil(64);
        let mut total = 0.0;
        for i in 0..rows {
            let row = &matrix[i * stride..];
            let mut segment: Option<Range<usize>> = None;
            for (b, block) in blocks.iter().enumerate() {
                if !has_row(&masks[b * words..], i) {
                    continue;
                }
                match &mut segment {
                    Some(s) if s.end == block.start => s.end = block.end,
                    _ => {
                        if let Some(s) = segment.replace(block.clone()) {
                            total += dot(&row[s.clone()], &row[s]);
                        }
                    }
                }
            }
            if let Some(s) = segment {
                total += dot(&row[s.clone()], &row[s]);
            }
        }
        total
    }
}

/// The lower triangle of `matrix · matrixᵀ` over the blocks `which` of `blocks`, added to
/// `scratch.gram` (`rows × rows`, row-major; the upper triangle stays zero). Consecutive blocks
/// with the same nonzero rows form a run, and a run's entries are dot products of its users' rows, read where they lie: in
/// [`TILE`] × [`TILE`] tiles of row pairs, each pair's products summed in the lanes of the CPU's
/// widest instructions with fused multiply-adds. Runs are added in order, so the sum is the same
/// bits for any thread count; the lane count orders each sum, so another instruction set may
/// differ in the last bits (the bound above holds for any order).
fn gram(
    matrix: &[f64],
    rows: usize,
    stride: usize,
    blocks: &[Range<usize>],
    which: &[usize],
    masks: &[u64],
    scratch: &mut GramScratch,
) {
    let simd = pulp::Arch::new();
    let GramScratch { gram, users, run, .. } = scratch;
    let words = rows.div_ceil(64);
    let mask = |b: usize| &masks[b * words..(b + 1) * words];
    let mut first = 0;
    while first < which.len() {
        let mut last = first + 1;
        while last < which.len() && mask(which[last]) == mask(which[first]) {
            last += 1;
        }
        users.clear();
        users.extend((0..rows).filter(|&i| has_row(mask(which[first]), i)));
        run.clear();
        run.extend(which[first..last].iter().map(|&b| blocks[b].clone()));
        first = last;
        if users.is_empty() {
            continue;
        }
        simd.dispatch(Tiles {
            matrix,
            stride,
            run,
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

/// Rows per side of a tile of the Gram matrix: 2·TILE row loads feed TILE² fused multiply-adds,
/// and the TILE² sums stay in registers (16 of AVX-512's 32).
const TILE: usize = 4;

/// The tiles of one run, as `pulp` dispatches them.
struct Tiles<'a> {
    matrix: &'a [f64],
    stride: usize,
    run: &'a [Range<usize>],
    users: &'a [usize],
    gram: &'a mut [f64],
    rows: usize,
}

impl pulp::WithSimd for Tiles<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        let Tiles {
            matrix,
            stride,
            run,
            users,
            gram,
            rows,
        } = self;
        // a tile past the last user repeats it: its sums are computed and not written
        let user = |slot: usize| users[slot.min(users.len() - 1)];
        for top in (0..users.len()).step_by(TILE) {
            let tops: [usize; TILE] = std::array::from_fn(|ii| user(top + ii) * stride);
            for left in (0..=top).step_by(TILE) {
                let lefts: [usize; TILE] = std::array::from_fn(|jj| user(left + jj) * stride);
                let mut sums = [[simd.splat_f64s(0.0); TILE]; TILE];
                for block in run {
                    let a: [(&[S::f64s], &[f64]); TILE] = std::array::from_fn(|ii| {
                        S::as_simd_f64s(&matrix[tops[ii] + block.start..tops[ii] + block.end])
                    });
                    let b: [(&[S::f64s], &[f64]); TILE] = std::array::from_fn(|jj| {
                        S::as_simd_f64s(&matrix[lefts[jj] + block.start..lefts[jj] + block.end])
                    });
                    for v in 0..a[0].0.len() {
                        let bv: [S::f64s; TILE] = std::array::from_fn(|jj| b[jj].0[v]);
                        for (row, a_i) in sums.iter_mut().zip(&a) {
                            let av = a_i.0[v];
                            for (sum, &bv_j) in row.iter_mut().zip(&bv) {
                                *sum = simd.mul_add_f64s(av, bv_j, *sum);
                            }
                        }
                    }
                    if !a[0].1.is_empty() {
                        // the block's last columns, padded with zeros to one vector
                        let bv: [S::f64s; TILE] = std::array::from_fn(|jj| simd.partial_load_f64s(b[jj].1));
                        for (row, a_i) in sums.iter_mut().zip(&a) {
                            let av = simd.partial_load_f64s(a_i.1);
                            for (sum, &bv_j) in row.iter_mut().zip(&bv) {
                                *sum = simd.mul_add_f64s(av, bv_j, *sum);
                            }
                        }
                    }
                }
                for (ii, row) in sums.iter().enumerate() {
                    let Some(&i) = users.get(top + ii) else { break };
                    for (jj, &sum) in row.iter().enumerate() {
                        match users.get(left + jj) {
                            Some(&j) if left + jj <= top + ii => gram[i * rows + j] += simd.reduce_sum_f64s(sum),
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
        let all = [0, 1, 2];
        gram(&m, rows, stride, &blocks, &all, &masks, &mut scratch);
        let found = scratch.gram.clone();
        // given rows: a row's entries outside its blocks are never read, whatever they hold
        let mut stale = m.clone();
        for i in [2, 5] {
            stale[i * stride + 10..i * stride + 25].fill(1e300);
        }
        scratch.gram.fill(0.0);
        gram(&stale, rows, stride, &blocks, &all, &masks, &mut scratch);
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

    /// `rows × (shared + rows)`: `shared` columns every row uses, from `shared_row(i)`, then one
    /// column per row holding `own(i)` in row i alone, each its own block.
    fn shared_and_own(
        rows: usize,
        shared: usize,
        shared_row: impl Fn(usize, usize) -> f64,
        own: impl Fn(usize) -> f64,
    ) -> bool {
        let stride = shared + rows;
        let mut m = vec![0.0; rows * stride];
        for i in 0..rows {
            for c in 0..shared {
                m[i * stride + c] = shared_row(i, c);
            }
            m[i * stride + shared + i] = own(i);
        }
        let blocks: Vec<Range<usize>> = std::iter::once(0..shared)
            .chain((0..rows).map(|i| shared + i..shared + i + 1))
            .collect();
        full_row_rank(&m, rows, stride, &blocks, 1e-9, &mut GramScratch::new(rows))
    }

    #[test]
    fn the_columns_every_row_uses_are_certified_against_the_whole_matrix() {
        // well conditioned on their own, but one entry elsewhere 10¹² times larger makes
        // σ_min/σ_1 ≈ 10⁻¹², below the threshold
        let shared = |i: usize, c: usize| if i == c { 1.0 } else { 0.1 };
        assert!(shared_and_own(6, 8, shared, |_| 1.0));
        assert!(!shared_and_own(6, 8, shared, |i| if i == 0 { 1e12 } else { 0.0 }));
    }

    #[test]
    fn deficient_shared_columns_leave_the_certificate_to_the_whole_matrix() {
        // the shared columns have rank 1; with each row's own column J Jᵀ = 8·𝟙𝟙ᵀ + I
        assert!(shared_and_own(6, 8, |_, _| 1.0, |_| 1.0));
        // rows 4 and 5 equal: rank 5
        assert!(!shared_and_own(6, 8, |_, _| 1.0, |i| if i >= 4 { 0.0 } else { 1.0 }));
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
