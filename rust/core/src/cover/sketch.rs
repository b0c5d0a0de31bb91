//! The exact candidate tests of the nets: `within` (the ℓ∞ comparison of two rows), and the f32
//! sketch test that rejects most candidates before their row is read, with the proof that it never
//! rejects a centre within δ (`Real::sketch_bound`) and the property test of that proof.

use rayon::prelude::*;

/// The input precisions the engine works in.
pub trait Real: Copy + PartialOrd + Send + Sync + std::fmt::Debug + 'static {
    fn to_f64(self) -> f64;
    fn from_f64(value: f64) -> Self;
    fn abs_diff(self, other: Self) -> Self;
    fn is_finite(self) -> bool;
    /// A coordinate in a sketch (see `SketchTest`).
    fn to_sketch(self) -> f32;
    /// The bound of the sketch test at scale `delta`, as `(base, slope)`: for a point's coordinate
    /// `p` (in f32) the test is `|fl32(p − s)| <= τ = fl32(base + slope |p|)`, which must hold
    /// whenever the point and a centre whose sketch holds `s` are within `delta` in the input's
    /// precision on this coordinate (`SketchTest::lane` handles |p| beyond `SKETCH_LIMIT`).
    fn sketch_bound(delta: Self) -> (f32, f32);
}

/// Beyond this, a sketch coordinate (or the bound) makes the sketch test pass: a centre within δ
/// of such a point may overflow f32.
const SKETCH_LIMIT: f32 = 1e37;

impl Real for f32 {
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    fn from_f64(value: f64) -> Self {
        value as f32
    }
    #[inline(always)] // into `first_within`'s copy for each instruction set
    fn abs_diff(self, other: Self) -> Self {
        (self - other).abs()
    }
    fn is_finite(self) -> bool {
        f32::is_finite(self)
    }
    fn to_sketch(self) -> f32 {
        self
    }
    /// The test itself: `|fl32(x − c)| <= δ` is the definition.
    fn sketch_bound(delta: Self) -> (f32, f32) {
        (delta, 0.0)
    }
}

impl Real for f64 {
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(value: f64) -> Self {
        value
    }
    #[inline(always)] // into `first_within`'s copy for each instruction set
    fn abs_diff(self, other: Self) -> Self {
        (self - other).abs()
    }
    fn is_finite(self) -> bool {
        f64::is_finite(self)
    }
    fn to_sketch(self) -> f32 {
        self as f32 // to nearest; beyond f32::MAX, infinite
    }
    /// If `|fl64(x − c)| <= δ` then `|x − c| <= δ' = δ(1 + 2^-52)`, so `|c| <= |x| + δ'`. Rounding
    /// x and c to f32 (p and s) moves each by at most `2^-24` of itself (plus `2^-150` below the
    /// normal range), and the f32 difference by `2^-24` of itself, so
    /// `|fl32(p − s)| <= R = (δ' + 2^-24 (2|x| + δ') + 2^-149)(1 + 2^-24)`. With base
    /// `B >= δ(1 + 2^-20) + 2^-124` (rounded to f32, so within `2^-24` of that) and slope `2^-21`
    /// (exact), `τ = fl32(B + 2^-21 |p|)` exceeds R: `|x| <= (|p| + 2^-150)(1 + 2^-23)`, so the
    /// slope term covers four times the `|x|` term of R, B covers δ' with room for every relative
    /// rounding, and `2^-124` every absolute one. A base beyond `SKETCH_LIMIT` is infinite: every
    /// test passes.
    fn sketch_bound(delta: Self) -> (f32, f32) {
        let base = (delta * (1.0 + 2f64.powi(-20)) + 2f64.powi(-124)) as f32;
        let base = if base <= SKETCH_LIMIT { base } else { f32::INFINITY };
        (base, 2f32.powi(-21))
    }
}

/// `max_j |a_j − b_j| <= delta`, deciding eight coordinates at a time: within a group of eight
/// the test has no branch, so the compiler turns it into packed compares; between groups it stops
/// at the first that exceeds δ. A NaN or infinite value is never within δ of anything (`<=` is
/// false on a NaN), so a point holding one is never covered: the scan checks for finiteness only
/// the points no centre covers, not every point.
#[inline(always)] // into `first_within`'s copy for each instruction set
pub fn within<T: Real>(a: &[T], b: &[T], delta: T) -> bool {
    const LANES: usize = 8;
    let (mut groups_a, mut groups_b) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    for (ga, gb) in (&mut groups_a).zip(&mut groups_b) {
        let mut near = true;
        for lane in 0..LANES {
            near &= ga[lane].abs_diff(gb[lane]) <= delta;
        }
        if !near {
            return false;
        }
    }
    let (rest_a, rest_b) = (groups_a.remainder(), groups_b.remainder());
    rest_a.iter().zip(rest_b).all(|(&x, &y)| x.abs_diff(y) <= delta)
}

