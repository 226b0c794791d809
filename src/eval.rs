//! Mean negative log-likelihood of token sequences: the number the paper reports (as bits per token).

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::model::ImageGpt;

/// The model's inputs (SOS, then every token but the last) and targets (every token) for sequences
/// of one length: both `[batch, len]`.
pub fn inputs_and_targets<'a, B: Backend>(
    sequences: impl Iterator<Item = &'a [u16]> + Clone,
    n_colors: usize,
    device: &B::Device,
) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
    let b = sequences.clone().count();
    let len = sequences.clone().next().map_or(0, <[u16]>::len);
    let sos = n_colors as i64;
    let inputs: Vec<i64> = sequences
        .clone()
        .flat_map(|s| std::iter::once(sos).chain(s[..len - 1].iter().map(|&id| id as i64)))
        .collect();
    let targets: Vec<i64> = sequences
        .flat_map(|s| s.iter().map(|&id| id as i64))
        .collect();
    (
        Tensor::from_data(TensorData::new(inputs, [b, len]), device),
        Tensor::from_data(TensorData::new(targets, [b, len]), device),
    )
}

/// Log-probability the logits (`[batch, len, K]`) give each target token: `[batch, len]`.
pub fn target_log_probs<B: Backend>(
    logits: Tensor<B, 3>,
    targets: Tensor<B, 2, Int>,
) -> Tensor<B, 2> {
    let [b, len, _] = logits.dims();
    log_softmax(logits, 2)
        .gather(2, targets.reshape([b, len, 1]))
        .reshape([b, len])
}

/// Mean NLL over every token of every sequence.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Nll {
    pub nll_nats: f64,
    pub bits_per_token: f64,
    /// Sequences (images) scored.
    pub count: usize,
    pub tokens: usize,
}

/// Token-id sequences from JSON text: an array of arrays of ids (0..65535, without SOS), as
/// `igpt tokenize` prints them. Whether they fit a model is [`sequence_nll`]'s check.
pub fn parse_ids(text: &str) -> Result<Vec<Vec<u16>>> {
    serde_json::from_str(text).map_err(|e| {
        Error::invalid(format!(
            "expected a JSON array of arrays of token ids (0..65535): {e}"
        ))
    })
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
        if let Some(bad) = seq.iter().find(|&&id| id as usize >= k) {
            return Err(Error::invalid(format!(
                "sequence {i} holds id {bad}, outside the model's {k} colours"
            )));
        }
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
        let inputs: Vec<i64> = batch
            .iter()
            .flat_map(|s| std::iter::once(k as i64).chain(s[..len - 1].iter().map(|&id| id as i64)))
            .collect();
        let targets: Vec<i64> = batch
            .iter()
            .flat_map(|s| s.iter().map(|&id| id as i64))
            .collect();
        let inputs = Tensor::<B, 2, Int>::from_data(TensorData::new(inputs, [b, len]), &device);
        let targets =
            Tensor::<B, 3, Int>::from_data(TensorData::new(targets, [b, len, 1]), &device);
        let log_probs = log_softmax(model.forward(inputs), 2); // [b, len, K]
        // Summed on the host in f64: an f32 sum over ~10⁵ tokens drifts in the fifth digit.
        let picked = log_probs.gather(2, targets).into_data();
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
