//! Backend parity: the wgpu backend (the browser's, here on Mesa's lavapipe Vulkan CPU device, which
//! `scripts/setup.sh` installs) gives the HF fixture's logits, and its KV-cached decoding (GPU causal
//! attention kernels) matches its own full forward.

mod common;

use burn::backend::Wgpu;
use burn::tensor::Tensor;
use common::{expected, fixture_dir, ids, max_abs_diff};
use igpt::sample::{Decoding, Generation, SamplingConfig};
use igpt::{Precision, store};

type W = Wgpu;

#[test]
fn wgpu_matches_hf_and_its_own_cache() {
    let exp = expected();
    let model = store::load_dir::<W>(&fixture_dir(), &Default::default())
        .unwrap()
        .model;
    let full = model.forward(ids::<W>(&exp.model_input, 0..64));
    let full_values: Vec<f32> = full
        .clone()
        .into_data()
        .convert::<f32>()
        .into_vec()
        .unwrap();
    let diff = max_abs_diff(&full_values, &exp.logits.concat().concat());
    assert!(diff <= 1e-4, "wgpu logits differ from HF by {diff}");

    let mut cache = model.new_cache(3);
    let mut pieces = vec![model.forward_cached(ids::<W>(&exp.model_input, 0..20), &mut cache)];
    for t in 20..64 {
        pieces.push(model.forward_cached(ids::<W>(&exp.model_input, t..t + 1), &mut cache));
    }
    let cached: Vec<f32> = Tensor::cat(pieces, 1)
        .into_data()
        .convert::<f32>()
        .into_vec()
        .unwrap();
    let diff = max_abs_diff(&cached, &full_values);
    assert!(
        diff <= 1e-4,
        "wgpu cached logits differ from its full forward by {diff}"
    );

    // Sampling on the GPU backend: cached and naive decoding agree token for token.
    let run = |decoding| {
        let mut g = Generation::new(
            &model,
            vec![vec![]; 2],
            SamplingConfig::default(),
            decoding,
            Some(5),
        )
        .unwrap();
        while !g.is_done() {
            g.step(&model);
        }
        g.read_back().unwrap();
        g.into_sequences()
    };
    let top_p = SamplingConfig {
        top_p: Some(0.9),
        top_k: Some(8),
        temperature: 0.9,
    };
    let mut g = Generation::new(
        &model,
        vec![vec![1, 2, 3]; 2],
        top_p,
        Decoding::Cached,
        Some(1),
    )
    .unwrap();
    while !g.is_done() {
        g.step(&model);
    }
    g.read_back().unwrap();
    assert!(
        g.sequences()
            .iter()
            .all(|s| s.len() == 64 && s.iter().all(|&t| t < 16))
    );
    assert_eq!(run(Decoding::Cached), run(Decoding::Reforward));
}

/// A half type the adapter lacks (wgpu has no bf16; f16 needs `shader-f16`) is refused up front with
/// a way out; one it has computes logits within that type's rounding of HF's.
#[test]
fn wgpu_half_precision_is_refused_or_close_to_hf() {
    let exp = expected();
    let device = Default::default();
    let model = store::load_dir::<W>(&fixture_dir(), &device).unwrap().model;
    for (precision, tolerance) in [(Precision::Bf16, 0.02), (Precision::F16, 0.003)] {
        match precision.check_supported::<W>(&device) {
            Err(refusal) => assert!(refusal.to_string().contains("--precision f32"), "{refusal}"),
            Ok(()) => {
                let logits = model
                    .clone()
                    .with_precision(precision)
                    .forward(ids::<W>(&exp.model_input, 0..64));
                let values: Vec<f32> = logits.into_data().convert::<f32>().into_vec().unwrap();
                let diff = max_abs_diff(&values, &exp.logits.concat().concat());
                assert!(
                    diff <= tolerance,
                    "wgpu {precision:?} logits differ from HF by {diff}"
                );
            }
        }
    }
}
