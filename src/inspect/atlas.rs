//! The feature atlas: for one layer, the images and pixels that excite its units most. The units are
//! the layer's top principal directions (both ends of each: a direction has two extremes) and the
//! MLP neurons of the block that writes the layer, the most variable ones. A hit names an image and
//! the pixel `p` whose prediction the state at that position makes, having read every pixel before
//! it, as the inspector names pixels: clicking one in the page opens the inspector there.
//!
//! `igpt atlas` writes it as `atlas.json` plus `atlas.png`, a sprite of the whole images the hits come
//! from (the page crops and enlarges them), into the model's directory.

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::analysis::pca::Principal;
use crate::error::{Error, Result};
use crate::inspect::floats;
use crate::model::{ForwardOptions, ImageGpt};

/// What to rank and how many of each.
#[derive(Clone, Debug)]
pub struct AtlasOptions {
    /// The residual stream index: 0 the embeddings, l the output of block l (as `igpt probe` counts).
    pub layer: usize,
    /// Principal directions (each gives two units: its positive and its negative end).
    pub directions: usize,
    /// MLP neurons of block `layer` (layers 1 and up), the ones whose activation varies most.
    pub neurons: usize,
    /// Images per unit.
    pub top: usize,
    /// Images the directions are fitted on (the first ones).
    pub fit_images: usize,
    /// Images per forward pass.
    pub batch: usize,
}

/// A principal direction's end or an MLP neuron.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnitKind {
    Direction,
    Neuron,
}

/// One unit and the images that excite it most, most first.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Unit {
    pub kind: UnitKind,
    /// The direction's rank (0: the most variance) or the neuron's index in the block's MLP.
    pub index: usize,
    /// +1 or -1: which end of a direction ranks the images (always +1 for a neuron).
    pub sign: i8,
    /// The unit's variance over every position of every image (a direction's: its eigenvalue on the
    /// fitted images).
    pub variance: f32,
    pub top: Vec<Hit>,
}

/// An image (its index in [`Atlas::images`]) and the pixel where the unit peaks in it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    pub image: usize,
    pub pixel: usize,
    pub activation: f32,
}

/// The atlas of one layer over a set of images.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Atlas {
    pub layer: usize,
    /// The images scanned.
    pub scanned: usize,
    /// Indices (into the scanned images) of the images the hits name, in hit order of first use.
    pub images: Vec<usize>,
    pub units: Vec<Unit>,
}

/// The best `k` (image, pixel, value) of one unit, one entry per image, kept sorted, largest first.
#[derive(Clone, Default)]
struct Best(Vec<(usize, usize, f32)>);

impl Best {
    fn offer(&mut self, k: usize, image: usize, pixel: usize, value: f32) {
        if self.0.len() == k && self.0.last().is_some_and(|&(_, _, v)| v >= value) {
            return;
        }
        let at = self.0.partition_point(|&(_, _, v)| v >= value);
        self.0.insert(at, (image, pixel, value));
        self.0.truncate(k);
    }
}

/// Running mean and variance of one neuron (Welford's sums, in f64).
#[derive(Clone, Copy, Default)]
struct Spread {
    n: f64,
    sum: f64,
    squares: f64,
}

impl Spread {
    fn variance(&self) -> f32 {
        let mean = self.sum / self.n.max(1.0);
        (self.squares / self.n.max(1.0) - mean * mean).max(0.0) as f32
    }
}

/// Each position's value of each of `units` columns (`rows`: `[positions × units]`), folded into
/// the per-image peak of each unit (`sign` -1 ranks by the lowest value), and offered to `best`.
fn offer_peaks(best: &mut [Best], rows: &[f32], units: usize, sign: f32, image: usize, top: usize) {
    let positions = rows.len() / units.max(1);
    for (u, best) in best.iter_mut().enumerate() {
        let (mut pixel, mut peak) = (0, f32::NEG_INFINITY);
        for p in 0..positions {
            let v = sign * rows[p * units + u];
            if v > peak {
                (pixel, peak) = (p, v);
            }
        }
        best.offer(top, image, pixel, peak);
    }
}

