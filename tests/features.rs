//! Per-layer features: their shape, the HF fixture's hidden states pooled by hand, and the cache.

mod common;

use burn::tensor::Tensor;
use common::{B, expected, fixture_dir, ids, max_abs_diff};
use igpt::analysis::features::{self, FeatureCache};
use igpt::store;
use igpt::{ForwardOptions, ImageGptConfig};

fn fixture_sequences() -> Vec<Vec<u16>> {
    expected()
        .input_ids
        .iter()
        .map(|row| row.iter().map(|&id| id as u16).collect())
        .collect()
}

/// layer_norm (mean 0, variance 1, no scale, ε = 1e-5) at each position, then the mean over positions,
/// in f64 on the host: `hidden` is `[batch, seq, d]` read back.
fn pooled_by_hand(hidden: Tensor<B, 3>) -> Vec<f32> {
    let [b, t, d] = hidden.dims();
    let values = hidden.into_data().into_vec::<f32>().unwrap();
    let mut out = vec![0f32; b * d];
    for i in 0..b {
        let mut sum = vec![0f64; d];
        for p in 0..t {
            let row = &values[(i * t + p) * d..(i * t + p + 1) * d];
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
            for (s, &v) in sum.iter_mut().zip(row) {
                *s += (v as f64 - mean) / (var + 1e-5).sqrt();
            }
        }
        for (o, s) in out[i * d..(i + 1) * d].iter_mut().zip(sum) {
            *o = (s / t as f64) as f32;
        }
    }
    out
}

#[test]
fn every_layer_has_one_row_per_image() {
    let config = ImageGptConfig::preset("tiny", 16, 64).unwrap();
    let model = config.init::<B>(&Default::default());
    let sequences: Vec<Vec<u16>> = (0..5).map(|i| vec![(i % 16) as u16; 64]).collect();
    let mut seen = Vec::new();
    let features = features::extract(&model, &sequences, 2, |n| seen.push(n)).unwrap();
    assert_eq!(seen, [2, 2, 1]);
    assert_eq!(features.layers.len(), config.n_layer + 1);
    assert_eq!((features.count, features.width), (5, config.n_embd));
    for layer in &features.layers {
        assert_eq!(layer.len(), 5 * config.n_embd);
        assert!(layer.iter().all(|v| v.is_finite()));
    }
    // Sequences of the wrong length are refused, not truncated.
    assert!(features::extract(&model, &[vec![0; 63]], 2, |_| {}).is_err());
}

#[test]
fn fixture_features_equal_its_hidden_states_pooled_by_hand() {
    let exp = expected();
    let stored = store::load_dir::<B>(&fixture_dir(), &Default::default()).unwrap();
    let model = &stored.model;
    let options = ForwardOptions {
        residual: true,
        ..Default::default()
    };
    let layers = model.forward_with(
        ids::<B>(&exp.model_input, 0..exp.model_input[0].len()),
        options,
    );
    let depth = model.n_layer() + 1;
    assert_eq!(layers.residual.len(), depth);

    // The residual stream is HF's: its means are the fixture's hidden_mean (the last through ln_f).
    for (l, h) in layers.residual.iter().take(depth - 1).enumerate() {
        let mean = h.clone().mean_dim(1).into_data().into_vec::<f32>().unwrap();
        let diff = max_abs_diff(&mean, &exp.hidden_mean[l].concat());
        assert!(diff <= 1e-4, "layer {l} differs from HF by {diff}");
    }
    let normed = layers.normed.clone().mean_dim(1);
    let diff = max_abs_diff(
        &normed.into_data().into_vec::<f32>().unwrap(),
        &exp.hidden_mean[depth - 1].concat(),
    );
    assert!(diff <= 1e-4, "ln_f output differs from HF by {diff}");

    // extract() builds the same model input (SOS + all but the last token) from the bare ids.
    let features = features::extract(model, &fixture_sequences(), 2, |_| {}).unwrap();
    for (l, h) in layers.residual.into_iter().enumerate() {
        let want = pooled_by_hand(h);
        let diff = max_abs_diff(&features.layers[l], &want);
        assert!(diff <= 1e-4, "pooled layer {l} differs by {diff}");
    }
}

#[test]
fn cached_features_read_back_equal_and_are_keyed_by_the_weights_and_the_tokens() {
    let stored = store::load_dir::<B>(&fixture_dir(), &Default::default()).unwrap();
    let sequences = fixture_sequences();
    let features = features::extract(&stored.model, &sequences, 3, |_| {}).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = FeatureCache::new(dir.path());
    let fed = [("fixture", &sequences[..]), ("masks 2", &sequences[..])];
    let paths = cache.paths(&stored.model, &fed).unwrap();
    let path = &paths[0];
    assert!(FeatureCache::read(path).is_none());
    FeatureCache::write(path, &features).unwrap();
    assert_eq!(FeatureCache::read(path).unwrap(), features);

    // Another description of how they were fed, the same again, other weights.
    assert_ne!(path, &paths[1]);
    assert_eq!(paths, cache.paths(&stored.model, &fed).unwrap());
    let other = stored.config.init::<B>(&Default::default());
    assert_ne!(path, &cache.paths(&other, &fed[..1]).unwrap()[0]);

    // The same images under another palette are other tokens: one id changed is another file.
    let mut recoloured = sequences.clone();
    recoloured[0][0] = (recoloured[0][0] + 1) % 512;
    let moved = cache
        .paths(&stored.model, &[("fixture", &recoloured[..])])
        .unwrap();
    assert_ne!(path, &moved[0]);
}
