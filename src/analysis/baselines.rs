//! The bars a pixel model must clear, in bits per token, fitted on training tokens and scored on test
//! tokens: uniform over the palette, a global unigram, a per-position unigram, and a causal context
//! model on each pixel's left, upper and upper-left neighbours that backs off to the per-position
//! unigram. The same definitions as `shared/bench/emoji_baselines.py`.

use std::collections::HashMap;

use crate::error::{Error, Result};
pub use crate::store::Baselines;

/// The context model's back-off strengths tried; the one scoring best on a slice of train is used.
const STRENGTHS: [f64; 7] = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0];

/// Fits every baseline on `train` and scores it on `test`: sequences of `width`-wide images in raster
/// order, ids below `k`.
pub fn baselines(
    train: &[Vec<u16>],
    test: &[Vec<u16>],
    width: usize,
    k: usize,
) -> Result<Baselines> {
    let len = train.first().map_or(0, Vec::len);
    if train.is_empty() || test.is_empty() || len == 0 || width == 0 || !len.is_multiple_of(width) {
        return Err(Error::invalid(
            "baselines need training and test images of one size",
        ));
    }
    if let Some(bad) = train.iter().chain(test).find(|s| s.len() != len) {
        return Err(Error::invalid(format!(
            "a sequence of {} tokens among images of {len}",
            bad.len()
        )));
    }
    if let Some(bad) = train
        .iter()
        .chain(test)
        .flatten()
        .find(|&&id| id as usize >= k)
    {
        return Err(Error::invalid(format!(
            "token {bad} is outside the palette's {k} colours"
        )));
    }
    let mean_bits = |p: &mut dyn Iterator<Item = f64>| {
        let (sum, n) = p.fold((0.0, 0usize), |(s, n), p| (s - p.log2(), n + 1));
        sum / n as f64
    };
    let global = {
        let mut counts = vec![0.0; k];
        train
            .iter()
            .flatten()
            .for_each(|&x| counts[x as usize] += 1.0);
        let total = (train.len() * len) as f64;
        counts
            .into_iter()
            .map(|c| (c + 0.5) / (total + 0.5 * k as f64))
            .collect::<Vec<_>>()
    };
    let position = PositionUnigram::fit(train, k);
    let (slice, rest): (Vec<_>, Vec<_>) = train.iter().enumerate().partition(|(i, _)| i % 10 == 1);
    let strip = |v: Vec<(usize, &Vec<u16>)>| v.into_iter().map(|(_, s)| s.clone()).collect();
    let (slice, rest): (Vec<Vec<u16>>, Vec<Vec<u16>>) = (strip(slice), strip(rest));
    let held_out = Context::fit(&rest, width, k);
    let rest_position = PositionUnigram::fit(&rest, k);
    let context_strength = STRENGTHS
        .into_iter()
        .map(|a| (a, held_out.bits(&slice, &rest_position, a)))
        .min_by(|x, y| x.1.total_cmp(&y.1))
        .expect("a non-empty grid")
        .0;
    let context = Context::fit(train, width, k);
    Ok(Baselines {
        uniform: (k as f64).log2(),
        global_unigram: mean_bits(&mut test.iter().flatten().map(|&x| global[x as usize])),
        per_position: mean_bits(
            &mut test
                .iter()
                .flat_map(|s| s.iter().enumerate().map(|(i, &x)| position.p(i, x))),
        ),
        context3: context.bits(test, &position, context_strength),
        context_strength,
    })
}

/// P(x at position i), add-0.5.
struct PositionUnigram {
    k: usize,
    probabilities: Vec<f64>,
}

impl PositionUnigram {
    fn fit(train: &[Vec<u16>], k: usize) -> Self {
        let len = train[0].len();
        let mut counts = vec![0.0; len * k];
        for seq in train {
            for (i, &x) in seq.iter().enumerate() {
                counts[i * k + x as usize] += 1.0;
            }
        }
        let total = train.len() as f64 + 0.5 * k as f64;
        Self {
            k,
            probabilities: counts.into_iter().map(|c| (c + 0.5) / total).collect(),
        }
    }

    fn p(&self, position: usize, x: u16) -> f64 {
        self.probabilities[position * self.k + x as usize]
    }
}

/// Counts of (left, up, up-left) contexts and of (context, colour) pairs.
struct Context {
    width: usize,
    k: usize,
    joint: HashMap<u64, u32>,
    contexts: HashMap<u64, u32>,
}

impl Context {
    fn fit(train: &[Vec<u16>], width: usize, k: usize) -> Self {
        let mut model = Self {
            width,
            k,
            joint: HashMap::new(),
            contexts: HashMap::new(),
        };
        for seq in train {
            for (i, &x) in seq.iter().enumerate() {
                let ctx = model.key(seq, i);
                *model.contexts.entry(ctx).or_default() += 1;
                *model.joint.entry(ctx * k as u64 + x as u64).or_default() += 1;
            }
        }
        model
    }

    /// The context of position `i`: its three causal neighbours, `k` standing for outside the image.
    fn key(&self, seq: &[u16], i: usize) -> u64 {
        let (row, col, w, k) = (i / self.width, i % self.width, self.width, self.k as u64);
        let at = |inside: bool, j: usize| if inside { seq[j] as u64 } else { k };
        let left = at(col > 0, i.wrapping_sub(1));
        let up = at(row > 0, i.wrapping_sub(w));
        let up_left = at(row > 0 && col > 0, i.wrapping_sub(w + 1));
        (left * (k + 1) + up) * (k + 1) + up_left
    }

    fn bits(&self, test: &[Vec<u16>], position: &PositionUnigram, strength: f64) -> f64 {
        let (mut sum, mut n) = (0.0, 0usize);
        for seq in test {
            for (i, &x) in seq.iter().enumerate() {
                let ctx = self.key(seq, i);
                let count =
                    |map: &HashMap<u64, u32>, key| map.get(&key).copied().unwrap_or(0) as f64;
                let joint = count(&self.joint, ctx * self.k as u64 + x as u64);
                let p =
                    (joint + strength * position.p(i, x)) / (count(&self.contexts, ctx) + strength);
                sum -= p.log2();
                n += 1;
            }
        }
        sum / n as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_predictable_pattern_is_cheap_for_the_context_model_only() {
        // Vertical stripes: each pixel repeats the one above, so the context model nearly knows it; the
        // colours are evenly used, so the unigrams do not.
        let image = |shift: u16| -> Vec<u16> { (0..16).map(|i| (i % 4 + shift) % 4).collect() };
        let train: Vec<Vec<u16>> = (0..40).map(|i| image(i % 4)).collect();
        let test = vec![image(1), image(2)];
        let b = baselines(&train, &test, 4, 4).unwrap();
        assert!((b.uniform - 2.0).abs() < 1e-12);
        assert!((b.global_unigram - 2.0).abs() < 0.01, "{b:?}");
        assert!(b.context3 < 0.5, "{b:?}");
        assert!(baselines(&train, &[vec![0; 15]], 4, 4).is_err());
        assert!(baselines(&train, &[vec![4; 16]], 4, 4).is_err());
    }
}
