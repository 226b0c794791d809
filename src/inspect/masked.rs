//! A BERT model's surprise at each pixel of one image: the bits of its true colour when it is hidden.
//!
//! The pixels are dealt at random (seeded) into G = round(1 / p) groups, p the model's masking rate,
//! and each of G passes hides one group: every pixel is hidden exactly once, beside about the share
//! of hidden pixels the model was trained with (hiding one pixel at a time would take one pass per
//! pixel and show the model far more context than it ever trained with).

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use rand::seq::SliceRandom;
use rand::{SeedableRng, rngs::ChaCha8Rng};

use crate::error::{Error, Result};
use crate::inspect::floats;
use crate::model::objective::mask_tensor;
use crate::model::{ForwardOptions, ImageGpt};
use crate::pixels::tokens::{check_image, target_log_probs};

/// Each pixel's surprise in bits when hidden (raster order), and how many passes it took.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct MaskedSurprise {
    pub bits_per_pixel: Vec<f32>,
    pub mean_bits: f64,
    /// The groups the pixels were dealt into: one pass each.
    pub passes: usize,
}

/// The passes behind a [`MaskedSurprise`], before their numbers are read back: which pixels each
/// pass hid, and every pass's log-probability of every true colour (`[passes, pixels]`).
pub struct MaskedPasses<B: Backend> {
    pub hidden: Vec<Vec<bool>>,
    pub log_probs: Tensor<B, 2>,
}

/// [`MaskedSurprise`] of `ids` (one whole image, `width` wide) under a BERT model; `seed` deals the
/// groups. Reads the numbers back at once: the page reads [`masked_passes`] without blocking instead.
pub fn masked_surprise<B: Backend>(
    model: &ImageGpt<B>,
    ids: &[u16],
    width: usize,
    seed: u64,
) -> Result<MaskedSurprise> {
    let passes = masked_passes(model, ids, width, seed)?;
    let log_probs = floats(passes.log_probs.into_data())?;
    Ok(MaskedSurprise::new(&passes.hidden, &log_probs))
}

/// Runs the passes of a [`MaskedSurprise`]: the pixels dealt into round(1 / p) seeded groups, one
/// pass hiding each.
pub fn masked_passes<B: Backend>(
    model: &ImageGpt<B>,
    ids: &[u16],
    width: usize,
    seed: u64,
) -> Result<MaskedPasses<B>> {
    let Some(p) = model.objective().mask_prob() else {
        return Err(Error::invalid(
            "masked surprise is for BERT models; an autoregressive model's surprise is igpt inspect's",
        ));
    };
    check_image(ids, width, model.n_positions(), model.n_colors())?;
    let n = ids.len();
    let passes = ((1.0 / p).round() as usize).clamp(1, n);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    // One row per pass: pass g hides the pixels dealt to it.
    let hidden: Vec<Vec<bool>> = (0..passes)
        .map(|g| {
            let mut hidden = vec![false; n];
            for &pixel in order.iter().skip(g).step_by(passes) {
                hidden[pixel] = true;
            }
            hidden
        })
        .collect();
    let device = model.device();
    let (inputs, targets) = model.inputs_and_targets(std::iter::repeat_n(ids, passes));
    let options = ForwardOptions {
        masked: Some(mask_tensor(&hidden, &device)),
        ..Default::default()
    };
    let normed = model.forward_with(inputs, options).normed;
    let log_probs = target_log_probs(model.logits(normed), targets);
    Ok(MaskedPasses { hidden, log_probs })
}

impl MaskedSurprise {
    /// Each pixel's bits from the pass that hid it (`log_probs` as [`MaskedPasses`] holds them).
    pub fn new(hidden: &[Vec<bool>], log_probs: &[f32]) -> Self {
        let n = hidden.first().map_or(0, Vec::len);
        let mut bits = vec![0.0f32; n];
        for (g, hidden) in hidden.iter().enumerate() {
            for pixel in (0..n).filter(|&i| hidden[i]) {
                bits[pixel] = -log_probs[g * n + pixel] / std::f32::consts::LN_2;
            }
        }
        let mean_bits = bits.iter().map(|&b| b as f64).sum::<f64>() / n.max(1) as f64;
        MaskedSurprise {
            bits_per_pixel: bits,
            mean_bits,
            passes: hidden.len(),
        }
    }
}
