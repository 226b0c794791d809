//! Which pixels moved a fine-tuned model's label, exactly and from one forward pass: the head has no
//! bias and reads the mean of the final norm's output over positions, so each class's logit is a sum
//! of the positions' shares. (Linear probes read features the same way; this is the fine-tuned head.)

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::error::{Error, Result};
use crate::inspect::floats;
use crate::model::{ForwardOptions, ImageGpt};
use crate::pixels::tokens::check_image;

/// One image's class scores, split over the positions that wrote them. The head has no bias and
/// reads the mean of the final norm's output over positions, so each class's logit is exactly the
/// sum of its positions' shares ([`ImageGpt::position_class_logits`]), from one forward pass.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Explanation {
    /// The class logits, `[labels]`.
    pub logits: Vec<f32>,
    /// Their softmax.
    pub probabilities: Vec<f32>,
    /// The likeliest class.
    pub class: usize,
    /// Each pixel's share (raster order) of the likeliest class's logit above the mean of all
    /// classes' logits: what pushed the label toward that class (positive) or away from it. The
    /// probabilities depend on the logits' differences only, so this is the part of the label that
    /// a pixel's state wrote. For an autoregressive model a pixel's state is the one its position
    /// holds as the next pixel's context (it has seen that pixel and those before it); the last
    /// pixel is seen by no state, so its share is 0.
    pub pixel_shares: Vec<f32>,
    /// The start token's share (autoregressive models; 0 for BERT, which has none): the same for
    /// every image, so a constant bias of the label.
    pub start_share: f32,
}

/// The forward pass [`Explanation::from_numbers`] reads: each position's class scores `[positions,
/// labels]` for one image of palette ids, left on the device (the page reads it without blocking).
pub fn trace_explanation<B: Backend>(
    model: &ImageGpt<B>,
    ids: &[u16],
    width: usize,
) -> Result<Tensor<B, 2>> {
    model.require_head()?;
    check_image(ids, width, model.n_positions(), model.n_colors())?;
    let (inputs, _) = model.inputs_and_targets(std::iter::once(ids));
    let normed = model.forward_with(inputs, ForwardOptions::default()).normed;
    let shares = model.position_class_logits(normed).expect("checked above");
    Ok(shares.squeeze_dim::<2>(0))
}

/// The `k` (at least 1) likeliest classes of `probabilities`, likeliest first.
pub fn ranked(probabilities: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut ranked: Vec<(usize, f32)> = probabilities.iter().copied().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranked.truncate(k.max(1));
    ranked
}

impl Explanation {
    /// Runs one image through the model and explains its label.
    pub fn new<B: Backend>(model: &ImageGpt<B>, ids: &[u16], width: usize) -> Result<Self> {
        let shares = floats(trace_explanation(model, ids, width)?.into_data())?;
        Self::from_numbers(&shares, model.n_labels(), model.objective().is_causal())
    }

    /// The `k` likeliest classes, likeliest first, with their probabilities.
    pub fn top(&self, k: usize) -> Vec<(usize, f32)> {
        ranked(&self.probabilities, k)
    }

    /// An autoregressive model's change of share at each pixel: its state's share less the one
    /// before it (the start token's, for the first pixel); what reading that pixel did. The last
    /// pixel, seen by no state, changes nothing. (The page computes the same in `www/label.js`.)
    pub fn share_changes(&self) -> Vec<f32> {
        let shares = &self.pixel_shares;
        (0..shares.len())
            .map(|i| match i {
                _ if i + 1 == shares.len() => 0.0,
                0 => shares[0] - self.start_share,
                _ => shares[i] - shares[i - 1],
            })
            .collect()
    }

    /// The label as the page reads it (`igpt inspect --json`'s "label" too): these numbers, with
    /// the class names under "labels".
    pub fn to_json(&self, names: &[String]) -> Result<serde_json::Value> {
        let mut json = serde_json::to_value(self).map_err(|e| Error::invalid(e.to_string()))?;
        json["labels"] = names.into();
        Ok(json)
    }

    /// From each position's class scores (`[positions × labels]`, as [`trace_explanation`] leaves
    /// them); `causal`: position 0 holds the start token and position p + 1 pixel p.
    pub fn from_numbers(shares: &[f32], labels: usize, causal: bool) -> Result<Self> {
        if labels == 0 || shares.is_empty() || !shares.len().is_multiple_of(labels) {
            return Err(Error::invalid(format!(
                "{} position scores do not divide into {labels} classes",
                shares.len()
            )));
        }
        let rows: Vec<&[f32]> = shares.chunks(labels).collect();
        // Summed in f64: 784 small terms.
        let logits: Vec<f32> = (0..labels)
            .map(|c| rows.iter().map(|r| r[c] as f64).sum::<f64>() as f32)
            .collect();
        let top = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exps: Vec<f64> = logits.iter().map(|&l| ((l - top) as f64).exp()).collect();
        let total: f64 = exps.iter().sum();
        let probabilities: Vec<f32> = exps.iter().map(|e| (e / total) as f32).collect();
        let class = (0..labels)
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
            .expect("at least one class");
        // A position's share of the chosen class above the mean class.
        let share = |r: &[f32]| r[class] - r.iter().sum::<f32>() / labels as f32;
        let (start_share, states) = if causal {
            (share(rows[0]), &rows[1..])
        } else {
            (0.0, &rows[..])
        };
        let mut pixel_shares: Vec<f32> = states.iter().map(|r| share(r)).collect();
        pixel_shares.resize(rows.len(), 0.0); // causal: the last pixel, which no state has seen
        Ok(Explanation {
            logits,
            probabilities,
            class,
            pixel_shares,
            start_share,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Explanation;

    #[test]
    fn shares_sum_to_the_logits_and_follow_the_positions() {
        // Three positions by two classes: logits [2, 3], so class 1; a position's share is its
        // class-1 score less the mean of its scores.
        let numbers = [1.0, 0.0, 0.0, 2.0, 1.0, 1.0];
        let causal = Explanation::from_numbers(&numbers, 2, true).unwrap();
        assert_eq!((causal.logits.clone(), causal.class), (vec![2.0, 3.0], 1));
        assert_eq!(causal.start_share, -0.5);
        assert_eq!(causal.pixel_shares, [1.0, 0.0, 0.0]); // the last pixel: no state sees it
        // What reading each pixel did: from the start token's share to the first pixel's, and so on.
        assert_eq!(causal.share_changes(), [1.5, -1.0, 0.0]);
        let p = 1.0 / (1.0 + (-1f32).exp());
        assert!((causal.probabilities[1] - p).abs() < 1e-6);
        let bert = Explanation::from_numbers(&numbers, 2, false).unwrap();
        assert_eq!(
            (bert.start_share, bert.pixel_shares),
            (0.0, vec![-0.5, 1.0, 0.0])
        );
        assert!(Explanation::from_numbers(&numbers[..5], 2, true).is_err());
        assert!(Explanation::from_numbers(&numbers, 0, true).is_err());
    }
}
