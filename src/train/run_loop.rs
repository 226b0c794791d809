//! The one loop that pretraining and fine-tuning share: batches, steps, checks, checkpoints.

use std::ops::{ControlFlow, Range};
use std::path::Path;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::ElementConversion;
use burn::tensor::backend::{AutodiffBackend, Backend, Device as _, DeviceId};

use super::batches::{Batches, TrainData};
use super::config::TrainConfig;
use super::run::{self, Checkpoint, LogRow, RunState};
use super::step::{self, Batch, adam};
use crate::data::augment::Augment;
use crate::error::{Error, Result};
use crate::eval::sequence_nll;
use crate::model::objective::{MaskUse, bert_mask};
use crate::model::precision::Precision;
use crate::model::{ImageGpt, Workload};
use crate::store::{StoredModel, with_stable_ids};

/// What the loop reports as it goes (the CLI draws progress from it).
pub enum Event {
    Step {
        step: usize,
        /// What is minimised (nats).
        loss: f64,
        /// L_gen (nats per token).
        generative: f64,
        /// L_clf (nats), when the run is labelled.
        classification: Option<f64>,
        lr: f64,
        grad_norm: f64,
        tokens_per_second: f64,
    },
    Validation {
        step: usize,
        /// The [`Judge`]'s score: bits/token when pretraining, accuracy when fine-tuning.
        score: f64,
        /// Whether it is the best score of the run so far.
        best: bool,
    },
    Checkpoint {
        step: usize,
    },
}

/// Scores a model on images it does not train on.
pub type Scorer<'a, B> = Box<dyn FnMut(&ImageGpt<B>) -> Result<f64> + 'a>;

/// How a run judges its model at each evaluation, and what it does with the verdict.
pub struct Judge<'a, B: Backend> {
    pub score: Scorer<'a, B>,
    /// Accuracy improves upwards, bits/token downwards.
    pub higher_is_better: bool,
    /// Stop after this many evaluations in a row without a better score (early stopping).
    pub patience: Option<usize>,
    /// Hand back the weights of the best evaluation instead of the last step's.
    pub keep_best: bool,
}

/// Where the loop stopped: the model (the best evaluation's, if the judge keeps the best), the run's
/// state, and the best evaluation as (score, step), over every session of a resumed run.
pub struct Outcome<B: AutodiffBackend> {
    pub stored: StoredModel<B>,
    pub state: RunState,
    pub best: Option<(f64, usize)>,
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

/// Pretrains on `train` (token sequences of the model's length, in memory or streamed from shards),
/// validating bits/token on `val`,
/// writing the run folder `run` (see [`crate::train::run`]). `on_event` may stop the run early by returning
/// `Break` (e.g. after a checkpoint). Returns the model and state where it stopped.
pub fn train<'a, B: AutodiffBackend>(
    run: &Path,
    config: &TrainConfig,
    start: Start<B>,
    train: impl Into<TrainData<'a>>,
    val: &[Vec<u16>],
    on_event: impl FnMut(Event) -> ControlFlow<()>,
) -> Result<(StoredModel<B>, RunState)> {
    let n = start.stored().config.n_positions;
    if val.iter().any(|s| s.len() != n) {
        return Err(Error::invalid(format!(
            "training needs sequences of exactly {n} tokens (the model's context)"
        )));
    }
    let subset = &val[..config.eval_images.max(1).min(val.len())];
    let judge = (!val.is_empty()).then(|| Judge {
        score: Box::new(|model: &ImageGpt<B::InnerBackend>| {
            Ok(sequence_nll(model, subset, config.batch, |_| {})?.bits_per_token)
        }),
        higher_is_better: false,
        patience: None,
        keep_best: false,
    });
    let out = run_loop(Some(run), config, start, train.into(), judge, on_event)?;
    Ok((out.stored, out.state))
}

