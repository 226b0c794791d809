//! Fine-tuning (the paper's §3.3): a classification head on the average-pooled final features, and the
//! whole network trained on L_gen + L_clf by the same loop as pretraining ([`crate::train::run_loop::run_loop`]),
//! stopped early on a held-out slice of the training images (never on test). The result still
//! generates, and also classifies.

use std::ops::ControlFlow;
use std::path::Path;

use burn::tensor::backend::{AutodiffBackend, Backend};
use rand::seq::SliceRandom;
use rand::{SeedableRng, rngs::ChaCha8Rng};
use serde::{Deserialize, Serialize};

use super::batches::TrainData;
use super::config::TrainConfig;
use super::run::{self, Checkpoint};
use super::run_loop::{self, Event, Judge, Start};
use crate::analysis::classify::{self, Scores};
use crate::error::{Error, Result, read_file, write_file_atomic};
use crate::model::ImageGpt;
use crate::model::precision::Precision;
use crate::store::{
    self, FinetuneRecord, FinetunedRecord, ModelCard, StoredModel, WeightPrecision,
};

/// How a fine-tuning run goes (recorded in the fine-tuned model's card; a card from before a
/// setting existed reads it as its default).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FinetuneConfig {
    pub batch: usize,
    /// Steps at most (early stopping may end sooner).
    pub steps: usize,
    /// Peak learning rate (warmup, then cosine decay over `steps`).
    pub lr: f64,
    pub warmup: usize,
    pub grad_clip: f64,
    /// Steps between accuracy checks on the held-out images.
    pub eval_every: usize,
    /// Stop after this many checks in a row without a better held-out accuracy.
    pub patience: usize,
    pub seed: u64,
    /// How the matrix products compute while fitting (the saved weights are f32 either way).
    #[serde(default)]
    pub precision: Precision,
    /// Random horizontal flips of the training images.
    #[serde(default)]
    pub flip: bool,
    /// Random shifts of up to this many pixels each way (see [`crate::data::augment::Augment`]).
    #[serde(default)]
    pub crop: usize,
    /// Train on L_clf alone, without the generative term (the from-scratch baseline's objective).
    #[serde(default)]
    pub classification_only: bool,
    /// Data parallelism (`--devices`), as [`TrainConfig::devices`]: not part of the run (it changes
    /// only the order of f32 additions), so neither saved nor recorded, and a run may resume on
    /// another count.
    #[serde(skip)]
    pub devices: Vec<u16>,
}

/// Steps between progress reports (the bar, a `log.csv` row in a run folder) at most: a long
/// fine-tuning in the background shows its pace between held-out checks.
const LOG_EVERY: usize = 50;

impl FinetuneConfig {
    /// The settings of the shared loop ([`run_loop::run_loop`]) for this fine-tuning, which checks
    /// `held_out` images every `eval_every` steps; with a run folder (`checkpoints`) it checkpoints
    /// at each check too, so the best weights and the checkpoint never tell different stories.
    fn loop_config(&self, held_out: usize, checkpoints: bool) -> TrainConfig {
        TrainConfig {
            data: String::new(),
            limit: None,
            holdout: 0,
            val: None,
            batch: self.batch,
            steps: self.steps,
            lr: self.lr,
            warmup: self.warmup,
            grad_clip: self.grad_clip,
            flip: self.flip,
            crop: self.crop,
            shuffle_window: crate::data::stream::DEFAULT_WINDOW,
            seed: self.seed,
            log_every: self.eval_every.min(LOG_EVERY),
            eval_every: self.eval_every,
            eval_images: held_out,
            checkpoint_every: if checkpoints {
                self.eval_every
            } else {
                self.steps
            },
            keep_every: 0,
            precision: self.precision,
            init: None,
            classification_only: self.classification_only,
            devices: self.devices.clone(),
            nodes: None,
        }
    }
}

/// What the loop reports as it goes.
pub enum FinetuneEvent {
    Step {
        step: usize,
        generative: f64,
        classification: f64,
    },
    Validation {
        step: usize,
        accuracy: f64,
        best: bool,
    },
    /// A run folder's checkpoint was written (the caller may stop here and resume later).
    Checkpoint { step: usize },
}

