//! The cover kernel on arbitrary points (NaN, ±inf, ties, huge and tiny values), scales and
//! chunkings: it returns an error or nets equal to the sequential definition of definitions §3.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use moecover_core::cover::MultiNet;
use moecover_core::parallel::never;

fn chebyshev(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

fn check(u: &mut Unstructured) -> Result<()> {
    // up to 12: `within` decides groups of 8 coordinates and then the rest
    let dim = u.int_in_range(1usize..=12)?;
    let deltas: Vec<f64> = (0..u.int_in_range(1usize..=3)?)
        .map(|_| u.arbitrary())
        .collect::<Result<_>>()?;
    let rows = u.int_in_range(0usize..=400)?;
    let points: Vec<f64> = (0..rows * dim)
        .map(|_| {
            // half raw bit patterns (NaN, inf, subnormals), half small lattice values (exact ties)
            if u.arbitrary::<bool>()? {
                u.arbitrary::<f64>()
            } else {
                Ok(f64::from(u.int_in_range(-6i8..=6)?) * 0.5)
            }
        })
        .collect::<Result<_>>()?;
    let cut = u.int_in_range(0..=rows)? * dim;
    let threads = u.int_in_range(1usize..=2)?;

    let Ok(mut net) = MultiNet::<f64>::new(&deltas, dim, true) else {
        assert!(
            deltas.iter().any(|d| !(d.is_finite() && *d > 0.0)),
            "valid scales rejected: {deltas:?}"
        );
        return Ok(());
    };
    let first = net.add(&points[..cut], threads, &mut never());
    let second = first.and_then(|()| net.add(&points[cut..], threads, &mut never()));
    if second.is_err() {
        assert!(points.iter().any(|v| !v.is_finite()), "finite points rejected");
        return Ok(());
    }
    assert!(
        points.iter().all(|v| v.is_finite()),
        "a NaN or infinite point was accepted"
    );
    for (s, &delta) in deltas.iter().enumerate() {
        let mut expected: Vec<u64> = Vec::new();
        for (i, p) in points.chunks(dim).enumerate() {
            let centre = |c: u64| &points[c as usize * dim..(c as usize + 1) * dim];
            if !expected.iter().any(|&c| chebyshev(p, centre(c)) <= delta) {
                expected.push(i as u64);
            }
        }
        assert_eq!(net.centres(s), &expected[..], "delta {delta}");
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = check(&mut Unstructured::new(data));
});