/// The one training loop, for pretraining and fine-tuning alike: the schedule, the batches of each
/// step (with their labels when the data has them, which adds L_clf), [`step::step`], reading the
/// loss back when logging, evaluating with `judge`, and, when `run` is a run folder, the log and
/// atomic checkpoints that resume exactly.
pub(crate) fn run_loop<B: AutodiffBackend>(
    run: Option<&Path>,
    config: &TrainConfig,
    start: Start<B>,
    train: TrainData<'_>,
    judge: Option<Judge<'_, B::InnerBackend>>,
    mut on_event: impl FnMut(Event) -> ControlFlow<()>,
) -> Result<Outcome<B>> {
    config.validate()?;
    start
        .stored()
        .config
        .check_batch(config.batch, Workload::Training)?;
    let n = start.stored().config.n_positions;
    let wrong_length = || {
        Error::invalid(format!(
            "training needs sequences of exactly {n} tokens (the model's context)"
        ))
    };
    if train.is_empty() {
        return Err(Error::invalid("there are no training images"));
    }
    if let TrainData::InMemory { sequences, labels } = &train {
        if sequences.iter().any(|s| s.len() != n) {
            return Err(wrong_length());
        }
        if let Some(labels) = labels {
            if labels.len() != sequences.len() {
                return Err(Error::invalid("one label per training image is needed"));
            }
            check_labels(labels, start.stored().model.n_labels())?;
        }
    }
    let device = start.stored().model.device();
    config.precision.check_supported::<B>(&device)?;
    let replicas = replica_devices::<B>(&config.devices, &device, config.batch)?;
    #[cfg(feature = "collective")]
    let node = match &config.nodes {
        Some(nodes) => Some(join_nodes::<B>(nodes, &replicas, config.batch, &device)?),
        None => None,
    };
    #[cfg(not(feature = "collective"))]
    let node: Option<()> = match config.nodes {
        Some(_) => {
            return Err(Error::invalid(
                "multi-node training needs igpt built with the `collective` feature",
            ));
        }
        None => None,
    };
    // Across processes, node 0 alone validates, logs and checkpoints; the others train in step.
    let (run, mut judge) = match &config.nodes {
        Some(nodes) if nodes.rank != 0 => (None, None),
        _ => (run, judge),
    };
    let (mut stored, mut optimizer, mut state) = match start {
        Start::Resume(c) => (c.stored, c.optimizer, c.state),
        Start::Model(mut stored) => {
            if let Some(run) = run {
                run::create(run, config)?;
            }
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
    let objective = stored.config.objective;

    while state.step < config.steps {
        let lr = config.learning_rate_after(state.step, state.rewarm_from);
        let (sequences, batch_labels) = batches.batch(state.step, config.batch)?;
        if sequences.iter().any(|s| s.len() != n) {
            return Err(wrong_length());
        }
        let batch_labels = batch_labels.as_deref();
        // Keyed by the step, so a resumed run hides what the uninterrupted one would.
        let masked = objective.mask_prob().map(|p| {
            let key = (MaskUse::Training, config.seed, state.step as u64);
            bert_mask(p, key, 0..sequences.len() as u64, n)
        });
        // Rows `rows` of the step's batch on `device` (all of them on one device; a shard of them
        // on each replica's).
        let shard = |rows: Range<usize>, device: &B::Device| {
            let (sequences, labels) = (
                &sequences[rows.clone()],
                batch_labels.map(|l| &l[rows.clone()]),
            );
            let mut batch = match &masked {
                None => Batch::new(sequences, labels, k, device),
                Some(masked) => Batch::bert(sequences, labels, &masked[rows], device),
            };
            batch.classification_only = config.classification_only;
            batch
        };
        let out;
        match (&node, replicas.as_slice()) {
            #[cfg(feature = "collective")]
            (Some(node), _) => {
                let rows = node.rows(sequences.len());
                let batch = shard(rows.clone(), &device);
                (model, out) = super::nodes::step(
                    model,
                    &mut optimizer,
                    &batch,
                    (rows, sequences.len()),
                    node,
                    lr,
                    config.grad_clip,
                )?;
            }
            (_, [] | [_]) => {
                let batch = shard(0..sequences.len(), &device);
                (model, out) = step::step(model, &mut optimizer, &batch, lr, config.grad_clip);
            }
            #[cfg(feature = "collective")]
            (_, devices) => {
                let rows = super::parallel::shards(sequences.len(), devices.len());
                let batches = rows
                    .iter()
                    .zip(devices)
                    .map(|(r, d)| shard(r.clone(), d))
                    .collect();
                (model, out) = super::parallel::step(
                    model,
                    &mut optimizer,
                    batches,
                    &rows,
                    devices,
                    lr,
                    config.grad_clip,
                )?;
            }
            #[cfg(not(feature = "collective"))]
            _ => unreachable!("checked before the loop"),
        }
        state.step += 1;
        window.1 += config.batch * n;

        // Checkpoint steps always read the loss, so a NaN is caught before it could be saved.
        let last = state.step == config.steps;
        let keeping = run.is_some() && config.keep_every > 0 && state.step % config.keep_every == 0;
        let checkpointing =
            run.is_some() && (keeping || state.step % config.checkpoint_every == 0 || last);
        let validating = judge.is_some() && (state.step % config.eval_every == 0 || last);
        if !checkpointing && !validating && state.step % config.log_every != 0 {
            continue;
        }
        let loss: f64 = out.losses.total.into_scalar().elem();
        let generative: f64 = out.losses.generative.into_scalar().elem();
        let classification: Option<f64> = out.losses.classification.map(|c| c.into_scalar().elem());
        let grad_norm: f64 = out.grad_norm.into_scalar().elem();
        state.seconds += session.elapsed().as_secs_f64();
        session = Instant::now();
        if !loss.is_finite() {
            let kept = match run {
                Some(run) => format!(
                    "; the last good checkpoint (step {last_good_checkpoint}) is kept in {}",
                    run::checkpoint_dir(run).display()
                ),
                None => " (try a lower --lr)".into(),
            };
            return Err(Error::invalid(format!(
                "the loss became {loss} at step {}{kept}",
                state.step
            )));
        }
        let tokens_per_second = window.1 as f64 / window.0.elapsed().as_secs_f64().max(1e-9);
        state.last_loss = Some(loss);
        let mut flow = on_event(Event::Step {
            step: state.step,
            loss,
            generative,
            classification,
            lr,
            grad_norm,
            tokens_per_second,
        });
        let mut val_score = None;
        if let (true, Some(judge)) = (validating, judge.as_mut()) {
            let score = (judge.score)(&model.valid())?;
            (val_score, state.last_val_bits) = (Some(score), Some(score));
            let improved = state.best.is_none_or(|(b, _)| {
                if judge.higher_is_better {
                    score > b
                } else {
                    score < b
                }
            });
            if improved {
                state.best = Some((score, state.step));
                state.stale = 0;
                if judge.keep_best {
                    stored.model = model.clone().with_precision(Precision::F32);
                    // A run folder's checkpoints hold the latest weights: the best go beside them.
                    if let Some(run) = run {
                        run::save_best(run, &stored, &state)?;
                    }
                }
            } else {
                state.stale += 1;
            }
            let validated = on_event(Event::Validation {
                step: state.step,
                score,
                best: improved,
            });
            if validated.is_break() || judge.patience.is_some_and(|p| state.stale >= p.max(1)) {
                flow = ControlFlow::Break(());
            }
        }
        if let Some(run) = run {
            run::append_log(
                run,
                &LogRow {
                    step: state.step,
                    lr,
                    loss,
                    grad_norm,
                    tokens_per_second,
                    val_bits_per_token: val_score,
                    seconds: state.seconds,
                },
            )?;
        }
        if flow.is_break() {
            break;
        }
        if let (true, Some(run)) = (checkpointing, run) {
            stored.model = model.clone().with_precision(Precision::F32);
            state.seconds += session.elapsed().as_secs_f64();
            session = Instant::now();
            Checkpoint::save(run, &stored, &optimizer, &state)?;
            last_good_checkpoint = state.step;
            if keeping {
                run::save_milestone(run, &stored, &state)?;
            }
            if on_event(Event::Checkpoint { step: state.step }).is_break() {
                break;
            }
        }
        // The next report's tokens/s counts the training steps after this one, not this step's
        // check or checkpoint.
        window = (Instant::now(), 0);
    }
    state.seconds += session.elapsed().as_secs_f64();
    let keep_best = judge.as_ref().is_some_and(|j| j.keep_best);
    match (keep_best, run, state.best) {
        (false, _, _) => stored.model = model.with_precision(Precision::F32),
        // The best may come from an earlier session of the run, and a checkpoint since has put the
        // latest weights in `stored`: the run folder's copy is the one to hand back.
        (true, Some(run), Some((_, step))) => {
            stored.model = run::load_best::<B>(run, step, &device)?.model
        }
        (true, _, _) => {}
    }
    Ok(Outcome {
        best: state.best,
        stored,
        state,
    })
}

/// Labels are class indices of the model's classification head (`classes` wide, 0 without one).
pub(crate) fn check_labels(labels: &[usize], classes: usize) -> Result<()> {
    if classes == 0 {
        return Err(Error::invalid(
            "labelled images need a classification head (ImageGpt::with_classifier)",
        ));
    }
    match labels.iter().find(|&&l| l >= classes) {
        Some(bad) => Err(Error::invalid(format!(
            "label {bad} is outside the head's {classes} classes"
        ))),
        None => Ok(()),
    }
}

/// Joins a multi-node run (one device per node, at least one image of each batch per node).
#[cfg(feature = "collective")]
fn join_nodes<B: AutodiffBackend>(
    nodes: &super::config::Nodes,
    replicas: &[B::Device],
    batch: usize,
    device: &B::Device,
) -> Result<super::nodes::NodeSession<B::InnerBackend>> {
    if replicas.len() > 1 {
        return Err(Error::invalid(
            "--nodes trains one device per process: give each node one device, not --devices",
        ));
    }
    if nodes.count < 2 || nodes.rank >= nodes.count {
        return Err(Error::invalid(format!(
            "--node-rank {} of --nodes {}: there must be at least 2 nodes, ranked 0 to {}",
            nodes.rank,
            nodes.count,
            nodes.count.saturating_sub(1)
        )));
    }
    if nodes.count as usize > batch {
        return Err(Error::invalid(format!(
            "{} nodes cannot share a batch of {batch}: each needs at least one image",
            nodes.count
        )));
    }
    super::nodes::NodeSession::join(nodes, device)
}

/// The devices of a data-parallel run: `indices` of the model's device type (`device`), each given
/// at least one row of every `batch`.
fn replica_devices<B: Backend>(
    indices: &[u16],
    device: &B::Device,
    batch: usize,
) -> Result<Vec<B::Device>> {
    if indices.len() > 1 && cfg!(not(feature = "collective")) {
        return Err(Error::invalid(
            "data-parallel training needs igpt built with the `collective` feature",
        ));
    }
    if indices.len() > batch {
        return Err(Error::invalid(format!(
            "{} devices cannot share a batch of {batch}: each needs at least one image",
            indices.len()
        )));
    }
    let kind = device.to_id().type_id;
    Ok(indices
        .iter()
        .map(|&index| B::Device::from_id(DeviceId::new(kind, index)))
        .collect())
}
