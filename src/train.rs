//! Training: Adam (β = 0.9, 0.95, no weight decay), linear warmup then cosine decay to 0, global-norm
//! gradient clipping, periodic validation, and atomic checkpoints that resume exactly.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::{Adam, AdamConfig, GradientsParams, Optimizer, adaptor::OptimizerAdaptor};
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor};
use rand::seq::SliceRandom;
use rand::{SeedableRng, rngs::ChaCha8Rng};
use serde::{Deserialize, Serialize};

use crate::augment::Augment;
use crate::error::{Error, Result, read_file, write_file_atomic};
use crate::eval::{inputs_and_targets, sequence_nll, target_log_probs};
use crate::model::ImageGpt;
use crate::precision::Precision;
use crate::store::{self, StoredModel, WeightPrecision, with_stable_ids};

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
        if step < self.warmup {
            return self.lr * (step + 1) as f64 / self.warmup as f64;
        }
        let span = self.steps.saturating_sub(self.warmup).max(1) as f64;
        let progress = ((step - self.warmup) as f64 / span).min(1.0);
        self.lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

/// Where a run stands; saved in each checkpoint.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct RunState {
    /// Steps completed.
    pub step: usize,
    /// Training seconds so far, across resumes.
    pub seconds: f64,
    pub last_loss: Option<f64>,
    pub last_val_bits: Option<f64>,
    /// The backend and device of the latest training session, e.g. `flex Cpu`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
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

    /// The sequences of step `step` (a shuffled pass over the data per epoch).
    pub fn batch(&mut self, step: usize, size: usize) -> Vec<Vec<u16>> {
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
                seq
            })
            .collect()
    }
}

type Adaptor<B> = OptimizerAdaptor<Adam, ImageGpt<B>, B>;

/// The checkpoint folder of a run, and the files beside the model directory inside it.
pub fn checkpoint_dir(run: &Path) -> PathBuf {
    run.join("checkpoint")
}
const OPTIMIZER_FILE: &str = "optimizer.mpk";
const STATE_FILE: &str = "state.json";
const CONFIG_FILE: &str = "train.json";
const LOG_FILE: &str = "log.csv";

/// Reads a run's saved configuration (for `--resume`).
pub fn read_config(run: &Path) -> Result<TrainConfig> {
    let path = run.join(CONFIG_FILE);
    serde_json::from_slice(&read_file(&path)?).map_err(|e| Error::format(path, e.to_string()))
}

/// Reads the state saved with a run's checkpoint.
pub fn read_state(run: &Path) -> Result<RunState> {
    let path = checkpoint_dir(run).join(STATE_FILE);
    serde_json::from_slice(&read_file(&path)?).map_err(|e| Error::format(path, e.to_string()))
}

