use moecover_core::cover::within;
use std::time::Instant;
fn main() {
    let m = 1_000_000;
    let dim = 64;
    let mut s = 12345u64;
    let pts: Vec<f64> = (0..m * dim)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect();
    let c = vec![0.0f64; dim];
    for _ in 0..5 {
        let t = Instant::now();
        let n = pts.chunks_exact(dim).filter(|p| within(p, &c, 1000.0)).count();
        let a = t.elapsed();
        let t = Instant::now();
        let mut acc = 0.0f64;
        for v in &pts {
            acc += *v;
        }
        let b = t.elapsed();
        let t = Instant::now();
        let n2 = pts.chunks_exact(dim).filter(|p| within(p, &c, 0.999)).count();
        let e = t.elapsed();
        println!("within {:?} {n} sum {:?} {acc} within-early {:?} {n2}", a, b, e);
    }
}
