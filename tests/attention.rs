//! The CPU flash-attention kernel against Burn's unfused attention (the reference), forward and
//! gradients, causal and not (the BERT objective), on odd lengths, one and many heads, cached
//! (shorter) queries and HF's padding mask; and its gradients against finite differences.

use burn::backend::Autodiff;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Tensor, TensorData};
use igpt::model::attention::flash::{self, Strided};
use igpt::model::attention::{
    self, AttentionKernel, Kernel, Qkv, attend, attention_weights, unfused_or_backend,
};

type B = burn::backend::Flex;
type A = Autodiff<B>;

/// Sizes to try: (batch, heads, queries, keys, head_dim). Lengths cross the 64-wide tiles at odd
/// places; `queries < keys` is a cached step or a completion's prefix (up to 4 queries, the CubeCL
/// forward splits the keys across units instead, fewer units than lanes at head dimension 64). Head
/// dimension 128 is left out: on lavapipe its tests had not finished after 15 minutes (compiling
/// kernels whose rows of 128 are unrolled into registers, it seemed), where the rest take about 4.
const SHAPES: &[(usize, usize, usize, usize, usize)] = &[
    (1, 1, 1, 1, 4),
    (2, 1, 37, 37, 8),
    (1, 4, 130, 130, 16),
    (3, 3, 65, 65, 5),
    (2, 2, 1, 77, 8),
    (1, 2, 70, 200, 32),
    (2, 2, 3, 150, 64),
];

/// Values spread over about [-3, 3], the same for the same seed whatever else runs (the backend's
/// generator is shared by tests running in parallel).
fn random<const D: usize>(shape: [usize; D], seed: u64) -> TensorData {
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n as u64)
        .map(|i| {
            // SplitMix64: a well-mixed 64-bit hash of (seed, i).
            let mut z = (seed << 32 ^ i).wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 24) as f32 * 6.0 - 3.0
        })
        .collect();
    TensorData::new(values, shape)
}

/// HF's padding bias (`f32::MIN` on padded keys) for `[batch, 1, 1, keys]`: every sequence pads a
/// different run of keys, and one pads its first key only.
fn padding(batch: usize, keys: usize) -> TensorData {
    let values: Vec<f32> = (0..batch * keys)
        .map(|i| {
            let (b, key) = (i / keys, i % keys);
            let padded = if b == 0 { key == 0 } else { key % (b + 2) == 1 };
            if padded { f32::MIN } else { 0.0 }
        })
        .collect();
    TensorData::new(values, [batch, 1, 1, keys])
}

fn floats<BB: Backend>(t: Tensor<BB, 4>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

/// max |a − b| / max |b|: relative to the tensor's scale, as elements near zero have no relative error.
fn relative_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-30);
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

struct Case {
    q: TensorData,
    k: TensorData,
    v: TensorData,
    bias: Option<TensorData>,
    /// Weights of the loss Σ w ∘ output, so every output element has its own upstream gradient.
    w: TensorData,
    scale: f64,
    causal: bool,
}

/// Every combination of padding and causal mask.
const MASKS: [(bool, bool); 4] = [(false, true), (true, true), (false, false), (true, false)];

fn case(
    shape: (usize, usize, usize, usize, usize),
    (padded, causal): (bool, bool),
    seed: u64,
) -> Case {
    let (b, h, tq, tk, hd) = shape;
    Case {
        q: random([b, h, tq, hd], seed),
        k: random([b, h, tk, hd], seed + 1),
        v: random([b, h, tk, hd], seed + 2),
        bias: padded.then(|| padding(b, tk)),
        w: random([b, h, tq, hd], seed + 3),
        scale: 1.0 / (hd as f64).sqrt(),
        causal,
    }
}

