//! The model card (`card.json`): what we know about a model beyond its weights, in typed sections
//! that the CLI writes and the page reads. A card with a field this version does not know is an
//! error, not silently dropped on the next save.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::objective::Objective;
use crate::pixels::palette::Tokenizer;

#[cfg(not(target_arch = "wasm32"))]
use crate::error::{Error, Result};

pub const CARD_FILE: &str = "card.json";

/// What we know about a model beyond its weights: where it came from and how well it does.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The dataset spec it was trained on, e.g. `fashion-mnist:train`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    pub image_height: usize,
    pub image_width: usize,
    /// 1 (grey) or 3 (RGB): the palette's channels.
    pub channels: usize,
    /// What the model predicts, when it is not the next pixel (a BERT model; `config.json` says too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objective: Option<Objective>,
    /// Measured numbers, e.g. `test_bits_per_token`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
    /// The dataset spec the `test_*` metrics were measured on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_data: Option<String>,
    /// Free text from whoever exported it (`igpt export --note`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// How it was trained (`igpt export`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<TrainingRecord>,
    /// What simple models score on the same test images (`igpt export`, `igpt baselines --record`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baselines: Option<BaselinesRecord>,
    /// A small pinned score that tests reproduce (`igpt eval --record`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckRecord>,
    /// Linear probes on every layer (`igpt probe --record`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeReport>,
    /// How this model was fine-tuned (a fine-tuned model's own card).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finetune: Option<FinetuneRecord>,
    /// What fine-tuning this model gave (`igpt finetune --record`, in the parent's card).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finetuned: Option<FinetunedRecord>,
    /// The light weights file beside the full one and what it costs (`igpt quantize`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantized: Option<QuantizedRecord>,
}

/// The light form of the weights (`model.q6.safetensors`, block-wise 6-bit): its size against the
/// full file's and its scores on the card's own test and check images.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QuantizedRecord {
    pub file: String,
    /// `q6`: 6-bit levels packed four to three bytes, in blocks of 64 values, one f16 scale each.
    pub format: String,
    pub bytes: u64,
    pub gzip_bytes: u64,
    /// The full weights file's, for comparison.
    pub full_bytes: u64,
    pub full_gzip_bytes: u64,
    /// On all of the card's `test_data`, and on its `check` subset.
    pub test_bits_per_token: f64,
    pub check_bits_per_token: f64,
}

/// One stage of training: the run's own numbers and, when it started from another model, that
/// model's record, so the whole history stays with the weights.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TrainingRecord {
    pub steps: u64,
    pub seconds: f64,
    /// The backend and device it ran on, when the run recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The run's settings as its `train.json` holds them (`igpt::train::TrainConfig`, kept as JSON
    /// here because the page, which has no training code, reads cards too).
    pub config: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_from: Option<StartedFrom>,
    /// Over the whole history, when all of it is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_steps: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_seconds: Option<f64>,
    /// Set at export: the model's parameter count and how its weights are stored (`f16`, `f32`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<String>,
    /// The run's latest validation figure (bits/token) when it was saved: on its held-out training
    /// images (`--holdout`) or its `--val` split, whichever its settings name. `probe-curve --model`
    /// charts exported models by it, as it charts a run's milestones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_bits_per_token: Option<f64>,
}

/// The model a run started from, with its training record when one is known (not for a
/// HuggingFace checkpoint).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct StartedFrom {
    pub model: String,
    #[serde(flatten)]
    pub record: Option<Box<TrainingRecord>>,
}

impl TrainingRecord {
    /// Steps and seconds over the whole history, when every stage of it is known.
    pub fn totals(&self) -> Option<(u64, f64)> {
        let own = (self.steps, self.seconds);
        if self.started_from.is_none() {
            return Some(own);
        }
        self.total_steps.zip(self.total_seconds)
    }
}

/// Bits per token of each baseline on the test tokens (`igpt::analysis::baselines`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Baselines {
    /// log2 K.
    pub uniform: f64,
    /// One distribution over colours for every pixel (add-0.5 smoothing).
    pub global_unigram: f64,
    /// One distribution per position (add-0.5 smoothing).
    pub per_position: f64,
    /// P(x | left, up, up-left) = (c(ctx, x) + a p_pos(x)) / (c(ctx) + a), out-of-image neighbours a
    /// symbol of their own.
    pub context3: f64,
    /// The back-off strength `a`, chosen on every tenth training image with counts from the others.
    pub context_strength: f64,
}

