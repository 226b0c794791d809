//! A BERT model's surprise at each pixel of one image: the bits of its true colour when it is hidden.
//!
//! The pixels are dealt at random (seeded) into G = round(1 / p) groups, p the model's masking rate,
//! and each of G passes hides one group: every pixel is hidden exactly once, beside about the share
//! of hidden pixels the model was trained with (hiding one pixel at a time would take one pass per
//! pixel and show the model far more context than it ever trained with).

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

/// [`MaskedSurprise`] of `ids` (one whole image, `width` wide) under a BERT model; `seed` deals the
/// groups.
pub fn masked_surprise<B: Backend>(
    model: &ImageGpt<B>,
    ids: &[u16],
    width: usize,
    seed: u64,
) -> Result<MaskedSurprise> {
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
    let masks: Vec<Vec<bool>> = (0..passes)
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
        masked: Some(mask_tensor(&masks, &device)),
        ..Default::default()
    };
    let normed = model.forward_with(inputs, options).normed;
    let log_probs = floats(target_log_probs(model.logits(normed), targets).into_data())?;
    let mut bits = vec![0.0f32; n];
    for (g, hidden) in masks.iter().enumerate() {
        for pixel in (0..n).filter(|&i| hidden[i]) {
            bits[pixel] = -log_probs[g * n + pixel] / std::f32::consts::LN_2;
        }
    }
    let mean_bits = bits.iter().map(|&b| b as f64).sum::<f64>() / n as f64;
    Ok(MaskedSurprise {
        bits_per_pixel: bits,
        mean_bits,
        passes,
    })
}