/// Output and the gradients of Σ w ∘ output for q, k, v, computed by `attend` under autodiff.
fn output_and_grads<AA: AutodiffBackend>(c: &Case, attend: AttentionKernel<AA>) -> [Vec<f32>; 4] {
    let device = Default::default();
    let input = |d: &TensorData| Tensor::<AA, 4>::from_data(d.clone(), &device).require_grad();
    let (q, k, v) = (input(&c.q), input(&c.k), input(&c.v));
    let bias = c
        .bias
        .clone()
        .map(|d| Tensor::<AA, 4>::from_data(d, &device));
    let out = attend(Qkv {
        q: q.clone(),
        k: k.clone(),
        v: v.clone(),
        key_bias: bias,
        scale: c.scale,
        causal: c.causal,
    });
    let loss = (out.clone() * Tensor::from_data(c.w.clone(), &device)).sum();
    let grads = loss.backward();
    let grad = |t: &Tensor<AA, 4>| floats(t.grad(&grads).unwrap());
    [floats(out.inner()), grad(&q), grad(&k), grad(&v)]
}

#[test]
fn flex_runs_the_flash_kernel_for_training_and_inference() {
    assert_eq!(attention::kernel::<A>(DType::F32), Kernel::Flash);
    assert_eq!(attention::kernel::<B>(DType::F32), Kernel::Flash);
    // Mixed precision keeps Burn's kernels (the flash kernel is f32 only).
    assert_eq!(attention::kernel::<A>(DType::BF16), Kernel::Burn);
}

/// Output and gradients from `attend` on `AA` against the unfused path on the same backend, over
/// every shape and mask, within `tolerance` relative to each tensor's largest element.
fn training_matches_unfused<AA: AutodiffBackend>(tolerance: f32) {
    for (i, &shape) in SHAPES.iter().enumerate() {
        for masks in MASKS {
            let c = case(shape, masks, 10 * i as u64);
            let fused = output_and_grads(&c, attend::<AA>);
            let reference = output_and_grads(&c, unfused_or_backend::<AA>);
            for (name, (got, want)) in ["output", "dq", "dk", "dv"]
                .iter()
                .zip(fused.iter().zip(&reference))
            {
                let diff = relative_diff(got, want);
                assert!(
                    diff <= tolerance,
                    "{name} of {shape:?} (padded, causal: {masks:?}) is {diff} off the unfused path"
                );
            }
        }
    }
}

/// The forward alone (inference) from `attend` on `BB` against the backend's own attention.
fn inference_matches_unfused<BB: Backend>(tolerance: f32) {
    let device = Default::default();
    for (i, &shape) in SHAPES.iter().enumerate() {
        for masks in MASKS {
            let c = case(shape, masks, 100 + i as u64);
            let t = |d: &TensorData| Tensor::<BB, 4>::from_data(d.clone(), &device);
            let x = || Qkv {
                q: t(&c.q),
                k: t(&c.k),
                v: t(&c.v),
                key_bias: c.bias.as_ref().map(t),
                scale: c.scale,
                causal: c.causal,
            };
            let diff = relative_diff(&floats(attend(x())), &floats(unfused_or_backend(x())));
            assert!(
                diff <= tolerance,
                "{shape:?} (padded, causal: {masks:?}): {diff}"
            );
        }
    }
}

#[test]
fn training_output_and_gradients_match_the_unfused_reference() {
    training_matches_unfused::<A>(1e-5);
}

#[test]
fn inference_output_matches_the_unfused_reference() {
    // On flex, Burn's own attention is a third, independent implementation.
    inference_matches_unfused::<B>(1e-5);
}

/// q, k and v as the model makes them: thirds of one `[batch, seq, 3·width]` projection, split into
/// heads by views; the merged output and the projection's gradient from `attend` on `AA`, against
/// the unfused path on the same backend.
fn views_of_a_fused_projection<AA: AutodiffBackend>(tolerance: f32) {
    let (b, h, t, hd) = (2, 4, 97, 8);
    let d = h * hd;
    let qkv = random([b, t, 3 * d], 7);
    let w = random([b, t, d], 8);
    let run = |attend: AttentionKernel<AA>| {
        let device = Default::default();
        let qkv = Tensor::<AA, 3>::from_data(qkv.clone(), &device).require_grad();
        let heads = |z: Tensor<AA, 3>| z.reshape([b, t, h, hd]).swap_dims(1, 2);
        let mut parts = qkv.clone().chunk(3, 2).into_iter().map(heads);
        let (q, k, v) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        let x = Qkv {
            q,
            k,
            v,
            key_bias: None,
            scale: 0.3,
            causal: true,
        };
        let y = attend(x).swap_dims(1, 2).reshape([b, t, d]);
        let loss = (y.clone() * Tensor::from_data(w.clone(), &device)).sum();
        let grads = loss.backward();
        let floats3 = |x: Tensor<AA::InnerBackend, 3>| x.into_data().into_vec::<f32>().unwrap();
        (floats3(y.inner()), floats3(qkv.grad(&grads).unwrap()))
    };
    let (y, g) = run(attend::<AA>);
    let (y_ref, g_ref) = run(unfused_or_backend::<AA>);
    assert!(relative_diff(&y, &y_ref) <= tolerance, "output");
    assert!(relative_diff(&g, &g_ref) <= tolerance, "qkv gradient");
}

