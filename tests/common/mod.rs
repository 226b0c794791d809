//! Shared helpers for the integration tests: the HF fixture and its expected outputs.
#![allow(dead_code)]

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use igpt::model::objective::Objective;
use igpt::train::run::RunState;
use igpt::train::{self, Event, Start, TrainConfig, TrainData};
use igpt::{ImageGpt, ImageGptConfig, ModelCard, Palette, Precision, StoredModel};
use serde::Deserialize;

pub type B = burn::backend::Flex;

/// A check that cannot run on this machine: outside CI it is skipped, saying why; in CI (`CI=true`),
/// where every check must really run, it fails with the reason instead of passing unrun.
pub fn cannot_run(reason: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("this check cannot run here, and CI must run it: {reason}");
    }
    eprintln!("SKIPPED (not in CI): {reason}");
}

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

/// Columns `range` of token rows as a `[rows, len]` id tensor on any backend.
pub fn ids<BB: Backend>(rows: &[Vec<i64>], range: std::ops::Range<usize>) -> Tensor<BB, 2, Int> {
    let flat: Vec<i64> = rows
        .iter()
        .flat_map(|r| r[range.clone()].to_vec())
        .collect();
    Tensor::from_data(
        TensorData::new(flat, [rows.len(), range.len()]),
        &Default::default(),
    )
}

/// 8×8 images of horizontal stripes in two shades: easy structure for a tiny model to pick up.
pub fn stripes(count: usize) -> Vec<Vec<u16>> {
    (0..count)
        .map(|i| {
            let (a, b) = ((i % 4) as u16, 8 + (i % 3) as u16);
            (0..64)
                .map(|p| if (p / 8) % 2 == 0 { a } else { b })
                .collect()
        })
        .collect()
}

/// A short training run's settings, on 8 images a step, with flips and crops.
pub fn train_config(steps: usize) -> TrainConfig {
    TrainConfig {
        data: "synthetic:stripes".into(),
        limit: None,
        holdout: 0,
        val: None,
        batch: 8,
        steps,
        lr: 3e-3,
        warmup: 2,
        grad_clip: 1.0,
        flip: true,
        crop: 1,
        shuffle_window: igpt::data::stream::DEFAULT_WINDOW,
        seed: 3,
        log_every: 1,
        eval_every: 1000,
        eval_images: 8,
        checkpoint_every: 5,
        keep_every: 0,
        classification_only: false,
        precision: Precision::F32,
        init: None,
        devices: Vec::new(),
        nodes: None,
    }
}

/// A tiny model for 8×8 images of 16 grey levels with the given objective, seeded.
pub fn tiny_model<BB: Backend>(objective: Objective, seed: u64) -> StoredModel<BB> {
    let config = ImageGptConfig::preset("tiny", 16, 64)
        .unwrap()
        .with_n_embd(32)
        .with_objective(objective);
    let device = Default::default();
    StoredModel {
        labels: Vec::new(),
        model: igpt::store::seeded_init(&config, seed, &device),
        config,
        palette: Palette::new(1, (0..16).map(|i| i as f32 / 7.5 - 1.0).collect()).unwrap(),
        card: ModelCard {
            image_height: 8,
            image_width: 8,
            channels: 1,
            objective: (!objective.is_causal()).then_some(objective),
            ..Default::default()
        },
    }
}

/// Every parameter value, in visiting order.
pub fn weights<BB: Backend>(model: &ImageGpt<BB>) -> Vec<Vec<f32>> {
    struct Collect(Vec<Vec<f32>>);
    impl<BB: Backend> ModuleVisitor<BB> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<BB, D>>) {
            self.0
                .push(param.val().into_data().convert::<f32>().into_vec().unwrap());
        }
    }
    let mut c = Collect(Vec::new());
    model.visit(&mut c);
    c.0
}

/// The largest difference between two runs' weights, relative to the largest weight.
pub fn weight_gap(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    let scale = a.iter().flatten().fold(0f32, |m, x| m.max(x.abs()));
    let gap = a
        .iter()
        .flatten()
        .zip(b.iter().flatten())
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    gap / scale
}

/// Trains `start` in the run folder `run` on `data` (validating on `val`) and returns the model, the
/// run's state and every logged step's loss.
pub fn train_logging_losses<'a, A: AutodiffBackend>(
    run: &Path,
    config: &TrainConfig,
    start: Start<A>,
    data: impl Into<TrainData<'a>>,
    val: &[Vec<u16>],
) -> (StoredModel<A>, RunState, Vec<f64>) {
    let mut losses = Vec::new();
    let (model, state) = train::train(run, config, start, data, val, |e| {
        if let Event::Step { loss, .. } = e {
            losses.push(loss);
        }
        ControlFlow::Continue(())
    })
    .unwrap();
    (model, state, losses)
}
