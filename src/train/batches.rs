//! The batches of a run: a shuffled pass over the data per epoch, with each sample's augmentation.

use rand::seq::SliceRandom;
use rand::{SeedableRng, rngs::ChaCha8Rng};

use crate::data::augment::Augment;

/// Token sequences in a deterministic order: the order and augmentation of every step are a function
/// of (seed, step) alone, so a resumed run sees exactly the batches the uninterrupted one would have.
pub struct Batches<'a> {
    sequences: &'a [Vec<u16>],
    width: usize,
    seed: u64,
    augment: Augment,
    epoch: Option<(usize, Vec<usize>)>,
}

impl<'a> Batches<'a> {
    pub fn new(sequences: &'a [Vec<u16>], width: usize, seed: u64, augment: Augment) -> Self {
        Self {
            sequences,
            width,
            seed,
            augment,
            epoch: None,
        }
    }

    /// The sequences of step `step` (a shuffled pass over the data per epoch), and which of the
    /// data they are (to look up labels).
    pub fn batch(&mut self, step: usize, size: usize) -> (Vec<Vec<u16>>, Vec<usize>) {
        let n = self.sequences.len();
        (step * size..(step + 1) * size)
            .map(|g| {
                let (epoch, pos) = (g / n, g % n);
                if self.epoch.as_ref().is_none_or(|(e, _)| *e != epoch) {
                    let mut order: Vec<usize> = (0..n).collect();
                    order.shuffle(&mut ChaCha8Rng::seed_from_u64(
                        self.seed ^ (epoch as u64) << 32,
                    ));
                    self.epoch = Some((epoch, order));
                }
                let index = self.epoch.as_ref().expect("set above").1[pos];
                let mut seq = self.sequences[index].clone();
                self.augment
                    .apply(&mut seq, self.width, self.seed, g as u64);
                (seq, index)
            })
            .unzip()
    }
}