#[test]
fn views_of_a_fused_projection_match_the_unfused_reference() {
    views_of_a_fused_projection::<A>(1e-5);
}

/// Central differences of the loss Σ w ∘ flash::forward(q, k, v) along a random direction, against the
/// directional derivative from flash::backward, for each input in turn. Inputs are token-major
/// (heads interleaved in each row), as the model's views are.
#[test]
fn gradients_match_finite_differences() {
    for &(b, h, tq, tk, hd, causal) in &[
        (1, 2, 70, 70, 8, true),
        (2, 1, 9, 75, 4, true),
        (1, 2, 70, 70, 8, false),
    ] {
        let dims = flash::Dims {
            batch: b,
            heads: h,
            queries: tq,
            keys: tk,
            head_dim: hd,
            causal,
        };
        let (q_strides, k_strides) = (
            flash::Strides::token_major(h, tq, hd),
            flash::Strides::token_major(h, tk, hd),
        );
        let vec = |shape: [usize; 4], seed| random(shape, seed).into_vec::<f32>().unwrap();
        let (q, k, v) = (
            vec([b, tq, h, hd], 1),
            vec([b, tk, h, hd], 2),
            vec([b, tk, h, hd], 3),
        );
        let bias = padding(b, tk).into_vec::<f32>().unwrap();
        let w = vec([b, tq, h, hd], 4);
        let scale = 0.4;
        let forward = |q: &[f32], k: &[f32], v: &[f32]| {
            flash::forward(
                Strided::new(q, q_strides),
                Strided::new(k, k_strides),
                Strided::new(v, k_strides),
                Some(&bias),
                dims,
                scale,
            )
        };
        let loss = |q: &[f32], k: &[f32], v: &[f32]| -> f64 {
            let out = forward(q, k, v).output;
            out.iter().zip(&w).map(|(o, w)| *o as f64 * *w as f64).sum()
        };
        let fwd = forward(&q, &k, &v);
        let g = flash::backward(
            Strided::new(&q, q_strides),
            Strided::new(&k, k_strides),
            Strided::new(&v, k_strides),
            Some(&bias),
            &fwd.output,
            &fwd.log_sum_exp,
            Strided::new(&w, q_strides),
            dims,
            scale,
        );
        let inputs = [&q, &k, &v];
        for (which, grad) in [&g.query, &g.key, &g.value].into_iter().enumerate() {
            let direction = vec([1, 1, 1, grad.len()], 10 + which as u64);
            let eps = 1e-2f32;
            let shifted = |sign: f32| {
                let mut moved = inputs.map(|x| x.to_vec());
                for (x, d) in moved[which].iter_mut().zip(&direction) {
                    *x += sign * eps * d;
                }
                loss(&moved[0], &moved[1], &moved[2])
            };
            let numeric = (shifted(1.0) - shifted(-1.0)) / (2.0 * eps as f64);
            let analytic: f64 = grad
                .iter()
                .zip(&direction)
                .map(|(g, d)| *g as f64 * *d as f64)
                .sum();
            let rel = (numeric - analytic).abs() / analytic.abs().max(1e-6);
            assert!(
                rel < 2e-3,
                "input {which} of {dims:?}: finite differences {numeric}, backward {analytic}"
            );
        }
    }
}

