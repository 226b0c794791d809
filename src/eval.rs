//! Mean negative log-likelihood of token sequences: the number the paper reports (as bits per token).
//! An autoregressive model scores every token from the ones before it; a BERT model scores the
//! tokens it is shown hidden, under seeded masks.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::error::{Error, Result};
use crate::model::objective::{MaskUse, bert_mask, mask_tensor};
use crate::model::{ForwardOptions, ImageGpt};
use crate::pixels::tokens::{check_ids, target_log_probs};

/// Mean NLL over the scored tokens: every token of every sequence, or for a BERT model the hidden
/// ones under each mask.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Nll {
    pub nll_nats: f64,
    pub bits_per_token: f64,
    /// Sequences (images) scored.
    pub count: usize,
    /// Tokens scored (for a BERT model, hidden tokens summed over its masks).
    pub tokens: usize,
    /// Seeded masks each image was scored under (BERT models only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub masks: Option<usize>,
}

/// Scores `sequences` (palette ids, without SOS) in batches of up to `batch_size`; `on_batch` hears how
/// many sequences each finished batch held (for progress bars). A BERT model is scored under one
/// seeded mask ([`masked_nll`] takes more).
pub fn sequence_nll<B: Backend>(
    model: &ImageGpt<B>,
    sequences: &[Vec<u16>],
    batch_size: usize,
    on_batch: impl FnMut(usize),
) -> Result<Nll> {
    score(model, sequences, batch_size, 1, on_batch)
}

/// [`sequence_nll`] with a BERT model scored under `masks` seeded masks per image (mask k of image i
/// is the same in every evaluation); the bits are per hidden token over all of them. For an
/// autoregressive model `masks` is ignored.
pub fn masked_nll<B: Backend>(
    model: &ImageGpt<B>,
    sequences: &[Vec<u16>],
    batch_size: usize,
    masks: usize,
    on_batch: impl FnMut(usize),
) -> Result<Nll> {
    if masks == 0 {
        return Err(Error::invalid("score under at least one mask"));
    }
    score(model, sequences, batch_size, masks, on_batch)
}

fn score<B: Backend>(
    model: &ImageGpt<B>,
    sequences: &[Vec<u16>],
    batch_size: usize,
    masks: usize,
    mut on_batch: impl FnMut(usize),
) -> Result<Nll> {
    let (k, max_len) = (model.n_colors(), model.n_positions());
    for (i, seq) in sequences.iter().enumerate() {
        if seq.is_empty() || seq.len() > max_len {
            return Err(Error::invalid(format!(
                "sequence {i} has {} tokens; the model takes 1 to {max_len}",
                seq.len()
            )));
        }
        check_ids(&format!("sequence {i}"), seq, k)?;
    }
    if sequences.is_empty() {
        return Err(Error::invalid("nothing to evaluate: no sequences"));
    }
    let device = model.device();
    let (mut total, mut tokens) = (0f64, 0usize);
    let mut start = 0;
    while start < sequences.len() {
        // A batch is a run of sequences of one length, at most `batch_size` long.
        let len = sequences[start].len();
        let end = (start..sequences.len())
            .take(batch_size.max(1))
            .take_while(|&i| sequences[i].len() == len)
            .last()
            .map_or(start + 1, |i| i + 1);
        let batch = &sequences[start..end];
        let b = batch.len();
        let rows = || batch.iter().map(Vec::as_slice);
        let (inputs, targets) = model.inputs_and_targets(rows());
        match model.objective().mask_prob() {
            None => {
                let picked = target_log_probs(model.forward(inputs), targets);
                total -= host_sum(picked)?;
                tokens += b * len;
            }
            Some(p) => {
                for draw in 0..masks {
                    let key = (MaskUse::Evaluation, 0, draw as u64);
                    let masked = bert_mask(p, key, start as u64..end as u64, len);
                    tokens += masked.iter().flatten().filter(|&&m| m).count();
                    let masked = mask_tensor::<B>(&masked, &device);
                    let options = ForwardOptions {
                        masked: Some(masked.clone()),
                        ..Default::default()
                    };
                    let normed = model.forward_with(inputs.clone(), options).normed;
                    let picked = target_log_probs(model.logits(normed), targets.clone());
                    total -= host_sum(picked * masked.float())?;
                }
            }
        }
        on_batch(b);
        start = end;
    }
    if tokens == 0 {
        return Err(Error::invalid(
            "no pixel was hidden in any mask: score more images or masks",
        ));
    }
    let nll_nats = total / tokens as f64;
    Ok(Nll {
        nll_nats,
        bits_per_token: nll_nats / std::f64::consts::LN_2,
        count: sequences.len(),
        tokens,
        masks: model.objective().mask_prob().map(|_| masks),
    })
}

/// The sum of a tensor's values, summed on the host in f64: an f32 sum over ~10⁵ tokens drifts in the
/// fifth digit.
fn host_sum<B: Backend>(values: Tensor<B, 2>) -> Result<f64> {
    let data: TensorData = values.into_data();
    let values = data
        .as_slice::<f32>()
        .map_err(|e| Error::invalid(format!("reading log-probabilities back: {e:?}")))?;
    Ok(values.iter().map(|&v| v as f64).sum())
}