/// Trains `start` on `train` (token sequences of the model's length), validating on `val`, writing
/// `RUNDIR/{train.json, log.csv, checkpoint/}`. With `resume`, continues from the run's checkpoint
/// (and ignores `start`'s weights). `on_event` may stop the run early by returning `Break` (e.g. after
/// a checkpoint). Returns the model and state where it stopped.
pub fn train<B: AutodiffBackend>(
    run: &Path,
    config: &TrainConfig,
    start: StoredModel<B>,
    resume: bool,
    train: &[Vec<u16>],
    val: &[Vec<u16>],
    mut on_event: impl FnMut(Event) -> ControlFlow<()>,
) -> Result<(StoredModel<B>, RunState)> {
    config.validate()?;
    let n = start.config.n_positions;
    if train.is_empty() || train.iter().chain(val).any(|s| s.len() != n) {
        return Err(Error::invalid(format!(
            "training needs sequences of exactly {n} tokens (the model's context)"
        )));
    }
    std::fs::create_dir_all(run).map_err(|e| Error::io(run, e))?;
    let device = start.model.device();
    config.precision.check_supported::<B>(&device)?;
    let adam = AdamConfig::new().with_beta_1(0.9).with_beta_2(0.95);
    let mut optimizer: Adaptor<B> = adam.init();
    let (mut stored, mut state) = if resume {
        let ckpt = checkpoint_dir(run);
        let stored = store::load_dir::<B>(&ckpt, &device)?;
        let bytes = read_file(&ckpt.join(OPTIMIZER_FILE))?;
        let record = NamedMpkBytesRecorder::<FullPrecisionSettings>::default()
            .load(bytes, &device)
            .map_err(|e| Error::format(ckpt.join(OPTIMIZER_FILE), e.to_string()))?;
        optimizer = optimizer.load_record(record);
        (stored, read_state(run)?)
    } else {
        let config_json = serde_json::to_string_pretty(config).expect("plain data serialises");
        write_file_atomic(&run.join(CONFIG_FILE), config_json.as_bytes())?;
        std::fs::write(
            run.join(LOG_FILE),
            "step,lr,loss,bits_per_token,grad_norm,tokens_per_second,val_bits_per_token,seconds\n",
        )
        .map_err(|e| Error::io(run.join(LOG_FILE), e))?;
        let mut stored = start;
        stored.model = with_stable_ids(stored.model);
        (stored, RunState::default())
    };
    // The inner backend's name ("flex", "cuda", ...): every training run is autodiff over one.
    state.device = Some(format!(
        "{} {:?}",
        <B::InnerBackend as Backend>::name(&device),
        device
    ));
    let width = stored.card.image_width;
    let augment = Augment {
        flip: config.flip,
        crop: config.crop,
    };
    let mut batches = Batches::new(train, width, config.seed, augment);
    let mut model = stored.model.clone().with_precision(config.precision);
    let mut last_good_checkpoint = state.step;
    let mut window = (Instant::now(), 0usize); // throughput since the last log line
    let mut session = Instant::now();
    let k = stored.config.n_colors;

    while state.step < config.steps {
        let step = state.step;
        let lr = config.learning_rate(step);
        let seqs = batches.batch(step, config.batch);
        let (inputs, targets) = inputs_and_targets::<B>(seqs.iter().map(Vec::as_slice), k, &device);
        let loss = target_log_probs(model.forward(inputs), targets)
            .mean()
            .neg();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let (grads, grad_norm) = clip_global_norm(&model, grads, config.grad_clip);
        model = optimizer.step(lr, model, grads);
        state.step += 1;
        window.1 += config.batch * n;

        // Checkpoint steps always read the loss, so a NaN is caught before it could be saved.
        let checkpointing = state.step % config.checkpoint_every == 0 || state.step == config.steps;
        let logging = checkpointing || state.step % config.log_every == 0;
        if logging {
            let loss: f64 = loss.into_scalar().elem();
            let grad_norm: f64 = grad_norm.into_scalar().elem();
            state.seconds += session.elapsed().as_secs_f64();
            session = Instant::now();
            if !loss.is_finite() {
                return Err(Error::invalid(format!(
                    "the loss became {loss} at step {}; the last good checkpoint (step {last_good_checkpoint}) is kept in {}",
                    state.step,
                    checkpoint_dir(run).display()
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
            if !val.is_empty()
                && (state.step % config.eval_every == 0 || state.step == config.steps)
            {
                let subset = &val[..config.eval_images.clamp(1, val.len())];
                let nll = sequence_nll(&model.valid(), subset, config.batch, |_| {})?;
                val_bits = Some(nll.bits_per_token);
                state.last_val_bits = val_bits;
                let validated = on_event(Event::Validation {
                    step: state.step,
                    bits_per_token: nll.bits_per_token,
                });
                if validated.is_break() {
                    flow = validated;
                }
            }
            append_log(
                run,
                &state,
                lr,
                loss,
                grad_norm,
                tokens_per_second,
                val_bits,
            )?;
            if flow.is_break() {
                break;
            }
        }
        if checkpointing {
            stored.model = model.clone().with_precision(Precision::F32);
            state.seconds += session.elapsed().as_secs_f64();
            session = Instant::now();
            save_checkpoint(run, &stored, &optimizer, &state)?;
            last_good_checkpoint = state.step;
            if on_event(Event::Checkpoint { step: state.step }).is_break() {
                break;
            }
        }
    }
    stored.model = model.with_precision(Precision::F32);
    Ok((stored, state))
}

fn append_log(
    run: &Path,
    state: &RunState,
    lr: f64,
    loss: f64,
    grad_norm: f64,
    tokens_per_second: f64,
    val_bits: Option<f64>,
) -> Result<()> {
    use std::io::Write;
    let path = run.join(LOG_FILE);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    let val = val_bits.map_or(String::new(), |v| format!("{v:.6}"));
    writeln!(
        file,
        "{},{lr:.6e},{loss:.6},{:.6},{grad_norm:.4},{tokens_per_second:.0},{val},{:.1}",
        state.step,
        loss / std::f64::consts::LN_2,
        state.seconds
    )
    .map_err(|e| Error::io(&path, e))
}

/// Writes `checkpoint.new/` completely, then swaps it in for `checkpoint/`: a crash at any point
/// leaves one whole checkpoint (the old one, in `checkpoint.old/` at worst).
fn save_checkpoint<B: AutodiffBackend>(
    run: &Path,
    stored: &StoredModel<B>,
    optimizer: &Adaptor<B>,
    state: &RunState,
) -> Result<()> {
    let (current, fresh, old) = (
        checkpoint_dir(run),
        run.join("checkpoint.new"),
        run.join("checkpoint.old"),
    );
    let _ = std::fs::remove_dir_all(&fresh);
    stored.save_dir(&fresh, WeightPrecision::F32)?;
    let optimizer_bytes = NamedMpkBytesRecorder::<FullPrecisionSettings>::default()
        .record(optimizer.to_record(), ())
        .map_err(|e| Error::invalid(format!("cannot serialise the optimizer: {e}")))?;
    write_file_atomic(&fresh.join(OPTIMIZER_FILE), &optimizer_bytes)?;
    let state_json = serde_json::to_string_pretty(state).expect("plain data serialises");
    write_file_atomic(&fresh.join(STATE_FILE), state_json.as_bytes())?;
    let _ = std::fs::remove_dir_all(&old);
    if current.exists() {
        std::fs::rename(&current, &old).map_err(|e| Error::io(&current, e))?;
    }
    std::fs::rename(&fresh, &current).map_err(|e| Error::io(&fresh, e))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// Scales all gradients together so their global L2 norm is at most `max_norm` (as PyTorch's
/// `clip_grad_norm_`; Burn's own clipping works per tensor). Stays on the device: returns the norm as a
/// tensor, read only when logging.
fn clip_global_norm<B: AutodiffBackend>(
    model: &ImageGpt<B>,
    mut grads: GradientsParams,
    max_norm: f64,
) -> (GradientsParams, Tensor<B::InnerBackend, 1>) {
    struct SumSquares<'a, B: AutodiffBackend> {
        grads: &'a GradientsParams,
        total: Option<Tensor<B::InnerBackend, 1>>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for SumSquares<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
                let s = g.square().sum();
                self.total = Some(match self.total.take() {
                    Some(t) => t + s,
                    None => s,
                });
            }
        }
    }
    struct Scale<'a, B: AutodiffBackend> {
        grads: &'a mut GradientsParams,
        factor: Tensor<B::InnerBackend, 1>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
                let factor = self.factor.clone().reshape([1; D]);
                self.grads.register(param.id, g * factor);
            }
        }
    }
    let mut sum = SumSquares::<B> {
        grads: &grads,
        total: None,
    };
    model.visit(&mut sum);
    let device = model.device();
    let norm = sum
        .total
        .unwrap_or_else(|| Tensor::zeros([1], &device))
        .sqrt();
    let factor = (norm.clone() + 1e-6)
        .recip()
        .mul_scalar(max_norm)
        .clamp_max(1.0);
    model.visit(&mut Scale::<B> {
        grads: &mut grads,
        factor,
    });
    (grads, norm)
}
