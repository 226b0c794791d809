//! Fine-tuning (the paper's §3.3): a classification head on the average-pooled final features, and the
//! whole network trained on L_gen + L_clf with the same step as pretraining, stopped early on a held-out
//! slice of the training images (never on test). The result still generates, and also classifies.

use std::ops::ControlFlow;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::ElementConversion;
use burn::tensor::backend::AutodiffBackend;
use serde::Serialize;

use crate::augment::Augment;
use crate::classify;
use crate::error::{Error, Result};
use crate::model::Workload;
use crate::precision::Precision;
use crate::step::{self, Batch, adam};
use crate::store::{StoredModel, with_stable_ids};
use crate::train::{Batches, schedule};

/// How a fine-tuning run goes.
#[derive(Clone, Debug, Serialize)]
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
    pub precision: Precision,
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
}

/// A fine-tuned model and how it got there.
pub struct Finetuned<B: AutodiffBackend> {
    /// The weights of the best held-out check.
    pub stored: StoredModel<B>,
    pub best_step: usize,
    pub best_val_accuracy: f64,
    /// Steps taken before stopping.
    pub steps: usize,
    pub seconds: f64,
}

/// Fine-tunes `start` (which must have a classification head, see
/// [`crate::ImageGpt::with_classifier`]) on `train` with `train_labels`, checking accuracy on `val`.
pub fn finetune<B: AutodiffBackend>(
    start: StoredModel<B>,
    (train, train_labels): (&[Vec<u16>], &[usize]),
    (val, val_labels): (&[Vec<u16>], &[usize]),
    config: &FinetuneConfig,
    mut on_event: impl FnMut(FinetuneEvent) -> ControlFlow<()>,
) -> Result<Finetuned<B>> {
    let classes = start.model.n_labels();
    if classes == 0 {
        return Err(Error::invalid("fine-tuning needs a classification head"));
    }
    if train.is_empty() || val.is_empty() {
        return Err(Error::invalid(
            "fine-tuning needs training images and held-out images",
        ));
    }
    if let Some(&bad) = train_labels
        .iter()
        .chain(val_labels)
        .find(|&&l| l >= classes)
    {
        return Err(Error::invalid(format!(
            "label {bad} is outside the head's {classes} classes"
        )));
    }
    if config.batch == 0 || config.steps == 0 || config.eval_every == 0 {
        return Err(Error::invalid(
            "batch, steps and eval_every must be at least 1",
        ));
    }
    start.config.check_batch(config.batch, Workload::Training)?;
    let began = Instant::now();
    let device = start.model.device();
    let k = start.config.n_colors;
    let mut stored = start;
    config.precision.check_supported::<B>(&device)?;
    let mut model = with_stable_ids(stored.model.clone()).with_precision(config.precision);
    let mut optimizer = adam();
    let mut batches = Batches::new(
        train,
        stored.card.image_width,
        config.seed,
        Augment::default(),
    );
    let mut best: Option<(f64, usize)> = None;
    let mut stale = 0;
    let mut step_count = 0;
    for step in 0..config.steps {
        let lr = schedule(config.lr, config.warmup, config.steps, step);
        let (sequences, indices) = batches.batch(step, config.batch);
        let labels: Vec<usize> = indices.iter().map(|&i| train_labels[i]).collect();
        let batch = Batch::new(&sequences, Some(&labels), k, &device);
        let out;
        (model, out) = step::step(model, &mut optimizer, &batch, lr, config.grad_clip);
        step_count = step + 1;
        if step_count % config.eval_every != 0 && step_count != config.steps {
            continue;
        }
        let generative: f64 = out.losses.generative.into_scalar().elem();
        let classification: f64 = out
            .losses
            .classification
            .expect("labelled batch, model with a head")
            .into_scalar()
            .elem();
        if !generative.is_finite() || !classification.is_finite() {
            return Err(Error::invalid(format!(
                "the loss became non-finite at step {step_count} (try a lower --lr)"
            )));
        }
        let mut flow = on_event(FinetuneEvent::Step {
            step: step_count,
            generative,
            classification,
        });
        let accuracy =
            classify::score(&model.valid(), val, val_labels, config.batch, |_| {})?.accuracy;
        let improved = best.is_none_or(|(a, _)| accuracy > a);
        if improved {
            best = Some((accuracy, step_count));
            stored.model = model.clone().with_precision(Precision::F32);
            stale = 0;
        } else {
            stale += 1;
        }
        let validated = on_event(FinetuneEvent::Validation {
            step: step_count,
            accuracy,
            best: improved,
        });
        if validated.is_break() {
            flow = validated;
        }
        if flow.is_break() || stale >= config.patience.max(1) {
            break;
        }
    }
    let (best_val_accuracy, best_step) =
        best.ok_or_else(|| Error::invalid("fine-tuning stopped before its first held-out check"))?;
    Ok(Finetuned {
        stored,
        best_step,
        best_val_accuracy,
        steps: step_count,
        seconds: began.elapsed().as_secs_f64(),
    })
}