/// The atlas of `options.layer` over `images` (whole images' token ids); `progress(done, total)`
/// after each batch.
pub fn build<B: Backend>(
    model: &ImageGpt<B>,
    images: &[Vec<u16>],
    options: &AtlasOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<Atlas> {
    let layer = options.layer;
    if layer > model.n_layer() {
        return Err(Error::invalid(format!(
            "layer {layer} does not exist: the model has layers 0 (the embeddings) to {}",
            model.n_layer()
        )));
    }
    if images.is_empty() || options.top == 0 {
        return Err(Error::invalid(
            "an atlas needs at least one image and --top of 1 or more",
        ));
    }
    let d = model.n_embd();
    // Each batch's residual stream at `layer` and, past the embeddings and `with_neurons`, the
    // neurons of the block that writes it: `[positions × d]` and `[positions × 4d]` per image.
    let states = |batch: &[Vec<u16>], with_neurons: bool| -> Result<(Vec<f32>, Option<Vec<f32>>)> {
        let (inputs, _) = model.inputs_and_targets(batch.iter().map(Vec::as_slice));
        let options = ForwardOptions {
            residual: true,
            ..Default::default()
        };
        let mut pass = model.forward_with(inputs, options);
        let stream = pass.residual.swap_remove(layer);
        let neurons = if layer > 0 && with_neurons {
            let input = pass.residual.swap_remove(layer - 1);
            Some(floats(model.mlp_neurons(layer - 1, input).into_data())?)
        } else {
            None
        };
        Ok((floats(stream.into_data())?, neurons))
    };
    let batch = options.batch.max(1);
    let fit_rows: Vec<f32> = images[..options.fit_images.clamp(1, images.len())]
        .chunks(batch)
        .map(|chunk| states(chunk, false).map(|(stream, _)| stream))
        .collect::<Result<Vec<_>>>()?
        .concat();
    let principal = Principal::fit(&fit_rows, d, options.directions)
        .ok_or_else(|| Error::invalid("no states to fit directions on"))?;
    drop(fit_rows);
    let k = principal.components.len();
    let (mut highs, mut lows) = (vec![Best::default(); k], vec![Best::default(); k]);
    let width = 4 * d;
    let mut neuron_best = vec![Best::default(); if layer > 0 { width } else { 0 }];
    let mut spreads = vec![Spread::default(); neuron_best.len()];
    let positions = model.n_positions();
    for (b, chunk) in images.chunks(batch).enumerate() {
        let (stream, neurons) = states(chunk, true)?;
        let scores = principal.scores(&stream);
        for i in 0..chunk.len() {
            let image = b * batch + i;
            let rows = &scores[i * positions * k..(i + 1) * positions * k];
            offer_peaks(&mut highs, rows, k, 1.0, image, options.top);
            offer_peaks(&mut lows, rows, k, -1.0, image, options.top);
            if let Some(neurons) = &neurons {
                let rows = &neurons[i * positions * width..(i + 1) * positions * width];
                offer_peaks(&mut neuron_best, rows, width, 1.0, image, options.top);
                for row in rows.chunks_exact(width) {
                    for (s, &v) in spreads.iter_mut().zip(row) {
                        s.n += 1.0;
                        s.sum += v as f64;
                        s.squares += (v as f64) * (v as f64);
                    }
                }
            }
        }
        progress((b * batch + chunk.len()).min(images.len()), images.len());
    }

    let mut units = Vec::new();
    for (index, (high, low)) in highs.into_iter().zip(lows).enumerate() {
        let variance = principal.variances[index];
        for (sign, best) in [(1i8, high), (-1, low)] {
            units.push((UnitKind::Direction, index, sign, variance, best));
        }
    }
    let mut by_spread: Vec<usize> = (0..spreads.len()).collect();
    by_spread.sort_by(|&a, &b| spreads[b].variance().total_cmp(&spreads[a].variance()));
    by_spread.truncate(options.neurons);
    for index in by_spread {
        let best = std::mem::take(&mut neuron_best[index]);
        units.push((UnitKind::Neuron, index, 1, spreads[index].variance(), best));
    }

    // The images the hits name, each once.
    let mut images_used: Vec<usize> = Vec::new();
    let units = units
        .into_iter()
        .map(|(kind, index, sign, variance, best)| Unit {
            kind,
            index,
            sign,
            variance,
            top: best
                .0
                .into_iter()
                .map(|(image, pixel, value)| {
                    let at = images_used.iter().position(|&i| i == image);
                    let at = at.unwrap_or_else(|| {
                        images_used.push(image);
                        images_used.len() - 1
                    });
                    Hit {
                        image: at,
                        pixel,
                        activation: sign as f32 * value,
                    }
                })
                .collect(),
        })
        .collect();
    Ok(Atlas {
        layer,
        scanned: images.len(),
        images: images_used,
        units,
    })
}