/// The inspector's explicit probabilities: each query's weights sum to 1, and weights · v is the
/// fused kernel's output. With the causal mask, keys after the query (bottom-right aligned) get
/// none; without it, every query sees every key (all but padded keys get weight). Padded keys get
/// next to none either way.
#[test]
fn explicit_weights_are_distributions_that_reproduce_the_output() {
    let device = Default::default();
    for (i, &shape) in SHAPES.iter().enumerate() {
        for masks in MASKS {
            let c = case(shape, masks, 100 + 10 * i as u64);
            let (b, h, tq, tk, _) = shape;
            let tensor = |d: &TensorData| Tensor::<B, 4>::from_data(d.clone(), &device);
            let bias = c.bias.as_ref().map(tensor);
            let weights =
                attention_weights(tensor(&c.q), tensor(&c.k), bias.clone(), c.scale, c.causal);
            assert_eq!(weights.dims(), [b, h, tq, tk]);
            let output = floats(weights.clone().matmul(tensor(&c.v)));
            let fused = floats(attend(Qkv {
                q: tensor(&c.q),
                k: tensor(&c.k),
                v: tensor(&c.v),
                key_bias: bias,
                scale: c.scale,
                causal: c.causal,
            }));
            let diff = relative_diff(&output, &fused);
            assert!(
                diff <= 1e-5,
                "{shape:?} (padded, causal: {masks:?}): weights · v is {diff} off"
            );
            let w = floats(weights);
            let padding = c.bias.as_ref().map(|p| p.to_vec::<f32>().unwrap());
            for (row, query) in w.chunks(tk).enumerate() {
                let sum: f32 = query.iter().sum();
                assert!((sum - 1.0).abs() < 1e-5, "{shape:?}: a row sums to {sum}");
                let last_seen = tk - tq + row % tq;
                let sequence = row / (h * tq);
                for (key, &weight) in query.iter().enumerate() {
                    let padded = padding
                        .as_ref()
                        .is_some_and(|p| p[sequence * tk + key] < 0.0);
                    let hidden = c.causal && key > last_seen;
                    if hidden {
                        assert_eq!(weight, 0.0, "{shape:?}: query {} sees key {key}", row % tq);
                    } else if !padded {
                        assert!(
                            weight > 0.0,
                            "{shape:?} (causal: {}): query {} does not see key {key}",
                            c.causal,
                            row % tq
                        );
                    }
                }
            }
        }
    }
}

/// Without the causal mask every query reads every key: moving the last key's value moves every
/// query's output, the first one's included; with it, only the last query's.
#[test]
fn without_the_causal_mask_every_query_sees_every_key() {
    let device = Default::default();
    let (h, t, hd) = (2, 70, 8);
    for causal in [true, false] {
        let c = case((1, h, t, t, hd), (false, causal), 5);
        let mut moved = c.v.to_vec::<f32>().unwrap();
        for head in 0..h {
            let last = (head * t + t - 1) * hd;
            moved[last..last + hd].iter_mut().for_each(|x| *x += 1.0);
        }
        let run = |v: TensorData| {
            let t = |d: TensorData| Tensor::<B, 4>::from_data(d, &device);
            floats(attend(Qkv {
                q: t(c.q.clone()),
                k: t(c.k.clone()),
                v: t(v),
                key_bias: None,
                scale: c.scale,
                causal,
            }))
        };
        let (before, after) = (run(c.v.clone()), run(TensorData::new(moved, [1, h, t, hd])));
        for (row, (a, b)) in before.chunks(hd).zip(after.chunks(hd)).enumerate() {
            let query = row % t;
            let changed = a != b;
            let sees_last_key = !causal || query == t - 1;
            assert_eq!(
                changed,
                sees_last_key,
                "causal: {causal}, query {query} of head {}",
                row / t
            );
        }
    }
}

/// The CubeCL backends' fused kernels (`igpt::kernels::cube_flash`), here on wgpu over Mesa's
/// lavapipe (the Vulkan CPU device `scripts/setup.sh` installs): the same kernels cuda and a browser's
/// WebGPU compile, checked against Burn's unfused attention on the same device.
mod cubecl {
    use super::*;
    use burn::backend::Wgpu;

    type W = Wgpu;
    type AW = Autodiff<Wgpu>;

    #[test]
    fn wgpu_runs_the_fused_kernel_for_training_and_inference() {
        assert_eq!(attention::kernel::<AW>(DType::F32), Kernel::Cube);
        assert_eq!(attention::kernel::<W>(DType::F32), Kernel::Cube);
        assert_eq!(attention::kernel::<W>(DType::F16), Kernel::Cube);
    }