/// What a fine-tuning run folder was started with (`finetune.json`): a resume must give the same,
/// or it would fit other images, hold out others or follow another schedule.
#[derive(Debug, Serialize)]
pub struct RunSettings {
    /// The pretrained model directory.
    pub model: String,
    pub train_data: String,
    /// Only the first N training images, before the held-out split.
    pub train_limit: Option<usize>,
    pub val_fraction: f64,
    pub config: FinetuneConfig,
}

const SETTINGS_FILE: &str = "finetune.json";

impl RunSettings {
    pub fn new(
        model: &Path,
        (train_data, train_limit): (&str, Option<usize>),
        val_fraction: f64,
        config: &FinetuneConfig,
    ) -> Self {
        RunSettings {
            model: model.display().to_string(),
            train_data: train_data.to_string(),
            train_limit,
            val_fraction,
            config: config.clone(),
        }
    }

    /// Writes the settings into a new run folder.
    pub fn save(&self, run: &Path) -> Result<()> {
        std::fs::create_dir_all(run).map_err(|e| Error::io(run, e))?;
        let json = serde_json::to_string_pretty(self).expect("plain data serialises");
        write_file_atomic(&run.join(SETTINGS_FILE), json.as_bytes())
    }

    /// Checks that `run` was started with these settings, naming what differs.
    pub fn check_matches(&self, run: &Path) -> Result<()> {
        let path = run.join(SETTINGS_FILE);
        let saved: serde_json::Value = serde_json::from_slice(&read_file(&path)?)
            .map_err(|e| Error::format(&path, e.to_string()))?;
        let ours = serde_json::to_value(self).expect("plain data serialises");
        // Each setting by name: the top-level ones and the fine-tuning config's.
        let named = |v: &serde_json::Value| -> Vec<(String, serde_json::Value)> {
            let fields = v.as_object().into_iter().flatten();
            fields
                .flat_map(|(key, value)| match value.as_object() {
                    Some(config) => config.clone().into_iter().collect(),
                    None => vec![(key.clone(), value.clone())],
                })
                .collect()
        };
        let theirs = named(&saved);
        let differ: Vec<String> = named(&ours)
            .into_iter()
            .filter_map(|(key, value)| {
                let was = theirs.iter().find(|(k, _)| *k == key).map(|(_, v)| v);
                (was != Some(&value)).then(|| {
                    let was = was.map_or("nothing".into(), |v| v.to_string());
                    format!("{key} {value} (the run has {was})")
                })
            })
            .collect();
        if differ.is_empty() {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "{} was started with other settings; resume it with the same ones: {}",
                run.display(),
                differ.join(", ")
            )))
        }
    }
}

/// A fine-tuned model and how it got there.
pub struct Finetuned<B: AutodiffBackend> {
    /// The weights of the best held-out check.
    pub stored: StoredModel<B>,
    pub best_step: usize,
    pub best_val_accuracy: f64,
    /// Steps taken before stopping.
    pub steps: usize,
    /// (fitted, held-out) images.
    pub images: (usize, usize),
    pub seconds: f64,
    /// What it ran on ("flex Cpu", ...).
    pub device: String,
}

impl<B: AutodiffBackend> Finetuned<B> {
    /// Writes the weights to `dir` as `weights`, then scores what was written (f16 rounding
    /// included) on the labelled `test` sequences; `on_batch` hears each scored batch's size.
    pub fn save_and_score(
        &self,
        dir: &Path,
        weights: WeightPrecision,
        (test, test_labels): (&[Vec<u16>], &[usize]),
        on_batch: impl FnMut(usize),
    ) -> Result<Scores> {
        self.stored.save_dir(dir, weights)?;
        let written = store::load_dir::<B::InnerBackend>(dir, &self.stored.model.device())?;
        classify::score(&written.model, test, test_labels, 32, on_batch)
    }

    /// How the run went, for the cards: it was started with `settings` and kept `weights`.
    pub fn record(&self, settings: &RunSettings, weights: WeightPrecision) -> FinetuneRecord {
        let (train_images, held_out_images) = self.images;
        FinetuneRecord {
            from: settings.model.clone(),
            from_scratch: settings.config.classification_only,
            train_data: settings.train_data.clone(),
            train_images,
            held_out_images,
            config: serde_json::to_value(&settings.config).expect("plain data serialises"),
            best_step: self.best_step,
            best_held_out_accuracy: self.best_val_accuracy,
            steps: self.steps,
            seconds: self.seconds,
            device: self.device.clone(),
            weights: weights.name().into(),
        }
    }
}

