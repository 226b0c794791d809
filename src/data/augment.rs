//! Training-time augmentation of token images: random horizontal flips and random crops.
//!
//! Every draw comes from a generator seeded by (seed, sample number), so a sample is augmented the
//! same way whenever it is drawn again, which keeps `--resume` exact.

use rand::{RngExt, SeedableRng, rngs::ChaCha8Rng};
use serde::{Deserialize, Serialize};

/// What to do to each training image.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Augment {
    /// Mirror left-right half the time (label-preserving for natural images).
    pub flip: bool,
    /// Pad every side by this many pixels, repeating the edge, and cut the image's own size back
    /// out at a random place: a shift of up to `crop` pixels each way.
    pub crop: usize,
}

impl Augment {
    pub(crate) fn is_identity(&self) -> bool {
        !self.flip && self.crop == 0
    }

    /// Training sample number `sample` (counted over the whole run) of a `width`-wide image.
    pub fn apply(&self, tokens: &mut [u16], width: usize, seed: u64, sample: u64) {
        if self.is_identity() {
            return; // no generator: one per sample is not free
        }
        let mut rng =
            ChaCha8Rng::seed_from_u64(seed.wrapping_add(sample.wrapping_mul(0x9E37_79B9)));
        // The flip coin is drawn first, so runs from before crops existed keep their flips.
        if self.flip && rng.random::<bool>() {
            tokens.chunks_mut(width).for_each(<[u16]>::reverse);
        }
        if self.crop > 0 {
            let span = 2 * self.crop as i64;
            let dy = rng.random_range(0..=span) - self.crop as i64;
            let dx = rng.random_range(0..=span) - self.crop as i64;
            shift(tokens, width, dy, dx);
        }
    }
}

/// Moves the image by (`dy`, `dx`): pixel (y, x) takes the value at (y + dy, x + dx), clamped to the
/// image, which is a crop of the edge-padded image.
pub(crate) fn shift(tokens: &mut [u16], width: usize, dy: i64, dx: i64) {
    if dy == 0 && dx == 0 {
        return;
    }
    let height = tokens.len() / width;
    let source = tokens.to_vec();
    let clamp = |v: i64, size: usize| v.clamp(0, size as i64 - 1) as usize;
    for y in 0..height {
        let sy = clamp(y as i64 + dy, height);
        for x in 0..width {
            tokens[y * width + x] = source[sy * width + clamp(x as i64 + dx, width)];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shift_repeats_the_edge() {
        // 3 rows of 3: values 0..9.
        let mut image: Vec<u16> = (0..9).collect();
        shift(&mut image, 3, 1, -1);
        assert_eq!(image, [3, 3, 4, 6, 6, 7, 6, 6, 7]);
    }

    #[test]
    fn crops_cover_every_shift_within_the_padding_and_no_more() {
        let augment = Augment {
            flip: false,
            crop: 1,
        };
        // A 5x5 image with one marked pixel in the centre: where it lands tells the shift.
        let mut seen = std::collections::BTreeSet::new();
        for sample in 0..200 {
            let mut image = vec![0u16; 25];
            image[12] = 1;
            augment.apply(&mut image, 5, 7, sample);
            let at = image.iter().position(|&v| v == 1).expect("the mark stays");
            seen.insert((at / 5, at % 5));
            let mut again = vec![0u16; 25];
            again[12] = 1;
            augment.apply(&mut again, 5, 7, sample);
            assert_eq!(image, again, "the same sample is cropped the same way");
        }
        let expected: std::collections::BTreeSet<_> =
            (1..4).flat_map(|y| (1..4).map(move |x| (y, x))).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn nothing_happens_without_flip_or_crop() {
        let mut image: Vec<u16> = (0..12).collect();
        Augment::default().apply(&mut image, 4, 1, 3);
        assert_eq!(image, (0..12).collect::<Vec<u16>>());
    }
}
