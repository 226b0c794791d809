//! Data parallelism within one process: a step's global batch split into contiguous shards, one per
//! replica, each computing its shard's gradients on its own device and thread; Burn's collective
//! engine (burn-collective) all-reduces them, and one optimiser step follows on the result
//! ([`step::apply`]: clipping sees the reduced gradients, and there is one Adam state).
//!
//! Exactness: every loss term is a mean over the batch's images (BERT's per image first), so each
//! replica's loss is weighted by its share of the batch, b_r / B, before its backward pass, and the
//! all-reduce sums. The sum is the one-device gradient up to the order of f32 additions. The batch
//! itself (images, augmentation, BERT's masks, labels) is drawn for the whole step first, as on one
//! device, then cut into shards.

use std::ops::Range;
use std::sync::Mutex;

use burn::collective::{
    CollectiveConfig, CollectiveError, PeerId, ReduceOperation, finish_collective, register,
};
use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;

use super::step::{self, Batch, Losses, Optim, StepOutput};
use crate::error::{Error, Result};
use crate::model::ImageGpt;

/// Burn's local collective is one per process and backend: one data-parallel step at a time (two
/// runs in one process, as tests are, would otherwise register the same peers twice).
static COLLECTIVE: Mutex<()> = Mutex::new(());

/// Rows `0..batch` cut into `replicas` contiguous shards, the first ones a row longer when the batch
/// does not divide.
pub fn shards(batch: usize, replicas: usize) -> Vec<Range<usize>> {
    let (base, extra) = (batch / replicas, batch % replicas);
    let mut start = 0;
    (0..replicas)
        .map(|r| {
            let len = base + usize::from(r < extra);
            start += len;
            start - len..start
        })
        .collect()
}

/// One step over replicas: shard r (`batches[r]`, rows `rows[r]` of the step's batch) on
/// `devices[r]`, its gradients all-reduced with the others', then one [`step::apply`] on `model`.
pub fn step<B: AutodiffBackend>(
    model: ImageGpt<B>,
    optimizer: &mut Optim<B>,
    batches: Vec<Batch<B>>,
    rows: &[Range<usize>],
    devices: &[B::Device],
    lr: f64,
    grad_clip: f64,
) -> Result<(ImageGpt<B>, StepOutput<B::InnerBackend>)> {
    let (grads, losses) = gradients(&model, batches, rows, devices)?;
    let grads = grads.to_device(&model.device(), &model);
    let (model, grad_norm) = step::apply(model, optimizer, grads, lr, grad_clip);
    Ok((model, StepOutput { losses, grad_norm }))
}

/// Every replica's gradients, summed by burn-collective's all-reduce (each replica holds the same
/// result; replica 0's is returned), and the batch's losses.
fn gradients<B: AutodiffBackend>(
    model: &ImageGpt<B>,
    batches: Vec<Batch<B>>,
    rows: &[Range<usize>],
    devices: &[B::Device],
) -> Result<(burn::optim::GradientsParams, Losses<B::InnerBackend>)> {
    let replicas = devices.len();
    if batches.len() != replicas || rows.len() != replicas {
        return Err(Error::invalid(
            "one shard of the batch per device is needed",
        ));
    }
    let total: usize = rows.iter().map(ExactSizeIterator::len).sum();
    // Each shard's share of the batch: its loss's weight, and its losses' in the batch's.
    let weights: Vec<f64> = rows.iter().map(|r| r.len() as f64 / total as f64).collect();
    let config = CollectiveConfig::default().with_num_devices(replicas);
    let _one_at_a_time = COLLECTIVE.lock().unwrap_or_else(|e| e.into_inner());
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = batches
            .into_iter()
            .zip(devices)
            .zip(&weights)
            .enumerate()
            .map(|(r, ((batch, device), &weight))| {
                // A fork is a replica with its own autodiff graph (a clone would share the model's).
                let replica = model.clone().fork(device);
                let config = config.clone();
                scope.spawn(move || {
                    let peer = PeerId::from(r);
                    let run = || -> std::result::Result<_, CollectiveError> {
                        register::<B::InnerBackend>(peer, device.clone(), config)?;
                        let (grads, losses) = step::weighted_gradients(&replica, &batch, weight);
                        let grads =
                            grads.all_reduce::<B::InnerBackend>(peer, ReduceOperation::Sum)?;
                        finish_collective::<B::InnerBackend>(peer)?;
                        Ok((grads, losses))
                    };
                    // The other replicas wait for this one in the all-reduce, with no timeout: a
                    // replica that panics must take the process down, or the run would hang.
                    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
                        Ok(result) => result,
                        Err(_) => {
                            eprintln!(
                                "error: replica {r} of {replicas} failed during a training step; the \
                                 run stops here (its last checkpoint is kept: continue with --resume)"
                            );
                            std::process::exit(70);
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a replica's panic exits the process"))
            .collect()
    });
    let mut reduced = None;
    let mut parts = Vec::with_capacity(replicas);
    for (r, result) in results.into_iter().enumerate() {
        let (grads, losses) = result.map_err(|e| {
            Error::invalid(format!(
                "the replicas' all-reduce failed (replica {r}): {e:?}"
            ))
        })?;
        if r == 0 {
            reduced = Some(grads);
        }
        parts.push(losses);
    }
    let device = model.device();
    Ok((
        reduced.expect("at least one replica"),
        weighted_losses::<B>(parts, &weights, &device),
    ))
}

/// The batch's losses from its shards': each term weighted by its shard's share of the batch.
fn weighted_losses<B: AutodiffBackend>(
    parts: Vec<Losses<B::InnerBackend>>,
    weights: &[f64],
    device: &B::Device,
) -> Losses<B::InnerBackend> {
    let sum = |terms: Vec<Tensor<B::InnerBackend, 1>>| {
        terms
            .into_iter()
            .zip(weights)
            .map(|(t, &w)| t.to_device(device).mul_scalar(w))
            .reduce(|a, b| a + b)
            .expect("at least one replica")
    };
    let classification = parts
        .iter()
        .map(|p| p.classification.clone())
        .collect::<Option<Vec<_>>>()
        .map(sum);
    let generative = sum(parts.iter().map(|p| p.generative.clone()).collect());
    Losses {
        total: sum(parts.into_iter().map(|p| p.total).collect()),
        generative,
        classification,
    }
}
