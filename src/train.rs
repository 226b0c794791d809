//! Training: Adam (β = 0.9, 0.95, no weight decay), linear warmup then cosine decay to 0, global-norm
//! gradient clipping, periodic validation, and atomic checkpoints that resume exactly.

use std::ops::ControlFlow;
use std::path::Path;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::ElementConversion;
use burn::tensor::backend::{AutodiffBackend, Backend};
use rand::seq::SliceRandom;
use rand::{SeedableRng, rngs::ChaCha8Rng};
use serde::{Deserialize, Serialize};

use crate::augment::Augment;
use crate::error::{Error, Result};
use crate::eval::sequence_nll;
use crate::model::Workload;
use crate::precision::Precision;
use crate::run::{self, Checkpoint, LogRow, RunState};
use crate::step::{self, Batch, adam};
use crate::store::{StoredModel, with_stable_ids};

/// Everything that defines a run; saved as `RUNDIR/train.json` so `--resume` continues the same run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TrainConfig {
    /// Dataset spec of the training images (recorded in the model card).
    pub data: String,
    /// Only the first `limit` training images, if set.
    pub limit: Option<usize>,
    /// Dataset spec used for validation, if any.
    pub val: Option<String>,
    pub batch: usize,
    pub steps: usize,
    /// Peak learning rate, reached after `warmup` steps.
    pub lr: f64,
    pub warmup: usize,
    /// Largest global gradient norm; larger gradients are scaled down to it.
    pub grad_clip: f64,
    /// Random horizontal flips (label-preserving for natural images).
    pub flip: bool,
    /// Random crops: shifts of up to this many pixels each way, the edge repeated (see [`Augment`]).
    #[serde(default)]
    pub crop: usize,
    pub seed: u64,
    /// Steps between reading the loss back (each read is a device sync).
    pub log_every: usize,
    pub eval_every: usize,
    /// Validation images scored at each evaluation.
    pub eval_images: usize,
    pub checkpoint_every: usize,
    /// How the matrix products compute; the weights and optimizer stay f32 (see [`Precision`]).
    #[serde(default)]
    pub precision: Precision,
    /// The model directory the run started from (fine-tuning), if not a fresh initialisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<String>,
}

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("batch", self.batch),
            ("steps", self.steps),
            ("log_every", self.log_every),
            ("eval_every", self.eval_every),
            ("checkpoint_every", self.checkpoint_every),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(Error::invalid(format!("{name} must be at least 1")));
        }
        let positive = |v: f64| v > 0.0 && v.is_finite();
        if !positive(self.lr) || !positive(self.grad_clip) {
            return Err(Error::invalid(
                "learning rate and gradient clip must be positive",
            ));
        }
        Ok(())
    }

    /// Linear warmup from lr/warmup to lr, then cosine decay to 0 at the last step (the paper's schedule).
    pub fn learning_rate(&self, step: usize) -> f64 {
        schedule(self.lr, self.warmup, self.steps, step)
    }
}

/// The learning rate at `step` of `steps`: linear warmup over `warmup` steps to `peak`, then cosine
/// decay to 0 at the last step.
pub fn schedule(peak: f64, warmup: usize, steps: usize, step: usize) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = steps.saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).min(1.0);
    peak * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// What the loop reports as it goes (the CLI draws progress from it).
pub enum Event {
    Step {
        step: usize,
        loss: f64,
        lr: f64,
        grad_norm: f64,
        tokens_per_second: f64,
    },
    Validation {
        step: usize,
        bits_per_token: f64,
    },
    Checkpoint {
        step: usize,
    },
}

/// Token sequences in a deterministic order: the order and augmentation of every step are a function
/// of (seed, step) alone, so a resumed run sees exactly the batches the uninterrupted one would have.
pub struct Batches<'a> {
    sequences: &'a [Vec<u16>],
    width: usize,
    seed: u64,
    augment: Augment,
    epoch: Option<(usize, Vec<usize>)>,
}

impl<'a> Batches<'a> {
    pub fn new(sequences: &'a [Vec<u16>], width: usize, seed: u64, augment: Augment) -> Self {
        Self {
            sequences,
            width,
            seed,
            augment,
            epoch: None,
        }
    }

    /// The sequences of step `step` (a shuffled pass over the data per epoch), and which of the
    /// data they are (to look up labels).
    pub fn batch(&mut self, step: usize, size: usize) -> (Vec<Vec<u16>>, Vec<usize>) {
        let n = self.sequences.len();
        (step * size..(step + 1) * size)
            .map(|g| {
                let (epoch, pos) = (g / n, g % n);
                if self.epoch.as_ref().is_none_or(|(e, _)| *e != epoch) {
                    let mut order: Vec<usize> = (0..n).collect();
                    order.shuffle(&mut ChaCha8Rng::seed_from_u64(
                        self.seed ^ (epoch as u64) << 32,
                    ));
                    self.epoch = Some((epoch, order));
                }
                let index = self.epoch.as_ref().expect("set above").1[pos];
                let mut seq = self.sequences[index].clone();
                self.augment
                    .apply(&mut seq, self.width, self.seed, g as u64);
                (seq, index)
            })
            .unzip()
    }
}

