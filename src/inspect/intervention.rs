//! What an intervention (an [ablation](super::ablation), a [patch](super::patching)) does to one
//! image: every pixel's surprise under the changed run, and the change from the intact one.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use serde::Serialize;

use crate::model::patch::Patch;
use crate::model::{ForwardOptions, ImageGpt};
use crate::pixels::tokens::{inputs_and_targets, target_log_probs};

/// Each pixel's surprise under the intervention and its change.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Change {
    /// Surprise of every pixel in bits under the intervention, raster order.
    pub bits_per_pixel: Vec<f32>,
    /// Changed minus intact surprise per pixel: positive where the intervention hurt.
    pub delta_bits: Vec<f32>,
    pub mean_delta: f64,
}

impl Change {
    /// From the surprise per pixel under the intervention and the intact model's.
    pub fn new(bits_per_pixel: Vec<f32>, intact: &[f32]) -> Self {
        let delta_bits: Vec<f32> = bits_per_pixel
            .iter()
            .zip(intact)
            .map(|(a, b)| a - b)
            .collect();
        let mean_delta =
            delta_bits.iter().map(|&d| f64::from(d)).sum::<f64>() / delta_bits.len().max(1) as f64;
        Self {
            bits_per_pixel,
            delta_bits,
            mean_delta,
        }
    }
}

/// Every pixel's surprise in bits under `model` (one forward over one image, with `patch` applied
/// if any), as a tensor to read back: `[pixels]`.
pub fn bits_per_pixel<B: Backend>(
    model: &ImageGpt<B>,
    ids: &[u16],
    patch: Option<&Patch<B>>,
) -> Tensor<B, 1> {
    let (inputs, targets) =
        inputs_and_targets::<B>(std::iter::once(ids), model.n_colors(), &model.device());
    let options = ForwardOptions {
        patch,
        ..Default::default()
    };
    let logits = model.logits(model.forward_with(inputs, options).normed);
    target_log_probs(logits, targets)
        .reshape([-1])
        .mul_scalar(-1.0 / std::f64::consts::LN_2)
}
