//! One optimisation step, the same for pretraining, fine-tuning and `igpt bench train`, in two halves:
//! [`gradients`] (the paper's L_gen, autoregressive or BERT's, plus L_clf when the batch is labelled,
//! and the backward pass) and
//! [`apply`] (global-norm gradient clipping and Adam). Data-parallel training ([`super::parallel`])
//! all-reduces the gradients of its replicas between them.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{Adam, AdamConfig, GradientsParams, Optimizer, adaptor::OptimizerAdaptor};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Bool, Int, Tensor, TensorData};

use crate::model::objective::mask_tensor;
use crate::model::{ForwardOptions, ImageGpt};
use crate::pixels::tokens::{inputs_and_targets, target_log_probs, token_ids};

/// The optimizer every run uses.
pub type Optim<B> = OptimizerAdaptor<Adam, ImageGpt<B>, B>;

/// Adam as the paper trains iGPT: β1 = 0.9, β2 = 0.95, no weight decay.
pub fn adam<B: AutodiffBackend>() -> Optim<B> {
    AdamConfig::new().with_beta_1(0.9).with_beta_2(0.95).init()
}

/// A batch on the device: the model's inputs (autoregressive: SOS, then all tokens but the last;
/// BERT: the tokens, some hidden), the tokens it must predict, and class labels when fine-tuning.
pub struct Batch<B: Backend> {
    pub inputs: Tensor<B, 2, Int>,
    pub targets: Tensor<B, 2, Int>,
    /// BERT's hidden positions, `[batch, seq]`: their inputs are zeroed and only they are scored.
    pub masked: Option<Tensor<B, 2, Bool>>,
    pub labels: Option<Tensor<B, 1, Int>>,
    /// Minimise L_clf alone (the from-scratch baseline); L_gen is still computed and reported.
    pub classification_only: bool,
}

impl<B: Backend> Batch<B> {
    /// An autoregressive batch. `sequences` are palette ids without SOS, all of one length; `labels`,
    /// if any, one per sequence.
    pub fn new(
        sequences: &[Vec<u16>],
        labels: Option<&[usize]>,
        n_colors: usize,
        device: &B::Device,
    ) -> Self {
        let (inputs, targets) =
            inputs_and_targets::<B>(sequences.iter().map(Vec::as_slice), n_colors, device);
        Self {
            inputs,
            targets,
            masked: None,
            labels: labels.map(|l| label_ids(l, device)),
            classification_only: false,
        }
    }

    /// A BERT batch: the sequences themselves, with `masked` (`[batch][seq]`, from
    /// [`crate::model::objective::bert_mask`]) saying which pixels each one hides.
    pub fn bert(
        sequences: &[Vec<u16>],
        labels: Option<&[usize]>,
        masked: &[Vec<bool>],
        device: &B::Device,
    ) -> Self {
        let ids = token_ids::<B>(sequences.iter().map(Vec::as_slice), device);
        Self {
            inputs: ids.clone(),
            targets: ids,
            masked: Some(mask_tensor(masked, device)),
            labels: labels.map(|l| label_ids(l, device)),
            classification_only: false,
        }
    }
}

fn label_ids<B: Backend>(labels: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
    let ids: Vec<i64> = labels.iter().map(|&c| c as i64).collect();
    Tensor::from_data(TensorData::new(ids, [labels.len()]), device)
}

/// The terms of the objective, each a one-element tensor.
pub struct Losses<B: Backend> {
    /// What is minimised: `generative + classification`.
    pub total: Tensor<B, 1>,
    /// L_gen: mean negative log-likelihood per token (nats); for BERT, per hidden token, averaged per
    /// image first (as OpenAI's code normalises it).
    pub generative: Tensor<B, 1>,
    /// L_clf: mean cross-entropy of the classification head (nats), for labelled batches.
    pub classification: Option<Tensor<B, 1>>,
}