/// Where a run begins: a model (fresh or another's weights), or a run's own checkpoint.
pub enum Start<B: AutodiffBackend> {
    Model(StoredModel<B>),
    Resume(Checkpoint<B>),
}

impl<B: AutodiffBackend> Start<B> {
    pub fn stored(&self) -> &StoredModel<B> {
        match self {
            Start::Model(stored) => stored,
            Start::Resume(checkpoint) => &checkpoint.stored,
        }
    }
}

/// Trains on `train` (token sequences of the model's length), validating on `val`, writing the run
/// folder `run` (see [`crate::run`]). `on_event` may stop the run early by returning `Break` (e.g.
/// after a checkpoint). Returns the model and state where it stopped.
pub fn train<B: AutodiffBackend>(
    run: &Path,
    config: &TrainConfig,
    start: Start<B>,
    train: &[Vec<u16>],
    val: &[Vec<u16>],
    mut on_event: impl FnMut(Event) -> ControlFlow<()>,
) -> Result<(StoredModel<B>, RunState)> {
    config.validate()?;
    start
        .stored()
        .config
        .check_batch(config.batch, Workload::Training)?;
    let n = start.stored().config.n_positions;
    if train.is_empty() || train.iter().chain(val).any(|s| s.len() != n) {
        return Err(Error::invalid(format!(
            "training needs sequences of exactly {n} tokens (the model's context)"
        )));
    }
    let device = start.stored().model.device();
    config.precision.check_supported::<B>(&device)?;
    let (mut stored, mut optimizer, mut state) = match start {
        Start::Resume(c) => (c.stored, c.optimizer, c.state),
        Start::Model(mut stored) => {
            run::create(run, config)?;
            stored.model = with_stable_ids(stored.model);
            (stored, adam(), RunState::default())
        }
    };
    // The inner backend's name ("flex", "cuda", ...): every training run is autodiff over one.
    state.device = Some(format!(
        "{} {:?}",
        <B::InnerBackend as Backend>::name(&device),
        device
    ));
    let augment = Augment {
        flip: config.flip,
        crop: config.crop,
    };
    let mut batches = Batches::new(train, stored.card.image_width, config.seed, augment);
    let mut model = stored.model.clone().with_precision(config.precision);
    let mut last_good_checkpoint = state.step;
    let mut window = (Instant::now(), 0usize); // throughput since the last log line
    let mut session = Instant::now();
    let k = stored.config.n_colors;

    while state.step < config.steps {
        let lr = config.learning_rate(state.step);
        let (sequences, _) = batches.batch(state.step, config.batch);
        let batch = Batch::new(&sequences, None, k, &device);
        let out;
        (model, out) = step::step(model, &mut optimizer, &batch, lr, config.grad_clip);
        state.step += 1;
        window.1 += config.batch * n;

        // Checkpoint steps always read the loss, so a NaN is caught before it could be saved.
        let checkpointing = state.step % config.checkpoint_every == 0 || state.step == config.steps;
        let validating =
            !val.is_empty() && (state.step % config.eval_every == 0 || state.step == config.steps);
        if !checkpointing && !validating && state.step % config.log_every != 0 {
            continue;
        }
        let loss: f64 = out.losses.total.into_scalar().elem();
        let grad_norm: f64 = out.grad_norm.into_scalar().elem();
        state.seconds += session.elapsed().as_secs_f64();
        session = Instant::now();
        if !loss.is_finite() {
            return Err(Error::invalid(format!(
                "the loss became {loss} at step {}; the last good checkpoint (step {last_good_checkpoint}) is kept in {}",
                state.step,
                run::checkpoint_dir(run).display()
            )));
        }
        let tokens_per_second = window.1 as f64 / window.0.elapsed().as_secs_f64().max(1e-9);
        window = (Instant::now(), 0);
        state.last_loss = Some(loss);
        let mut flow = on_event(Event::Step {
            step: state.step,
            loss,
            lr,
            grad_norm,
            tokens_per_second,
        });
        let mut val_bits = None;
        if validating {
            let subset = &val[..config.eval_images.clamp(1, val.len())];
            let bits = sequence_nll(&model.valid(), subset, config.batch, |_| {})?.bits_per_token;
            (val_bits, state.last_val_bits) = (Some(bits), Some(bits));
            let validated = on_event(Event::Validation {
                step: state.step,
                bits_per_token: bits,
            });
            if validated.is_break() {
                flow = validated;
            }
        }
        run::append_log(
            run,
            &LogRow {
                step: state.step,
                lr,
                loss,
                grad_norm,
                tokens_per_second,
                val_bits_per_token: val_bits,
                seconds: state.seconds,
            },
        )?;
        if flow.is_break() {
            break;
        }
        if checkpointing {
            stored.model = model.clone().with_precision(Precision::F32);
            state.seconds += session.elapsed().as_secs_f64();
            session = Instant::now();
            Checkpoint::save(run, &stored, &optimizer, &state)?;
            last_good_checkpoint = state.step;
            if on_event(Event::Checkpoint { step: state.step }).is_break() {
                break;
            }
        }
    }
    stored.model = model.with_precision(Precision::F32);
    Ok((stored, state))
}
