//! Activation patching: run one image with a region of its hidden states at one layer taken from
//! another image's run, to see what that region carries. The Δbits map shows where the first
//! image's pixels became more or less expected; a completion under the patch shows what the model
//! now draws.
//!
//! "The hidden state of pixel p" is the inspector's: the state at the position that predicts pixel
//! p, having read every pixel before it (see the module doc of [`super`]).

use std::fmt;
use std::str::FromStr;

use burn::tensor::backend::Backend;
use serde::Serialize;

use super::intervention::Change;
use crate::error::{Error, Result};
use crate::model::patch::Patch;
use crate::model::{ForwardOptions, ImageGpt};
use crate::pixels::tokens::{check_image, inputs_and_targets};

/// A rectangle of pixels, corners included, counted from 0 at the top left.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Region {
    pub top: usize,
    pub left: usize,
    pub bottom: usize,
    pub right: usize,
}

impl FromStr for Region {
    type Err = Error;

    /// `TOP,LEFT,BOTTOM,RIGHT`, e.g. `0,0,13,27` for the top half of a 28×28 image.
    fn from_str(text: &str) -> Result<Self> {
        let numbers: Vec<usize> = text
            .split(',')
            .map(|s| s.trim().parse::<usize>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| Error::invalid(format!("cannot read the region `{text}`")))?;
        let [top, left, bottom, right] = numbers[..] else {
            return Err(Error::invalid(format!(
                "the region `{text}` needs four numbers: TOP,LEFT,BOTTOM,RIGHT (corners included, from 0)"
            )));
        };
        Ok(Self {
            top,
            left,
            bottom,
            right,
        })
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rows {}-{}, columns {}-{}",
            self.top, self.bottom, self.left, self.right
        )
    }
}

impl Region {
    /// Refuses a region that is empty or leaves a `width` × `height` image.
    pub fn check(&self, width: usize, height: usize) -> Result<()> {
        if self.top > self.bottom || self.left > self.right {
            return Err(Error::invalid(format!(
                "the region {self} is empty: top must not pass bottom, nor left right"
            )));
        }
        if self.bottom >= height || self.right >= width {
            return Err(Error::invalid(format!(
                "the region {self} leaves the {width}×{height} image (rows and columns from 0)"
            )));
        }
        Ok(())
    }

    /// Its pixels as raster indices, in order.
    pub fn pixels(&self, width: usize) -> Vec<usize> {
        (self.top..=self.bottom)
            .flat_map(|row| (self.left..=self.right).map(move |col| row * width + col))
            .collect()
    }
}

/// The patch that puts `source`'s hidden states over `region` at `layer` (0: the embeddings;
/// `n_layer`: the last block's output) into another image's run.
pub fn patch_from<B: Backend>(
    model: &ImageGpt<B>,
    source: &[u16],
    layer: usize,
    region: Region,
    width: usize,
) -> Result<Patch<B>> {
    check_image(source, width, model.n_positions(), model.n_colors())?;
    if layer > model.n_layer() {
        return Err(Error::invalid(format!(
            "layer {layer}: the model's stream has layers 0 (the embeddings) to {}",
            model.n_layer()
        )));
    }
    region.check(width, source.len() / width)?;
    let (inputs, _) =
        inputs_and_targets::<B>(std::iter::once(source), model.n_colors(), &model.device());
    let options = ForwardOptions {
        residual: true,
        ..Default::default()
    };
    let states = model
        .forward_with(inputs, options)
        .residual
        .swap_remove(layer);
    Patch::new(layer, &region.pixels(width), states)
}

/// What patching did to one image.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PatchReport {
    /// The layer and region patched.
    pub layer: usize,
    pub region: Region,
    /// `delta_bits` is positive where the patch made the image's own pixels less expected.
    #[serde(flatten)]
    pub change: Change,
    /// The mean change over the pixels outside the region: what the rest of the image read from it
    /// (inside, the patched states predict the other image's pixels).
    pub mean_delta_outside: f64,
}