    #[test]
    fn training_output_and_gradients_match_the_unfused_reference() {
        training_matches_unfused::<AW>(1e-4);
    }

    #[test]
    fn inference_output_matches_the_unfused_reference() {
        inference_matches_unfused::<W>(1e-4);
    }

    #[test]
    fn views_of_a_fused_projection_match_the_unfused_reference() {
        views_of_a_fused_projection::<AW>(1e-4);
    }

    /// In f16 (lavapipe has `shader-f16`), output and gradients stay within f16's rounding of the
    /// f32 unfused path: 2e-2 relative to each tensor's largest element (inputs alone carry 5e-4,
    /// and the gradients sum a hundred-odd rounded products).
    #[test]
    fn half_precision_is_close_to_the_f32_reference() {
        let device = Default::default();
        if igpt::Precision::F16.check_supported::<W>(&device).is_err() {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "CI's wgpu adapter must have shader-f16 for this check"
            );
            eprintln!("SKIPPED (not in CI): this wgpu adapter has no f16");
            return;
        }
        for (i, &shape) in SHAPES.iter().enumerate() {
            let c = case(shape, (true, true), 200 + i as u64);
            let half = |d: &TensorData| d.clone().convert::<half::f16>();
            let c16 = Case {
                q: half(&c.q),
                k: half(&c.k),
                v: half(&c.v),
                w: half(&c.w),
                bias: c.bias.clone(),
                ..c
            };
            let fused = output_and_grads(&c16, attend::<AW>);
            let reference = output_and_grads(&c, unfused_or_backend::<AW>);
            for (name, (got, want)) in ["output", "dq", "dk", "dv"]
                .iter()
                .zip(fused.iter().zip(&reference))
            {
                let diff = relative_diff(got, want);
                assert!(
                    diff <= 2e-2,
                    "f16 {name} of {shape:?} is {diff} off the f32 path"
                );
            }
        }
    }

    /// Central differences of Σ w ∘ attend(q, k, v) computed by the forward kernel, along a random
    /// direction, against the directional derivative from the backward kernels.
    #[test]
    fn gradients_match_finite_differences() {
        let device = Default::default();
        for (shape, causal) in [
            ((1, 2, 70, 70, 8), true),
            ((2, 1, 9, 75, 4), true),
            ((1, 2, 70, 70, 8), false),
        ] {
            let c = case(shape, (true, causal), 300);
            let analytic = output_and_grads(&c, attend::<AW>);
            let inputs = [&c.q, &c.k, &c.v].map(|d| d.clone().into_vec::<f32>().unwrap());
            let w = c.w.clone().into_vec::<f32>().unwrap();
            let loss = |values: &[Vec<f32>; 3]| -> f64 {
                let t = |i: usize, like: &TensorData| {
                    Tensor::<W, 4>::from_data(
                        TensorData::new(values[i].clone(), like.shape.clone()),
                        &device,
                    )
                };
                let out = attend(Qkv {
                    q: t(0, &c.q),
                    k: t(1, &c.k),
                    v: t(2, &c.v),
                    key_bias: c.bias.clone().map(|d| Tensor::from_data(d, &device)),
                    scale: c.scale,
                    causal,
                });
                floats(out)
                    .iter()
                    .zip(&w)
                    .map(|(o, w)| *o as f64 * *w as f64)
                    .sum()
            };
            for which in 0..3 {
                let direction = random([inputs[which].len()], 10 + which as u64)
                    .into_vec::<f32>()
                    .unwrap();
                let eps = 1e-2f32;
                let shifted = |sign: f32| {
                    let mut moved = inputs.clone();
                    for (x, d) in moved[which].iter_mut().zip(&direction) {
                        *x += sign * eps * d;
                    }
                    loss(&moved)
                };
                let numeric = (shifted(1.0) - shifted(-1.0)) / (2.0 * eps as f64);
                let along: f64 = analytic[which + 1]
                    .iter()
                    .zip(&direction)
                    .map(|(g, d)| *g as f64 * *d as f64)
                    .sum();
                let rel = (numeric - along).abs() / along.abs().max(1e-6);
                assert!(
                    rel < 2e-3,
                    "input {which} of {shape:?}: finite differences {numeric}, backward {along}"
                );
            }
        }
    }
}
