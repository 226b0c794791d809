//! Token sequences as the model reads them: the start token, the shifted inputs and their targets
//! (BERT's inputs are the tokens themselves),
//! and the check that ids fit a model. Evaluation, training, sampling and the inspector all go
//! through here, so they agree on what a sequence means.

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use crate::error::{Error, Result};

/// The start-of-image token: the id after the palette's `n_colors` colours (HF's SOS). It is read,
/// never predicted.
pub(crate) fn start_token(n_colors: usize) -> i64 {
    n_colors as i64
}

/// Refuses an id outside the palette's `n_colors` colours, naming the sequence (`what`, e.g.
/// "sequence 3" or "the prefix") that holds it.
pub(crate) fn check_ids(what: &str, ids: &[u16], n_colors: usize) -> Result<()> {
    match ids.iter().find(|&&id| id as usize >= n_colors) {
        Some(bad) => Err(Error::invalid(format!(
            "{what} holds id {bad}, past the model's {n_colors} colours"
        ))),
        None => Ok(()),
    }
}

/// Refuses anything but one whole image for a model of `n_positions` positions and `n_colors`
/// colours: as many ids as positions, rows of `width`, every id a colour.
pub(crate) fn check_image(
    ids: &[u16],
    width: usize,
    n_positions: usize,
    n_colors: usize,
) -> Result<()> {
    if ids.len() != n_positions || width == 0 || !n_positions.is_multiple_of(width) {
        return Err(Error::invalid(format!(
            "the model reads {n_positions} pixels; this image has {} ({width} wide)",
            ids.len()
        )));
    }
    check_ids("the image", ids, n_colors)
}

/// SOS, then every token of `ids`.
fn with_start(ids: &[u16], n_colors: usize) -> impl Iterator<Item = i64> + '_ {
    std::iter::once(start_token(n_colors)).chain(ids.iter().map(|&id| id as i64))
}

/// The model's input for one sequence: SOS, then every token but the last.
fn shifted_input(ids: &[u16], n_colors: usize) -> impl Iterator<Item = i64> + '_ {
    with_start(&ids[..ids.len().saturating_sub(1)], n_colors)
}

/// The input that continues prefixes of one length: SOS, then the whole prefix, `[batch, len + 1]`.
/// One forward over it yields each prefix's next token.
pub(crate) fn continuation_input<B: Backend>(
    prefixes: &[Vec<u16>],
    n_colors: usize,
    device: &B::Device,
) -> Tensor<B, 2, Int> {
    let len = prefixes.first().map_or(0, Vec::len);
    let input: Vec<i64> = prefixes
        .iter()
        .flat_map(|p| with_start(p, n_colors))
        .collect();
    Tensor::from_data(TensorData::new(input, [prefixes.len(), len + 1]), device)
}

/// The model's inputs (SOS, then every token but the last) and targets (every token) for sequences
/// of one length: both `[batch, len]`.
pub fn inputs_and_targets<'a, B: Backend>(
    sequences: impl Iterator<Item = &'a [u16]> + Clone,
    n_colors: usize,
    device: &B::Device,
) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
    let b = sequences.clone().count();
    let len = sequences.clone().next().map_or(0, <[u16]>::len);
    let inputs: Vec<i64> = sequences
        .clone()
        .flat_map(|s| shifted_input(s, n_colors))
        .collect();
    (
        Tensor::from_data(TensorData::new(inputs, [b, len]), device),
        token_ids(sequences, device),
    )
}

/// Sequences of one length as they are, `[batch, len]`: every model's targets, and a BERT model's
/// input (which hides some of them inside the model, not by changing ids).
pub fn token_ids<'a, B: Backend>(
    sequences: impl Iterator<Item = &'a [u16]> + Clone,
    device: &B::Device,
) -> Tensor<B, 2, Int> {
    let b = sequences.clone().count();
    let len = sequences.clone().next().map_or(0, <[u16]>::len);
    let ids: Vec<i64> = sequences
        .flat_map(|s| s.iter().map(|&id| id as i64))
        .collect();
    Tensor::from_data(TensorData::new(ids, [b, len]), device)
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

/// Token-id sequences from JSON text: an array of arrays of ids (0..65535, without SOS), as
/// `igpt tokenize` prints them. Whether they fit a model is the caller's check ([`check_ids`]).
pub fn parse_ids(text: &str) -> Result<Vec<Vec<u16>>> {
    serde_json::from_str(text).map_err(|e| {
        Error::invalid(format!(
            "expected a JSON array of arrays of token ids (0..65535): {e}"
        ))
    })
}