/// The baselines as a card records them: with the data they were fitted and scored on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct BaselinesRecord {
    #[serde(flatten)]
    pub bits: Baselines,
    pub train_data: String,
    pub test_data: String,
    pub test_images: usize,
}

/// Bits per token on the first `images` of `data`: small enough for a test to reproduce.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CheckRecord {
    pub data: String,
    pub images: usize,
    pub bits_per_token: f64,
}

/// One probed layer.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LayerResult {
    pub layer: usize,
    pub accuracy: f64,
    /// On the held-out slice of train: what picks the best layer.
    pub val_accuracy: f64,
    pub l2: f64,
}

/// Everything `igpt probe` measured (the `--json` line; also stored in the card with `--record`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProbeReport {
    pub layers: Vec<LayerResult>,
    /// The layer whose probe did best on the held-out slice of train (not chosen on test).
    pub best_layer: usize,
    pub best_accuracy: f64,
    pub raw_pixels: f64,
    /// The random-weights model's best layer (chosen the same way), its test accuracy.
    pub random_init_best: f64,
    pub random_init_layers: Vec<LayerResult>,
    pub train_images: usize,
    pub test_images: usize,
    pub train_data: String,
    pub test_data: String,
    /// A BERT model's features averaged over this many seeded masks (absent: no pixel hidden).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masks: Option<usize>,
    /// One probe of several consecutive layers' features end to end, centred on the best layer
    /// (`igpt probe --concat N`); absent when not asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concat: Option<ConcatProbe>,
}

/// A probe of several layers' features concatenated (the paper's iGPT-XL ImageNet probe read five).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConcatProbe {
    /// The layers read, centred on the best single layer (chosen on the held-out slice).
    pub layers: Vec<usize>,
    pub accuracy: f64,
    /// On the held-out slice of train, where its L2 was chosen.
    pub val_accuracy: f64,
    pub l2: f64,
    /// The random-weights twin's probe of the same layers, its test accuracy.
    pub random_init_accuracy: f64,
}

/// How a model was fine-tuned.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FinetuneRecord {
    /// The model directory it started from.
    pub from: String,
    /// The paper's baseline: the same architecture from fresh weights, on L_clf alone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_scratch: bool,
    pub train_data: String,
    pub train_images: usize,
    pub held_out_images: usize,
    /// The settings (`igpt::train::finetune::FinetuneConfig`), as JSON for the same reason as
    /// [`TrainingRecord::config`].
    pub config: serde_json::Value,
    pub best_step: usize,
    pub best_held_out_accuracy: f64,
    pub steps: usize,
    pub seconds: f64,
    pub device: String,
    pub weights: String,
}

/// A fine-tuned model's test scores, recorded in the card of the model it started from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FinetunedRecord {
    /// Where the fine-tuned model was written.
    pub output: String,
    pub test_accuracy: f64,
    pub test_bits_per_token: f64,
    pub test_images: usize,
    pub test_data: String,
    pub finetune: FinetuneRecord,
}

impl ModelCard {
    /// A card that says only what images the model reads: their size and channels.
    pub fn for_images(tokenizer: &Tokenizer) -> Self {
        ModelCard {
            image_height: tokenizer.height,
            image_width: tokenizer.width,
            channels: tokenizer.channels(),
            ..Default::default()
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl ModelCard {
    /// Reads `card.json` in `dir` as it is now, or `absent()` when there is none (a plain HF
    /// checkpoint). Commands that add a record to a card read it just before saving, so a record
    /// another command wrote meanwhile is kept.
    pub fn read_or(dir: &std::path::Path, absent: impl FnOnce() -> Self) -> Result<Self> {
        let path = dir.join(CARD_FILE);
        if !path.exists() {
            return Ok(absent());
        }
        serde_json::from_slice(&crate::error::read_file(&path)?)
            .map_err(|e| Error::format(path, e.to_string()))
    }

    /// Writes `card.json` in `dir`, replacing it atomically (export, probe and fine-tune results).
    pub fn save(&self, dir: &std::path::Path) -> Result<()> {
        let card = serde_json::to_string_pretty(self).expect("plain data serialises");
        crate::error::write_file_atomic(&dir.join(CARD_FILE), card.as_bytes())
    }
}
