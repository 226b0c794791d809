//! What defines a run: its settings (saved as `RUNDIR/train.json`) and the learning-rate schedule.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::precision::Precision;

/// Everything that defines a run; saved as `RUNDIR/train.json` so `--resume` continues the same run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TrainConfig {
    /// Dataset spec of the training images (recorded in the model card).
    pub data: String,
    /// Only the first `limit` training images, if set.
    pub limit: Option<usize>,
    /// The last `holdout` of those images are not trained on: they are the validation set when `val`
    /// is not given, so checkpoints are judged without touching the test split.
    #[serde(default)]
    pub holdout: usize,
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
    /// Streamed data (`shards:DIR`): how many examples are shuffled together, the shuffle buffer
    /// (see [`crate::data::stream`]). In-memory data is shuffled whole.
    #[serde(default = "default_shuffle_window")]
    pub shuffle_window: usize,
    /// Random crops: shifts of up to this many pixels each way, the edge repeated (see [`crate::data::augment::Augment`]).
    #[serde(default)]
    pub crop: usize,
    pub seed: u64,
    /// Steps between reading the loss back (each read is a device sync).
    pub log_every: usize,
    pub eval_every: usize,
    /// Validation images scored at each evaluation.
    pub eval_images: usize,
    pub checkpoint_every: usize,
    /// Keep a copy of the model (weights and card, no optimizer) every this many steps in
    /// `RUNDIR/milestones/`, for probing how features change over a run; 0 keeps none.
    #[serde(default)]
    pub keep_every: usize,
    /// How the matrix products compute; the weights and optimizer stay f32 (see [`Precision`]).
    #[serde(default)]
    pub precision: Precision,
    /// Minimise L_clf alone (labelled runs): the from-scratch classifier the paper compares with.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub classification_only: bool,
    /// The model directory the run started from (fine-tuning), if not a fresh initialisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<String>,
    /// Data parallelism: the indices of the devices (of the model's backend) that each step's batch
    /// is split across, one replica each; none or one trains on the model's device alone. Not
    /// saved with the run: it changes nothing but the order of f32 additions, so a run may resume
    /// on another count.
    #[serde(skip)]
    pub devices: Vec<u16>,
    /// Data parallelism across processes (`--nodes`): where this process stands among them. Not
    /// saved either: a run may resume on another number of nodes.
    #[serde(skip)]
    pub nodes: Option<Nodes>,
}

/// One process of a multi-node run (see `train::nodes`): how many there are, which one this is,
/// the coordinator's `HOST:PORT` (node 0 starts it), this node's own `HOST:PORT` for the other
/// nodes to send it tensors, and how long an all-reduce may wait for them.
#[derive(Clone, Debug, PartialEq)]
pub struct Nodes {
    pub count: u32,
    pub rank: u32,
    pub coordinator: String,
    pub address: String,
    pub timeout: std::time::Duration,
}

impl Nodes {
    pub fn coordinator_port(&self) -> Result<u16> {
        port_of(&self.coordinator, "--coordinator")
    }

    pub fn address_port(&self) -> Result<u16> {
        port_of(&self.address, "--node-address")
    }
}

fn port_of(address: &str, option: &str) -> Result<u16> {
    address
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .ok_or_else(|| Error::invalid(format!("{option} {address:?} needs a port: HOST:PORT")))
}

fn default_shuffle_window() -> usize {
    crate::data::stream::DEFAULT_WINDOW
}

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("batch", self.batch),
            ("steps", self.steps),
            ("log_every", self.log_every),
            ("eval_every", self.eval_every),
            ("checkpoint_every", self.checkpoint_every),
            ("shuffle_window", self.shuffle_window),
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

    /// The learning rate at `step` of a run that resumed at `rewarm_from` without the optimizer's
    /// moments: the schedule's, ramped linearly back up over the warmup's length from there, as
    /// Adam's first steps from fresh moments are as large as its first steps of all.
    pub fn learning_rate_after(&self, step: usize, rewarm_from: Option<usize>) -> f64 {
        let ramp = match rewarm_from {
            Some(from) if self.warmup > 0 => {
                ((step.saturating_sub(from) + 1) as f64 / self.warmup as f64).min(1.0)
            }
            _ => 1.0,
        };
        self.learning_rate(step) * ramp
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
