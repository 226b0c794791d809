//! The element-wise CPU kernels (attention's softmax steps, quick-GELU), written as plain loops that the compiler
//! vectorises. `multiversion` compiles each for AVX-512, AVX2+FMA and NEON beside the baseline and
//! picks the best the CPU has at run time (the release build targets plain x86-64, whose SSE2 would
//! leave most of the speed unused). The targets are listed because multiversion's `"simd"` shorthand
//! leaves AVX-512 out.
//!
//! Sums and maxima keep `LANES` independent accumulators: a single running sum is a serial chain the
//! compiler may not reorder, so it would stay scalar. Results are deterministic for a given CPU.

use multiversion::multiversion;

/// Independent accumulators in the reductions (one AVX-512 register of f32).
const LANES: usize = 16;

/// `row[i] += bias[i]`.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma", "aarch64+neon"))]
pub fn add(row: &mut [f32], bias: &[f32]) {
    for (x, b) in row.iter_mut().zip(bias) {
        *x += b;
    }
}

/// `row[i] *= factor`.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma", "aarch64+neon"))]
pub fn scale(row: &mut [f32], factor: f32) {
    for x in row {
        *x *= factor;
    }
}

/// The largest element (`-inf` for an empty row).
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma", "aarch64+neon"))]
pub fn max(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (m, &x) in lanes.iter_mut().zip(chunk) {
            *m = if x > *m { x } else { *m };
        }
    }
    let mut best = tail
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    for m in lanes {
        best = if m > best { m } else { best };
    }
    best
}

/// `row[i] = exp(row[i] - shift)`; returns the sum of the new values.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma", "aarch64+neon"))]
pub fn exp_sub(row: &mut [f32], shift: f32) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (s, x) in lanes.iter_mut().zip(chunk) {
            *x = exp(*x - shift);
            *s += *x;
        }
    }
    let mut sum = 0.0;
    for x in chunks.into_remainder() {
        *x = exp(*x - shift);
        sum += *x;
    }
    sum + lanes.iter().sum::<f32>()
}

/// `Σ a[i]·b[i]`.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma", "aarch64+neon"))]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (ca, cb) in a_chunks.zip(b_chunks) {
        for ((s, x), y) in lanes.iter_mut().zip(ca).zip(cb) {
            *s += x * y;
        }
    }
    tail + lanes.iter().sum::<f32>()
}

/// The softmax backward step: `grad[i] = prob[i] · (grad[i] − dot)`, where `grad` holds dO·vᵀ and
/// `dot` is dO·o for the same query.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma", "aarch64+neon"))]
pub fn softmax_grad(grad: &mut [f32], prob: &[f32], dot: f32) {
    for (g, p) in grad.iter_mut().zip(prob) {
        *g = p * (*g - dot);
    }
}

/// HF's quick-GELU, `out[i] = x[i]·σ(1.702·x[i])`.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma", "aarch64+neon"))]
pub fn quick_gelu(x: &[f32], out: &mut [f32]) {
    for (y, &x) in out.iter_mut().zip(x) {
        *y = x * sigmoid(QUICK_GELU * x);
    }
}

/// The chain rule through quick-GELU: `grad_x[i] = grad[i]·σ(a·x)·(1 + a·x·(1 − σ(a·x)))`, a = 1.702.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma", "aarch64+neon"))]
pub fn quick_gelu_backward(x: &[f32], grad: &[f32], grad_x: &mut [f32]) {
    for ((gx, &g), &x) in grad_x.iter_mut().zip(grad).zip(x) {
        let s = sigmoid(QUICK_GELU * x);
        *gx = g * s * (1.0 + QUICK_GELU * x * (1.0 - s));
    }
}

/// Quick-GELU's constant: x·σ(1.702x) approximates GELU.
const QUICK_GELU: f32 = 1.702;

/// 1 / (1 + e^-z); saturates cleanly (e^-z is clamped, never inf).
#[inline(always)]
fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + exp(-z))
}

/// e^x to a relative error below 5e-7 (tested), branch-free so that it vectorises: x = n·ln 2 + r with |r| ≤ ln 2 / 2, e^r from
/// Cephes' `expf` polynomial, 2^n built in the exponent bits. Underflows to exactly 0 below -87.3
/// (so e^-inf = 0); inputs here are never above 0 by much (scores minus their maximum).
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOWEST: f32 = -87.3;
    const HIGHEST: f32 = 88.0;
    // 1.5·2²³: adding and subtracting it rounds to the nearest integer without a rounding instruction.
    const ROUND: f32 = 12_582_912.0;
    let clamped = x.clamp(LOWEST, HIGHEST);
    let n = (clamped * std::f32::consts::LOG2_E + ROUND) - ROUND;
    // ln 2 in two parts (Cody–Waite), so n·ln 2 is exact enough for |n| ≤ 127.
    let r = clamped - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    let two_to_n = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x < LOWEST { 0.0 } else { e_r * two_to_n }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_close_to_std_over_the_range_softmax_uses() {
        let mut worst = 0.0f64;
        for i in 0..=200_000 {
            let x = -87.0 + 88.0 * i as f32 / 200_000.0;
            let want = (x as f64).exp();
            worst = worst.max(((exp(x) as f64) - want).abs() / want);
        }
        assert!(worst < 5e-7, "relative error {worst}");
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-100.0), 0.0);
    }

    #[test]
    fn quick_gelu_and_its_derivative_match_the_formula() {
        let x: Vec<f32> = (0..101).map(|i| (i as f32 - 50.0) * 0.37).collect();
        let mut y = vec![0.0; x.len()];
        quick_gelu(&x, &mut y);
        let mut g = vec![0.0; x.len()];
        quick_gelu_backward(&x, &vec![1.0; x.len()], &mut g);
        for ((&x, &y), &g) in x.iter().zip(&y).zip(&g) {
            let s = 1.0 / (1.0 + (-1.702 * x as f64).exp());
            let want = x as f64 * s;
            assert!(
                (y as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()),
                "{x}: {y} vs {want}"
            );
            let dwant = s + 1.702 * x as f64 * s * (1.0 - s);
            assert!(
                (g as f64 - dwant).abs() <= 1e-6 * (1.0 + dwant.abs()),
                "{x}: {g} vs {dwant}"
            );
        }
    }

    #[test]
    fn reductions_match_plain_loops() {
        let row: Vec<f32> = (0..37)
            .map(|i| ((i * 7919) % 23) as f32 * 0.25 - 3.0)
            .collect();
        assert_eq!(max(&row), row.iter().cloned().fold(f32::MIN, f32::max));
        let other: Vec<f32> = row.iter().map(|x| x * 0.5 + 1.0).collect();
        let want: f32 = row.iter().zip(&other).map(|(a, b)| a * b).sum();
        assert!((dot(&row, &other) - want).abs() < 1e-4);
        let mut e = row.clone();
        let sum = exp_sub(&mut e, 2.0);
        for (got, x) in e.iter().zip(&row) {
            assert!((got - (x - 2.0).exp()).abs() <= 1e-6 * (x - 2.0).exp());
        }
        assert!((sum - e.iter().sum::<f32>()).abs() < 1e-4);
    }
}
