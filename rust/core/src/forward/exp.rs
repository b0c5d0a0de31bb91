//! `e^x` written with nothing but IEEE arithmetic and bit operations, so that a loop of it over
//! SIMD lanes vectorises (libm's `exp` is a call per value: it was a quarter of a forward pass).
//!
//! Method: `x = n ln 2 + r` with `n` the nearest integer to `x / ln 2` and `|r| ≤ ln 2 / 2`
//! (Cody–Waite: `ln 2` in two parts, the first with 21 trailing zero bits so that `n · LN2_HI` is
//! exact), `e^r` by its Taylor polynomial of degree 13 (truncation below 6e-18 relative, a twentieth
//! of an ulp), and `e^x = e^r · 2^h · 2^(n−h)` with `h ≈ n/2`, each power a normal number built from
//! its exponent bits, so that results in the subnormal range are rounded once.
//!
//! Error: within 2 ulp of the correctly rounded `e^x` for every finite x (the test measures at most
//! 1 ulp against `f64::exp` on 10^6 points over the whole range); `e^x` overflows to +∞ above
//! 709.78 and is +0 below −745.13 as it should; `e^{+∞} = +∞`, `e^{−∞} = +0`, and NaN stays NaN.
//! The one-input and lane passes both use it, so their bits still agree.

/// `e^x`; see the module documentation for its error.
#[inline(always)]
pub fn exp(x: f64) -> f64 {
    const LOG2_E: f64 = std::f64::consts::LOG2_E;
    // ln 2 in two parts: 0.693147180369123816490 (21 trailing zero bits) + 1.90821492927058770002e-10
    const LN2_HI: f64 = f64::from_bits(0x3FE6_2E42_FEE0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3DEA_39EF_3579_3C76);
    // Adding 1.5 · 2^52 rounds a number of magnitude < 2^51 to the nearest integer, which then
    // sits in the low bits of the sum.
    const ROUND: f64 = 6_755_399_441_055_744.0;
    // Beyond these e^x is +∞ or +0 anyway; the clamp keeps the exponents in range (NaN passes).
    let t = x.clamp(-746.0, 710.0);
    let n = (t * LOG2_E + ROUND) - ROUND;
    let r = (t - n * LN2_HI) - n * LN2_LO;
    // Taylor coefficients 1/i!, Horner from the highest
    let mut p = 1.0 / 6_227_020_800.0; // 1/13!
    for c in [
        1.0 / 479_001_600.0,
        1.0 / 39_916_800.0,
        1.0 / 3_628_800.0,
        1.0 / 362_880.0,
        1.0 / 40_320.0,
        1.0 / 5_040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = p * r + c;
    }
    // n ∈ [−1077, 1025]: h and n − h both lie in [−539, 513], inside the normal exponents
    let h = (n * 0.5 + ROUND) - ROUND;
    p * power_of_two(h) * power_of_two(n - h)
}

/// `2^m` for an integer-valued `m` in [−1022, 1023], from its exponent bits.
#[inline(always)]
fn power_of_two(m: f64) -> f64 {
    // the integer m in the low bits of m + ROUND (two's complement), shifted into the exponent
    let low = (m + 6_755_399_441_055_744.0).to_bits();
    f64::from_bits(low.wrapping_add(1023).wrapping_sub(0x4338_0000_0000_0000) << 52)
}

#[cfg(test)]
mod tests {
    use super::exp;

    /// Distance in units in the last place between two finite positive doubles.
    fn ulps(a: f64, b: f64) -> u64 {
        a.to_bits().abs_diff(b.to_bits())
    }

    #[test]
    fn within_one_ulp_of_libm_over_the_whole_range() {
        let mut worst = (0, 0.0);
        let n = 1_000_000;
        for i in 0..=n {
            // an irregular grid over [−746, 710], and a dense one over the forward pass's [−40, 0]
            for x in [
                -746.0 + 1456.0 * (i as f64 / n as f64).powf(1.1),
                -40.0 * i as f64 / n as f64,
            ] {
                let u = ulps(exp(x), x.exp());
                if u > worst.0 {
                    worst = (u, x);
                }
            }
        }
        assert!(worst.0 <= 1, "{} ulp at x = {}", worst.0, worst.1);
    }

    #[test]
    fn the_edges_of_the_range() {
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-0.0), 1.0);
        assert_eq!(exp(f64::INFINITY), f64::INFINITY);
        assert_eq!(exp(f64::NEG_INFINITY).to_bits(), 0.0f64.to_bits());
        assert!(exp(f64::NAN).is_nan());
        assert_eq!(exp(709.78), 709.78f64.exp());
        assert_eq!(exp(709.79), f64::INFINITY);
        assert_eq!(exp(1e300), f64::INFINITY);
        assert_eq!(exp(-745.2), 0.0);
        assert_eq!(exp(-1e300), 0.0);
        // subnormal results, rounded once
        for x in [-708.5, -720.0, -740.0, -744.5, -745.1] {
            assert!(ulps(exp(x), x.exp()) <= 1, "{x}: {} against {}", exp(x), x.exp());
        }
        assert!(ulps(exp(1.0), std::f64::consts::E) <= 1);
    }

    /// `exp` over a slice, as the passes run it: in a loop the compiler vectorises.
    struct OverSlice<'a>(&'a mut [f64]);

    impl pulp::WithSimd for OverSlice<'_> {
        type Output = ();

        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _: S) {
            for v in self.0.iter_mut() {
                *v = exp(*v);
            }
        }
    }

    #[test]
    fn vectorised_for_any_instruction_set_it_gives_the_scalar_bits() {
        let mut xs: Vec<f64> = (0..4096)
            .map(|i| -760.0 + 1480.0 * ((i * 7919) % 4096) as f64 / 4096.0)
            .collect();
        xs.extend([
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.0,
            -0.0,
            709.78,
            709.79,
            -745.2,
            1e300,
            -1e300,
        ]);
        let scalar: Vec<u64> = xs.iter().map(|&x| exp(x).to_bits()).collect();
        let mut sets = vec![pulp::Arch::Scalar, pulp::Arch::new()];
        #[cfg(target_arch = "x86_64")]
        sets.extend(pulp::x86::V3::try_new().map(pulp::Arch::V3));
        for simd in sets {
            let mut v = xs.clone();
            simd.dispatch(OverSlice(&mut v));
            let bits: Vec<u64> = v.iter().map(|v| v.to_bits()).collect();
            assert_eq!(bits, scalar, "{simd:?}");
        }
    }
}
