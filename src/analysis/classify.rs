//! Classifying with a fine-tuned model's head: class probabilities, and accuracy with bits per token
//! measured in the same forward passes. (Which pixels moved one image's label: `super::explain`.)

use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use crate::error::{Error, Result};
use crate::model::{ForwardOptions, ImageGpt};
use crate::pixels::tokens::target_log_probs;

/// How well a model classifies and models a labelled set, from one pass over it.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Scores {
    /// Share of images whose most probable class is their label.
    pub accuracy: f64,
    /// Mean negative log-likelihood of the pixels, in bits per token.
    pub bits_per_token: f64,
    pub count: usize,
}

fn check<B: Backend>(model: &ImageGpt<B>, sequences: &[Vec<u16>]) -> Result<()> {
    model.require_head()?;
    let n = model.n_positions();
    if sequences.iter().any(|s| s.len() != n) {
        return Err(Error::invalid(format!(
            "classifying needs sequences of {n} tokens (the model's context)"
        )));
    }
    Ok(())
}

/// Runs the model over `sequences` in batches of up to `batch`, handing `each` a batch's sequences,
/// next-colour logits, class scores and targets.
fn for_each_batch<B: Backend>(
    model: &ImageGpt<B>,
    sequences: &[Vec<u16>],
    batch: usize,
    mut each: impl FnMut(&[Vec<u16>], Tensor<B, 3>, Tensor<B, 2>, Tensor<B, 2, Int>) -> Result<()>,
) -> Result<()> {
    check(model, sequences)?;
    for chunk in sequences.chunks(batch.max(1)) {
        let (inputs, targets) = model.inputs_and_targets(chunk.iter().map(Vec::as_slice));
        let normed = model.forward_with(inputs, ForwardOptions::default()).normed;
        let (logits, classes) = (model.logits(normed.clone()), model.class_logits(normed));
        each(chunk, logits, classes.expect("checked above"), targets)?;
    }
    Ok(())
}

/// Each image's probability for every class (`[images][labels]`), in batches of up to `batch`.
pub fn class_probabilities<B: Backend>(
    model: &ImageGpt<B>,
    sequences: &[Vec<u16>],
    batch: usize,
) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(sequences.len());
    for_each_batch(model, sequences, batch, |_, _, classes, _| {
        let values = read(softmax(classes, 1).into_data())?;
        out.extend(values.chunks(model.n_labels()).map(<[f32]>::to_vec));
        Ok(())
    })?;
    Ok(out)
}

/// Accuracy against `labels` and bits per token of `sequences`; `on_batch` hears each batch's size.
pub fn score<B: Backend>(
    model: &ImageGpt<B>,
    sequences: &[Vec<u16>],
    labels: &[usize],
    batch: usize,
    mut on_batch: impl FnMut(usize),
) -> Result<Scores> {
    if sequences.is_empty() || labels.len() != sequences.len() {
        return Err(Error::invalid(format!(
            "{} labels for {} images",
            labels.len(),
            sequences.len()
        )));
    }
    let (mut right, mut nll, mut start) = (0usize, 0f64, 0);
    for_each_batch(
        model,
        sequences,
        batch,
        |chunk, logits, classes, targets| {
            let predicted = classes
                .argmax(1)
                .into_data()
                .convert::<i64>()
                .into_vec::<i64>();
            let predicted =
                predicted.map_err(|e| Error::invalid(format!("reading back: {e:?}")))?;
            right += predicted
                .iter()
                .zip(&labels[start..start + chunk.len()])
                .filter(|&(&p, &l)| p as usize == l)
                .count();
            let summed = target_log_probs(logits, targets).sum().neg().into_data();
            nll += read(summed)?[0] as f64;
            start += chunk.len();
            on_batch(chunk.len());
            Ok(())
        },
    )?;
    let tokens = (sequences.len() * model.n_positions()) as f64;
    let bits_per_token = match model.objective().mask_prob() {
        None => nll / tokens / std::f64::consts::LN_2,
        // Shown every pixel, BERT's targets are its inputs: its bits are over hidden ones.
        Some(_) => crate::eval::sequence_nll(model, sequences, batch, |_| {})?.bits_per_token,
    };
    Ok(Scores {
        accuracy: right as f64 / sequences.len() as f64,
        bits_per_token,
        count: sequences.len(),
    })
}

fn read(data: burn::tensor::TensorData) -> Result<Vec<f32>> {
    data.convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| Error::invalid(format!("reading back: {e:?}")))
}
