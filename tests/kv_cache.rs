//! The KV-cached forward is checked against the full forward (the reference), on the HF fixture.

mod common;

use burn::tensor::Tensor;
use common::{B, expected, fixture_dir, ids, max_abs_diff};
use igpt::store;

fn floats(t: Tensor<B, 3>) -> Vec<f32> {
    t.into_data().into_vec::<f32>().unwrap()
}

#[test]
fn cached_decoding_gives_the_full_forward_logits() {
    let exp = expected();
    let model = store::load_dir::<B>(&fixture_dir(), &Default::default())
        .unwrap()
        .model;
    let n = exp.model_input[0].len();
    let full = model.forward(ids::<B>(&exp.model_input, 0..n));
    let [b, _, k] = full.dims();

    // A prefix of 10 tokens in one call (as completion does), then one token per step (as sampling does).
    let mut cache = model.new_cache(b);
    let mut pieces = vec![model.forward_cached(ids::<B>(&exp.model_input, 0..10), &mut cache)];
    for t in 10..n {
        pieces.push(model.forward_cached(ids::<B>(&exp.model_input, t..t + 1), &mut cache));
    }
    assert_eq!(cache.len(), n);
    let cached = Tensor::cat(pieces, 1);
    assert_eq!(cached.dims(), [b, n, k]);
    let diff = max_abs_diff(&floats(cached), &floats(full));
    assert!(
        diff <= 1e-5,
        "cached logits differ from the full forward by {diff}"
    );
}

#[test]
#[should_panic(expected = "exceeds the model's 64 positions")]
fn cache_refuses_to_run_past_the_context() {
    let exp = expected();
    let model = store::load_dir::<B>(&fixture_dir(), &Default::default())
        .unwrap()
        .model;
    let mut cache = model.new_cache(3);
    model.forward_cached(ids::<B>(&exp.model_input, 0..64), &mut cache);
    model.forward_cached(ids::<B>(&exp.model_input, 0..1), &mut cache);
}
