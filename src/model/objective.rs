//! What a model learns to predict: the next pixel from the ones before it (autoregressive, iGPT's
//! main objective), or pixels hidden at random from all the others (the paper's BERT objective, as
//! OpenAI's `image-gpt` `src/model.py` trains it: each position hidden independently with probability
//! p, a hidden position's input embedding zeroed, no causal mask, no start token, and the loss over
//! the hidden positions only).

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor, TensorData};
use rand::{RngExt, SeedableRng, rngs::ChaCha8Rng};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The BERT objective's masking rate in the paper and OpenAI's code.
pub const DEFAULT_MASK_PROB: f64 = 0.15;

/// What a model is trained to predict, recorded in its `config.json` and card.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Objective {
    /// Each pixel from the ones before it; the input is the sequence shifted right after SOS.
    #[default]
    Autoregressive,
    /// Hidden pixels from every visible one; each position is hidden with probability `mask_prob`.
    Bert { mask_prob: f64 },
}

impl Objective {
    /// The BERT objective at masking rate `mask_prob`, which must lie strictly between 0 and 1.
    pub fn bert(mask_prob: f64) -> Result<Self> {
        if !(mask_prob > 0.0 && mask_prob < 1.0) {
            return Err(Error::invalid(format!(
                "the mask probability must lie strictly between 0 and 1, not {mask_prob}"
            )));
        }
        Ok(Objective::Bert { mask_prob })
    }

    /// Whether attention sees only earlier positions (and the model can sample left to right).
    pub fn is_causal(&self) -> bool {
        matches!(self, Objective::Autoregressive)
    }

    /// The masking rate of a BERT model; `None` for an autoregressive one.
    pub fn mask_prob(&self) -> Option<f64> {
        match self {
            Objective::Autoregressive => None,
            Objective::Bert { mask_prob } => Some(*mask_prob),
        }
    }

    /// An error for a task that needs an autoregressive model (`what`: "sampling", ...).
    pub fn require_causal(&self, what: &str) -> Result<()> {
        if self.is_causal() {
            return Ok(());
        }
        Err(Error::invalid(format!(
            "{what} needs an autoregressive model, and this one was trained with the BERT objective \
             (it predicts hidden pixels from all the others, not the next pixel from the ones before it)"
        )))
    }

    /// A way to say which objective, for cards and logs.
    pub fn describe(&self) -> String {
        match self {
            Objective::Autoregressive => "autoregressive (next pixel)".into(),
            Objective::Bert { mask_prob } => {
                format!("BERT ({:.0}% of pixels hidden)", mask_prob * 100.0)
            }
        }
    }
}

/// Why a mask is drawn: training steps and evaluations draw from separate streams, so an evaluation's
/// masks are never a training step's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskUse {
    Training,
    Evaluation,
}

/// Which positions a BERT pass hides: `[rows, len]`, true where hidden. Each position is hidden
/// independently with probability `prob`, from ChaCha8 keyed by (use, seed, draw, row): keyed rather
/// than streamed, so a training step (draw = step) or an evaluation's k-th mask (draw = k, row = the
/// image's index) is the same on every resume, batch split and backend.
pub fn bert_mask(
    prob: f64,
    (used_for, seed, draw): (MaskUse, u64, u64),
    rows: impl Iterator<Item = u64>,
    len: usize,
) -> Vec<Vec<bool>> {
    rows.map(|row| {
        let mut key = [0u8; 32];
        key[0] = match used_for {
            MaskUse::Training => 1,
            MaskUse::Evaluation => 2,
        };
        key[8..16].copy_from_slice(&seed.to_le_bytes());
        key[16..24].copy_from_slice(&draw.to_le_bytes());
        key[24..32].copy_from_slice(&row.to_le_bytes());
        let mut rng = ChaCha8Rng::from_seed(key);
        (0..len).map(|_| rng.random::<f64>() < prob).collect()
    })
    .collect()
}

/// Masks as a tensor, `[rows, len]` (all rows one length).
pub fn mask_tensor<B: Backend>(masks: &[Vec<bool>], device: &B::Device) -> Tensor<B, 2, Bool> {
    let len = masks.first().map_or(0, Vec::len);
    let flat: Vec<bool> = masks.iter().flatten().copied().collect();
    Tensor::from_data(TensorData::new(flat, [masks.len(), len]), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_hide_about_p_and_repeat_for_the_same_key() {
        let key = (MaskUse::Training, 7, 3);
        let masks = bert_mask(0.15, key, 0..50, 784);
        let hidden = masks.iter().flatten().filter(|&&m| m).count() as f64;
        let rate = hidden / (50.0 * 784.0);
        // 39,200 draws: the standard error of the rate is 0.0018.
        assert!((rate - 0.15).abs() < 0.01, "hidden rate {rate}");
        // The same key gives the same mask whatever rows are drawn beside it.
        assert_eq!(bert_mask(0.15, key, 10..11, 784)[0], masks[10]);
        // Another step, row or use gives another.
        assert_ne!(
            bert_mask(0.15, (MaskUse::Training, 7, 4), 0..1, 784)[0],
            masks[0]
        );
        assert_ne!(
            bert_mask(0.15, (MaskUse::Evaluation, 7, 3), 0..1, 784)[0],
            masks[0]
        );
        assert_ne!(masks[0], masks[1]);
    }

    #[test]
    fn the_mask_probability_is_checked() {
        for bad in [0.0, 1.0, -0.1, f64::NAN] {
            assert!(Objective::bert(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Objective::bert(0.15).unwrap().mask_prob(),
            Some(DEFAULT_MASK_PROB)
        );
        assert!(Objective::Autoregressive.require_causal("sampling").is_ok());
        let err = Objective::bert(0.15).unwrap().require_causal("sampling");
        assert!(err.unwrap_err().to_string().contains("sampling needs"));
    }
}
