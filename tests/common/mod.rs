//! Shared helpers for the integration tests: the HF fixture and its expected outputs.
#![allow(dead_code)]

use std::path::PathBuf;

use serde::Deserialize;

pub type B = burn::backend::Flex;

pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf-imagegpt-tiny")
}

/// `expected.json`, written by `tests/fixtures/make_hf_fixture.py` with HF transformers.
#[derive(Deserialize)]
pub struct Expected {
    pub input_ids: Vec<Vec<i64>>,
    pub model_input: Vec<Vec<i64>>,
    pub logits: Vec<Vec<Vec<f32>>>,
    pub mean_nll_nats: f64,
    pub hidden_mean: Vec<Vec<Vec<f32>>>,
    pub greedy: Vec<Vec<i64>>,
    pub processor_images: Vec<Vec<Vec<Vec<u8>>>>,
    pub processor_ids: Vec<Vec<i64>>,
}

pub fn expected() -> Expected {
    let text = std::fs::read_to_string(fixture_dir().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