impl PatchReport {
    /// From the patched run's surprise per pixel and the intact run's, on an image `width` wide.
    pub fn new(
        layer: usize,
        region: Region,
        bits_per_pixel: Vec<f32>,
        intact: &[f32],
        width: usize,
    ) -> Self {
        let change = Change::new(bits_per_pixel, intact);
        let inside = region.pixels(width);
        let outside: Vec<f64> = (0..change.delta_bits.len())
            .filter(|p| !inside.contains(p))
            .map(|p| f64::from(change.delta_bits[p]))
            .collect();
        let mean_delta_outside = outside.iter().sum::<f64>() / outside.len().max(1) as f64;
        Self {
            layer,
            region,
            change,
            mean_delta_outside,
        }
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use crate::inspect::floats;
    use crate::inspect::intervention::bits_per_pixel;
    use crate::model::ImageGptConfig;
    use crate::sample::{Decoding, Generation, SamplingConfig};
    use burn::backend::Flex;
    use burn::module::Param;
    use burn::tensor::{Distribution, Tensor};

    fn model() -> ImageGpt<Flex> {
        // A 4×4 image of 16 colours through two layers, random weights; the head too (a fresh
        // model's is zero, which predicts every pixel alike).
        let mut model = ImageGptConfig::new(16, 16)
            .with_n_embd(32)
            .with_n_layer(2)
            .with_n_head(4)
            .init(&Default::default());
        let head = Tensor::random(
            [32, 16],
            Distribution::Normal(0.0, 1.0),
            &Default::default(),
        );
        model.lm_head.weight = Param::from_tensor(head);
        model.materialised()
    }

    fn image(seed: u16) -> Vec<u16> {
        (0..16).map(|i| (i * 7 + seed * 3) % 16).collect()
    }

    fn bits(model: &ImageGpt<Flex>, ids: &[u16], patch: Option<&Patch<Flex>>) -> Vec<f32> {
        floats(bits_per_pixel(model, ids, patch).into_data()).unwrap()
    }

    #[test]
    fn patching_an_image_with_itself_changes_nothing() {
        let (model, ids) = (model(), image(1));
        let region = "1,0,2,3".parse().unwrap();
        let patch = patch_from(&model, &ids, 1, region, 4).unwrap();
        let (intact, patched) = (bits(&model, &ids, None), bits(&model, &ids, Some(&patch)));
        for (a, b) in intact.iter().zip(&patched) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn a_patch_changes_only_its_region_and_the_pixels_after_it() {
        let model = model();
        let (ids, other) = (image(1), image(2));
        // Rows 2 and 3, columns 1-2: the first patched pixel is 9.
        let region: Region = "2,1,3,2".parse().unwrap();
        let patch = patch_from(&model, &other, 2, region, 4).unwrap();
        let (intact, patched) = (bits(&model, &ids, None), bits(&model, &ids, Some(&patch)));
        let changed: Vec<usize> = (0..16)
            .filter(|&p| (intact[p] - patched[p]).abs() > 1e-5)
            .collect();
        assert!(
            changed.iter().all(|&p| p >= 9),
            "changed before the region: {changed:?}"
        );
        // At the last layer a pixel's prediction reads only its own state: exactly the region.
        assert_eq!(changed, region.pixels(4), "{intact:?}\n{patched:?}");
        // At the embeddings, later pixels read the patched states through attention too.
        let early = patch_from(&model, &other, 0, region, 4).unwrap();
        let spread = bits(&model, &ids, Some(&early));
        assert!(
            (0..16).any(|p| !region.pixels(4).contains(&p) && (spread[p] - intact[p]).abs() > 1e-5)
        );
    }

    #[test]
    fn sampling_under_a_patch_sees_it_through_the_cache() {
        // A cached completion under a patch draws the tokens a reforward (whole sequence each step)
        // under the same patch draws: the patch reaches positions in the prefix and ahead of it.
        let model = model();
        let (ids, other) = (image(1), image(2));
        let patch = patch_from(&model, &other, 1, "1,1,3,2".parse().unwrap(), 4).unwrap();
        let run = |decoding| {
            let mut generation = Generation::new(
                &model,
                vec![ids[..6].to_vec()],
                SamplingConfig::zero_as_off(0.0, 0, 0.0),
                decoding,
                3,
            )
            .unwrap()
            .with_patch(Some(patch.clone()));
            while !generation.is_done() {
                generation.step(&model);
            }
            generation.read_back().unwrap();
            generation.into_sequences()
        };
        let cached = run(Decoding::Cached);
        assert_eq!(cached, run(Decoding::Reforward));
        // Greedy completions with and without the patch differ (else the check above shows nothing).
        let mut plain = Generation::new(
            &model,
            vec![ids[..6].to_vec()],
            SamplingConfig::zero_as_off(0.0, 0, 0.0),
            Decoding::Cached,
            3,
        )
        .unwrap();
        while !plain.is_done() {
            plain.step(&model);
        }
        plain.read_back().unwrap();
        assert_ne!(cached, plain.into_sequences());
    }

    #[test]
    fn regions_and_layers_outside_the_model_are_refused() {
        let (model, ids) = (model(), image(1));
        let outside: Region = "0,0,4,1".parse().unwrap();
        assert!(patch_from(&model, &ids, 1, outside, 4).is_err());
        let empty: Region = "2,0,1,1".parse().unwrap();
        assert!(patch_from(&model, &ids, 1, empty, 4).is_err());
        assert!(patch_from(&model, &ids, 3, "0,0,0,0".parse().unwrap(), 4).is_err());
        assert!("1,2,3".parse::<Region>().is_err());
    }
}