/// Coordinates per centre in its sketch (see `axes::Axes`).
pub(super) const SKETCH: usize = 8;

/// A point's side of the sketch test: per sketch coordinate, its value and bound in f32 (see
/// `Real::sketch_bound`). In f32 the eight coordinates of a sketch are two packed registers, and
/// two sketches share a cache line.
pub(super) struct SketchTest {
    point: [f32; SKETCH],
    bound: [f32; SKETCH],
}

impl SketchTest {
    pub(super) fn new<T: Real>(point: &[T], axes: &[usize; SKETCH], bound: (f32, f32)) -> Self {
        let tests = axes.map(|axis| Self::lane(point[axis].to_sketch(), bound));
        SketchTest {
            point: tests.map(|(p, _)| p),
            bound: tests.map(|(_, b)| b),
        }
    }

    /// A point's sketch coordinate `p` and its bound τ (see `Real::sketch_bound`). Where `|p|` is
    /// beyond `SKETCH_LIMIT` (or NaN) the test is made to pass: p = 0, τ = ∞ (s is never NaN, and
    /// `within` rejects a NaN point).
    #[inline]
    fn lane(p: f32, (base, slope): (f32, f32)) -> (f32, f32) {
        if p.abs() <= SKETCH_LIMIT {
            (p, base + slope * p.abs())
        } else {
            (0.0, f32::INFINITY)
        }
    }

    /// Whether a centre with this sketch may be within δ: false only if it is not. No branch:
    /// eight packed compares.
    #[inline(always)] // into `first_within`'s copy for each instruction set
    pub(super) fn passes(&self, sketch: &[f32; SKETCH]) -> bool {
        let mut near = true;
        for ((&p, &s), &bound) in self.point.iter().zip(sketch).zip(&self.bound) {
            near &= (p - s).abs() <= bound;
        }
        near
    }
}

/// Whether every value is finite, without an early exit, which the compiler vectorises.
pub(super) fn all_finite<T: Real>(values: &[T]) -> bool {
    values.iter().fold(true, |finite, v| finite & v.is_finite())
}

/// The position of the first NaN or infinite value, pieces of 2^14 values checked in parallel (in
/// the calling pool).
pub(super) fn first_non_finite<T: Real>(values: &[T]) -> Option<usize> {
    const BLOCK: usize = 1 << 14;
    values
        .par_chunks(BLOCK)
        .position_first(|block| !all_finite(block))
        .and_then(|b| {
            let start = b * BLOCK;
            values[start..].iter().position(|v| !v.is_finite()).map(|i| start + i)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// is below 2^-126, its largest values near 2^128).
    fn spread(exponents: std::ops::Range<i32>) -> impl Strategy<Value = f64> {
        (1.0f64..2.0, exponents, any::<bool>()).prop_map(|(m, e, neg)| if neg { -m } else { m } * 2f64.powi(e))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 20_000, max_global_rejects: 20_000, ..ProptestConfig::default() })]

        /// The f32 sketch of a f64 net is only a filter: it must pass every centre within δ, at
        /// any magnitude of the coordinates and of δ, for ties at exactly δ, across f32's
        /// subnormal range and its overflow.
        #[test]
        fn the_f32_sketch_never_rejects_a_centre_within_delta(
            x in spread(-170..140),
            delta in spread(-170..140),
            step in prop_oneof![Just(1.0), Just(-1.0), -1.0f64..=1.0],
        ) {
            let delta = delta.abs();
            let c = x + step * delta;
            prop_assume!(c.is_finite() && (x - c).abs() <= delta);
            let (p, bound) = SketchTest::lane(x.to_sketch(), f64::sketch_bound(delta));
            prop_assert!((p - c.to_sketch()).abs() <= bound, "x {x:e} c {c:e} δ {delta:e}: p {p:e} τ {bound:e}");
            // f32 input: the test is the definition itself, up to SKETCH_LIMIT (beyond, it passes).
            let (x32, c32, delta32) = (x as f32, c as f32, delta as f32);
            if x32.is_finite() && c32.is_finite() {
                let (p, bound) = SketchTest::lane(x32.to_sketch(), f32::sketch_bound(delta32));
                let passes = (p - c32.to_sketch()).abs() <= bound;
                let within = (x32 - c32).abs() <= delta32;
                let expected = if x32.abs() <= SKETCH_LIMIT { within } else { true };
                prop_assert_eq!(passes, expected);
            }
        }
    }

    #[test]
    fn a_non_finite_coordinate_passes_the_sketch_and_fails_the_full_test() {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let (p, bound) = SketchTest::lane(bad.to_sketch(), f64::sketch_bound(1.0));
            assert!((p - 0.5f64.to_sketch()).abs() <= bound);
            assert!(!within(&[bad; 9], &[0.5; 9], 1.0) && !within(&[bad], &[0.5], 1.0));
        }
    }
}