/// Readies a pretrained model for [`finetune`]: a classification head over `classes` (see
/// [`class_names`]), all zeros, so the model starts out guessing every class alike. The
/// from-scratch baseline (`fresh_seed`) first draws new random weights from that seed, keeping
/// only the architecture.
pub fn with_head<B: Backend>(
    mut stored: StoredModel<B>,
    classes: Vec<String>,
    fresh_seed: Option<u64>,
) -> StoredModel<B> {
    if let Some(seed) = fresh_seed {
        stored.model = store::seeded_init(&stored.config, seed, &stored.model.device());
    }
    stored.model = stored.model.with_classifier(classes.len());
    stored.labels = classes;
    stored
}

/// Where a fine-tuning starts. In a run folder `run` with `resume`, from its checkpoint, after
/// checking that the folder was started with `settings`; otherwise from `pretrained` with a fresh
/// head over `classes` ([`with_head`]; the from-scratch baseline's weights drawn anew), a new run
/// folder recording `settings` first. A folder that already holds a run is resumed, never started
/// over.
pub fn start<B: AutodiffBackend>(
    pretrained: StoredModel<B>,
    classes: Vec<String>,
    settings: &RunSettings,
    (run, resume): (Option<&Path>, bool),
    device: &B::Device,
) -> Result<Start<B>> {
    let config = &settings.config;
    let fresh_seed = config.classification_only.then_some(config.seed);
    let headed = || with_head(pretrained, classes, fresh_seed);
    match (run, resume) {
        (Some(dir), true) => {
            settings.check_matches(dir)?;
            let checkpoint = Checkpoint::load(dir, device).map_err(|e| {
                Error::invalid(format!(
                    "cannot resume: no readable checkpoint in {} ({e})",
                    dir.display()
                ))
            })?;
            Ok(Start::Resume(checkpoint))
        }
        (Some(dir), false) if run::has_checkpoint(dir) => Err(Error::invalid(format!(
            "{} already holds a fine-tuning run: pass --resume to continue it, or choose another --run",
            dir.display()
        ))),
        (Some(dir), false) => {
            settings.save(dir)?;
            Ok(Start::Model(headed()))
        }
        (None, true) => Err(Error::invalid("resuming needs the run folder to resume")),
        (None, false) => Ok(Start::Model(headed())),
    }
}

/// Fine-tunes `start` (a model with a classification head, see
/// [`crate::ImageGpt::with_classifier`], or a run folder's checkpoint) on `train` with
/// `train_labels`, checking accuracy on `val`. With a run folder `run`, each check also writes a
/// checkpoint and the best weights so far (`best/`), so a stopped run resumes exactly.
pub fn finetune<B: AutodiffBackend>(
    start: Start<B>,
    run: Option<&Path>,
    (train, train_labels): (&[Vec<u16>], &[usize]),
    (val, val_labels): (&[Vec<u16>], &[usize]),
    config: &FinetuneConfig,
    mut on_event: impl FnMut(FinetuneEvent) -> ControlFlow<()>,
) -> Result<Finetuned<B>> {
    // The loop checks the training images and their labels, and the settings; the held-out ones
    // are checked here, where they are scored.
    if val.is_empty() {
        return Err(Error::invalid("fine-tuning needs held-out images"));
    }
    run_loop::check_labels(val_labels, start.stored().model.n_labels())?;
    let judge = Judge {
        score: Box::new(|model: &ImageGpt<B::InnerBackend>| {
            Ok(classify::score(model, val, val_labels, config.batch, |_| {})?.accuracy)
        }),
        higher_is_better: true,
        patience: Some(config.patience),
        keep_best: true,
    };
    let outcome = run_loop::run_loop(
        run,
        &config.loop_config(val.len(), run.is_some()),
        start,
        TrainData::InMemory {
            sequences: train,
            labels: Some(train_labels),
        },
        Some(judge),
        |event| match event {
            Event::Step {
                step,
                generative,
                classification,
                ..
            } => on_event(FinetuneEvent::Step {
                step,
                generative,
                classification: classification.unwrap_or(f64::NAN),
            }),
            Event::Validation { step, score, best } => on_event(FinetuneEvent::Validation {
                step,
                accuracy: score,
                best,
            }),
            Event::Checkpoint { step } => on_event(FinetuneEvent::Checkpoint { step }),
        },
    )?;
    let (best_val_accuracy, best_step) = outcome
        .best
        .ok_or_else(|| Error::invalid("fine-tuning stopped before its first held-out check"))?;
    Ok(Finetuned {
        stored: outcome.stored,
        best_step,
        best_val_accuracy,
        steps: outcome.state.step,
        images: (train.len(), val.len()),
        seconds: outcome.state.seconds,
        device: outcome.state.device.unwrap_or_default(),
    })
}

