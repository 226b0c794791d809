//! Mean negative log-likelihood of token sequences: the number the paper reports (as bits per token).

use burn::tensor::backend::Backend;

use crate::error::{Error, Result};
use crate::model::ImageGpt;
use crate::pixels::tokens::{check_ids, inputs_and_targets, target_log_probs};

/// Mean NLL over every token of every sequence.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Nll {
    pub nll_nats: f64,
    pub bits_per_token: f64,
    /// Sequences (images) scored.
    pub count: usize,
    pub tokens: usize,
}

/// Scores `sequences` (palette ids, without SOS) in batches of up to `batch_size`; `on_batch` hears how
/// many sequences each finished batch held (for progress bars).
pub fn sequence_nll<B: Backend>(
    model: &ImageGpt<B>,
    sequences: &[Vec<u16>],
    batch_size: usize,
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
        let (inputs, targets) =
            inputs_and_targets::<B>(batch.iter().map(Vec::as_slice), k, &device);
        // Summed on the host in f64: an f32 sum over ~10⁵ tokens drifts in the fifth digit.
        let picked = target_log_probs(model.forward(inputs), targets).into_data();
        let picked = picked
            .as_slice::<f32>()
            .map_err(|e| Error::invalid(format!("reading log-probabilities back: {e:?}")))?;
        total -= picked.iter().map(|&v| v as f64).sum::<f64>();
        tokens += b * len;
        on_batch(b);
        start = end;
    }
    let nll_nats = total / tokens as f64;
    Ok(Nll {
        nll_nats,
        bits_per_token: nll_nats / std::f64::consts::LN_2,
        count: sequences.len(),
        tokens,
    })
}