/// The paper's objective from one forward pass: L_gen, plus L_clf (Chen et al. 2020, §3.3: the joint
/// loss works better than L_clf alone) when the batch has labels and the model a head.
pub fn losses<B: Backend>(model: &ImageGpt<B>, batch: &Batch<B>) -> Losses<B> {
    let options = ForwardOptions {
        masked: batch.masked.clone(),
        ..Default::default()
    };
    let normed = model.forward_with(batch.inputs.clone(), options).normed;
    let (logits, classes) = (model.logits(normed.clone()), model.class_logits(normed));
    let log_probs = target_log_probs(logits, batch.targets.clone());
    let generative = match &batch.masked {
        None => log_probs.mean().neg(),
        Some(masked) => hidden_mean(log_probs, masked.clone()).neg(),
    };
    let classification = match (classes, &batch.labels) {
        (Some(classes), Some(labels)) => Some(cross_entropy(classes, labels.clone())),
        _ => None,
    };
    let total = match &classification {
        Some(c) if batch.classification_only => c.clone(),
        Some(c) => generative.clone() + c.clone(),
        None => generative.clone(),
    };
    Losses {
        total,
        generative,
        classification,
    }
}

/// The mean over images of each image's mean of `values` (`[batch, seq]`) at its hidden positions. An
/// image with none hidden (possible, at a tiny masking rate) counts as 0 rather than dividing by 0.
fn hidden_mean<B: Backend>(values: Tensor<B, 2>, masked: Tensor<B, 2, Bool>) -> Tensor<B, 1> {
    let hidden = masked.float();
    let per_image = (values * hidden.clone()).sum_dim(1) / hidden.sum_dim(1).clamp_min(1.0); // [batch, 1]
    per_image.mean()
}

/// Mean cross-entropy of class scores `[batch, classes]` against labels `[batch]`.
pub(crate) fn cross_entropy<B: Backend>(
    scores: Tensor<B, 2>,
    labels: Tensor<B, 1, Int>,
) -> Tensor<B, 1> {
    let [b, _] = scores.dims();
    log_softmax(scores, 1)
        .gather(1, labels.reshape([b, 1]))
        .mean()
        .neg()
}

/// What a step reports, on the inner backend (read back only when the caller logs).
pub struct StepOutput<B: Backend> {
    pub losses: Losses<B>,
    /// The global gradient norm before clipping.
    pub grad_norm: Tensor<B, 1>,
}

/// One step: [`gradients`], then [`apply`] them ([`super::parallel::step`] all-reduces the gradients
/// of its replicas between the two).
pub fn step<B: AutodiffBackend>(
    model: ImageGpt<B>,
    optimizer: &mut Optim<B>,
    batch: &Batch<B>,
    lr: f64,
    grad_clip: f64,
) -> (ImageGpt<B>, StepOutput<B::InnerBackend>) {
    let (grads, losses) = gradients(&model, batch);
    let (model, grad_norm) = apply(model, optimizer, grads, lr, grad_clip);
    (model, StepOutput { losses, grad_norm })
}

/// The first half of a step: the losses of `batch` and their gradients (the backward pass).
pub fn gradients<B: AutodiffBackend>(
    model: &ImageGpt<B>,
    batch: &Batch<B>,
) -> (GradientsParams, Losses<B::InnerBackend>) {
    weighted_gradients(model, batch, 1.0)
}

/// [`gradients`] of `weight` times the loss (the losses returned unweighted): a data-parallel
/// replica's share of a batch whose gradients are summed ([`super::parallel`]).
pub fn weighted_gradients<B: AutodiffBackend>(
    model: &ImageGpt<B>,
    batch: &Batch<B>,
    weight: f64,
) -> (GradientsParams, Losses<B::InnerBackend>) {
    let losses = losses(model, batch);
    // Weight 1 differentiates the loss itself, so one device computes exactly what it always has.
    let objective = if weight == 1.0 {
        losses.total.clone()
    } else {
        losses.total.clone().mul_scalar(weight)
    };
    let grads = GradientsParams::from_grads(objective.backward(), model);
    let losses = Losses {
        total: losses.total.inner(),
        generative: losses.generative.inner(),
        classification: losses.classification.map(Tensor::inner),
    };
    (grads, losses)
}

/// The second half of a step: clip `grads` to a global norm of `grad_clip`, then one Adam update at
/// learning rate `lr`. Returns the updated model and the norm before clipping.
pub fn apply<B: AutodiffBackend>(
    model: ImageGpt<B>,
    optimizer: &mut Optim<B>,
    grads: GradientsParams,
    lr: f64,
    grad_clip: f64,
) -> (ImageGpt<B>, Tensor<B::InnerBackend, 1>) {
    let (grads, grad_norm) = clip_global_norm(&model, grads, grad_clip);
    (optimizer.step(lr, model, grads), grad_norm)
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
