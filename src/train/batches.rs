//! The batches of a run: a shuffled pass over the data per epoch, with each sample's augmentation.

use rand::seq::SliceRandom;
use rand::{SeedableRng, rngs::ChaCha8Rng};

use crate::data::augment::Augment;
use crate::data::stream::ShardStream;
use crate::error::Result;

/// What a run trains on: token sequences in memory (with their labels, when the run is labelled), or
/// a stream of tar shards read as the steps need them (unlabelled pretraining).
pub enum TrainData<'a> {
    InMemory {
        sequences: &'a [Vec<u16>],
        labels: Option<&'a [usize]>,
    },
    Stream(ShardStream),
}

impl<'a> From<&'a [Vec<u16>]> for TrainData<'a> {
    fn from(sequences: &'a [Vec<u16>]) -> Self {
        TrainData::InMemory {
            sequences,
            labels: None,
        }
    }
}

impl<'a> From<&'a Vec<Vec<u16>>> for TrainData<'a> {
    fn from(sequences: &'a Vec<Vec<u16>>) -> Self {
        sequences.as_slice().into()
    }
}

impl TrainData<'_> {
    /// Examples per epoch.
    pub fn len(&self) -> usize {
        match self {
            TrainData::InMemory { sequences, .. } => sequences.len(),
            TrainData::Stream(stream) => stream.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A step's token sequences, and their labels when the data has them.
pub type StepImages = (Vec<Vec<u16>>, Option<Vec<usize>>);

/// Token sequences in a deterministic order: the order and augmentation of every step are a function
/// of (seed, step) alone, so a resumed run sees exactly the batches the uninterrupted one would have.
pub struct Batches<'a> {
    data: TrainData<'a>,
    width: usize,
    seed: u64,
    augment: Augment,
    epoch: Option<(usize, Vec<usize>)>,
}

impl<'a> Batches<'a> {
    pub fn new(data: impl Into<TrainData<'a>>, width: usize, seed: u64, augment: Augment) -> Self {
        Self {
            data: data.into(),
            width,
            seed,
            augment,
            epoch: None,
        }
    }

    /// The sequences of step `step`, and their labels when the data has them.
    pub fn batch(&mut self, step: usize, size: usize) -> Result<StepImages> {
        let mut sequences = Vec::with_capacity(size);
        let mut labels = Vec::with_capacity(size);
        for g in step * size..(step + 1) * size {
            let mut seq = match &mut self.data {
                TrainData::InMemory {
                    sequences: all,
                    labels: all_labels,
                } => {
                    // A shuffled pass over the data per epoch.
                    let n = all.len();
                    let (epoch, pos) = (g / n, g % n);
                    if self.epoch.as_ref().is_none_or(|(e, _)| *e != epoch) {
                        let mut order: Vec<usize> = (0..n).collect();
                        order.shuffle(&mut ChaCha8Rng::seed_from_u64(
                            self.seed ^ (epoch as u64) << 32,
                        ));
                        self.epoch = Some((epoch, order));
                    }
                    let index = self.epoch.as_ref().expect("set above").1[pos];
                    if let Some(all_labels) = all_labels {
                        labels.push(all_labels[index]);
                    }
                    all[index].clone()
                }
                TrainData::Stream(stream) => stream.get(g)?,
            };
            self.augment
                .apply(&mut seq, self.width, self.seed, g as u64);
            sequences.push(seq);
        }
        let labelled = matches!(
            self.data,
            TrainData::InMemory {
                labels: Some(_),
                ..
            }
        );
        Ok((sequences, labelled.then_some(labels)))
    }
}
