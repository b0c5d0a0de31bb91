//! Colex rank/unrank and subset enumeration on arbitrary experts, k, ranks and subsets: no panic,
//! no hang, ranks of valid subsets invert, everything else is an error.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use moecover_core::routing::{binomial, rank, subsets, unrank};

fn check(u: &mut Unstructured) -> Result<()> {
    let subset: Vec<u32> = u.arbitrary()?;
    let increasing = subset.windows(2).all(|w| w[0] < w[1]);
    match rank(&subset) {
        Ok(r) => {
            assert!(increasing);
            let mut back = vec![0u32; subset.len()];
            unrank(r, &mut back).expect("a rank that fits unranks");
            assert_eq!(back, subset);
        }
        // not increasing, or a rank past 2^64
        Err(_) => assert!(!increasing || subset.len() >= 2),
    }
    // any rank for any small k: a subset that ranks back to it, or an error
    let (r, k): (u64, u8) = (u.arbitrary()?, u.int_in_range(1..=8)?);
    let mut out = vec![0u32; usize::from(k)];
    if unrank(r, &mut out).is_ok() {
        assert!(out.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(rank(&out).ok(), Some(r));
    }
    let experts = u.int_in_range(0u32..=20)?; // C(20, 5) = 15 504 subsets at most: fast runs
    let k = u.int_in_range(0usize..=6)?;
    match subsets(experts, k) {
        Ok(all) => {
            assert!(k >= 1 && k as u32 <= experts);
            assert_eq!(all.len() as u64, binomial(u64::from(experts), k as u64) * k as u64);
            let probe = u.int_in_range(0..=all.len() / k - 1)?;
            assert_eq!(rank(&all[probe * k..(probe + 1) * k]).ok(), Some(probe as u64));
        }
        Err(_) => assert!(k == 0 || k as u32 > experts || binomial(u64::from(experts), k as u64) > u64::from(u32::MAX)),
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = check(&mut Unstructured::new(data));
});