/// One name per class of a labelled set: `classes` as the dataset names them, `class N` beyond them,
/// as many as the largest label needs. Fine-tuning needs at least two.
pub fn class_names(labels: &[usize], classes: &[String]) -> Result<Vec<String>> {
    let count = labels.iter().max().map_or(0, |&l| l + 1).max(classes.len());
    if count < 2 {
        return Err(Error::invalid(
            "fine-tuning needs labelled training images of at least 2 classes",
        ));
    }
    Ok((0..count)
        .map(|i| {
            classes
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("class {i}"))
        })
        .collect())
}

/// How the fine-tuned model was made and how it scored on test, for the cards.
pub struct Outcome<'a> {
    pub record: FinetuneRecord,
    pub scores: Scores,
    pub test_data: &'a str,
}

impl Outcome<'_> {
    /// Writes the fine-tuned model's card into `output` (named after the folder), made from its
    /// parent's `card`. With `parent` (the parent's folder and the card it was loaded with), the
    /// result also goes into the parent's card as it is on disk now, as `igpt probe --record`
    /// stores its probes.
    pub fn save_cards(
        &self,
        card: ModelCard,
        output: &Path,
        parent: Option<(&Path, ModelCard)>,
    ) -> Result<()> {
        let name = output
            .file_name()
            .map_or("igpt".into(), |n| n.to_string_lossy().into_owned());
        self.card(card, name).save(output)?;
        if let Some((dir, loaded)) = parent {
            let mut parent_card = ModelCard::read_or(dir, || loaded)?;
            parent_card.finetuned = Some(self.parent_entry(&output.display().to_string()));
            parent_card.save(dir)?;
        }
        Ok(())
    }

    /// The fine-tuned model's card: its parent's `card` (name, data, training history), without the
    /// parent's probes and scores, with its own test scores and how it was fine-tuned.
    fn card(&self, mut card: ModelCard, name: String) -> ModelCard {
        card.name = Some(name);
        card.probe = None;
        card.finetuned = None;
        card.check = None; // the parent's pinned score; `igpt eval --record` pins this model's
        let metrics = [
            ("test_accuracy", self.scores.accuracy),
            ("test_bits_per_token", self.scores.bits_per_token),
            // In nats too, as export writes it, so no parent figure in nats contradicts these bits.
            (
                "test_nll_nats",
                self.scores.bits_per_token * std::f64::consts::LN_2,
            ),
            ("test_images", self.scores.count as f64),
        ];
        card.metrics = metrics.map(|(k, v)| (k.to_string(), v)).into();
        card.test_data = Some(self.test_data.to_string());
        card.finetune = Some(self.record.clone());
        card
    }

    /// What the parent's card records of it (`igpt finetune --record`), the fine-tuned model
    /// being written to `output`.
    fn parent_entry(&self, output: &str) -> FinetunedRecord {
        FinetunedRecord {
            output: output.to_string(),
            test_accuracy: self.scores.accuracy,
            test_bits_per_token: self.scores.bits_per_token,
            test_images: self.scores.count,
            test_data: self.test_data.to_string(),
            finetune: self.record.clone(),
        }
    }
}

/// Labelled token sequences: (sequences, labels).
pub type LabelledIds = (Vec<Vec<u16>>, Vec<usize>);

/// Splits labelled images into (fit, held out): a seeded random `fraction` of them (at least one) is
/// held out to choose when to stop.
pub fn hold_out(
    ids: &[Vec<u16>],
    labels: &[usize],
    fraction: f64,
    seed: u64,
) -> Result<(LabelledIds, LabelledIds)> {
    if !(fraction > 0.0 && fraction < 1.0) {
        return Err(Error::invalid(format!(
            "the held-out share must be between 0 and 1, not {fraction}"
        )));
    }
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let held = ((ids.len() as f64 * fraction).round() as usize).clamp(1, ids.len().max(1));
    let (fit, val) = order.split_at(ids.len().saturating_sub(held));
    let pick = |rows: &[usize]| rows.iter().map(|&i| (ids[i].clone(), labels[i])).unzip();
    Ok((pick(fit), pick(val)))
}
