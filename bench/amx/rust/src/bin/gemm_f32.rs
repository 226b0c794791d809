// gemm f32, one thread, on the matmul shapes of a 128-wide model's training step at batch 16 (see
// bench/amx/gemm_amx.c); the best of five runs each.
use std::time::Instant;
fn main() {
    for &(m, k, n) in &[
        (12544usize, 128usize, 384usize),
        (12544, 128, 512),
        (12544, 512, 128),
        (12544, 128, 128),
    ] {
        let a = vec![0.5f32; m * k];
        let b = vec![0.25f32; k * n];
        let mut c = vec![0f32; m * n];
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    c.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.as_ptr(),
                    1,
                    k as isize,
                    b.as_ptr(),
                    1,
                    n as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "gemm f32 1 thread m={m} k={k} n={n}: {:.2} ms, {:.1} GFLOP/s",
            best * 1e3,
            2.0 * (m * k * n) as f64 / best / 1e9
        );
    }
}
