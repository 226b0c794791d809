//! Training data larger than memory: tar shards (`shards.rs`) streamed through a seeded shuffle buffer,
//! decoded and tokenized on background threads, with any step's batch reachable exactly.
//!
//! Each epoch reads the shards in a seeded order, front to back. The stream is cut into windows of
//! `window` samples (the shuffle buffer), and each window is served in a seeded order of its own.
//! Example `g` of the endless stream is therefore a function of (seed, g) alone: epoch `g / len`,
//! window `(g % len) / window`, and a place in it. A resumed run restarts the reader at its
//! window, passing over the samples before it by their tar headers, and sees the very examples the
//! uninterrupted run saw. Memory holds a few windows at a time, however big the dataset is.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use rand::seq::SliceRandom;
use rand::{SeedableRng, rngs::ChaCha8Rng};
use rayon::prelude::*;

use super::shards::{self, Record};
use crate::error::{Error, Result};
use crate::pixels::palette::Tokenizer;

/// The default number of samples a shuffle window holds.
pub const DEFAULT_WINDOW: usize = 4096;

/// The tokenized examples of a shard dataset, endlessly, in a seeded order read as it is needed.
pub struct ShardStream {
    source: Arc<Source>,
    /// The window examples are being served from.
    current: Option<Window>,
    feed: Option<Feed>,
}

/// The background reader's windows, and which one it hands over next.
struct Feed {
    windows: Receiver<Result<Window>>,
    next: (usize, usize),
}

/// What the background reader needs: the shards (with how many of their samples are trained on),
/// the shuffle's size and seed, and the tokenizer.
struct Source {
    shards: Vec<(PathBuf, usize)>,
    len: usize,
    window: usize,
    seed: u64,
    tokenizer: Tokenizer,
}

/// One shuffle window's examples, decoded and tokenized, and the order they are served in.
struct Window {
    /// (epoch, window number in the epoch)
    at: (usize, usize),
    sequences: Vec<Vec<u16>>,
    order: Vec<usize>,
}

impl ShardStream {
    /// Opens the shards in `dir`: the first `limit` samples (in shard-name order) when given, of
    /// which the last `holdout` are not trained on; they are returned, tokenized, to validate on.
    pub fn open(
        dir: &Path,
        tokenizer: Tokenizer,
        seed: u64,
        window: usize,
        limit: Option<usize>,
        holdout: usize,
    ) -> Result<(Self, Vec<Vec<u16>>)> {
        if window == 0 {
            return Err(Error::invalid(
                "the shuffle window must hold at least 1 sample",
            ));
        }
        let mut shards = shards::index(dir)?;
        // Keep the first `limit` samples, then set the last `holdout` of them aside.
        let mut budget = limit.unwrap_or(usize::MAX);
        for (_, count) in &mut shards {
            *count = (*count).min(budget);
            budget -= *count;
        }
        let total: usize = shards.iter().map(|(_, c)| c).sum();
        if holdout >= total {
            return Err(Error::invalid(format!(
                "--holdout {holdout} leaves no training images ({} holds {total})",
                dir.display()
            )));
        }
        let mut held = Vec::new();
        let mut left = holdout;
        for (path, count) in shards.iter_mut().rev() {
            let taken = left.min(*count);
            if taken > 0 {
                let mut records = Vec::new();
                read_range(path, *count - taken, taken, &mut records)?;
                held.splice(0..0, records.into_iter().map(|r| (path.clone(), r)));
            }
            *count -= taken;
            left -= taken;
        }
        let held = held
            .iter()
            .map(|(path, record)| Ok(tokenizer.tokenize(&record.decode(path)?)))
            .collect::<Result<Vec<_>>>()?;
        shards.retain(|(_, count)| *count > 0);
        let source = Source {
            len: total - holdout,
            shards,
            window,
            seed,
            tokenizer,
        };
        let stream = Self {
            source: Arc::new(source),
            current: None,
            feed: None,
        };
        Ok((stream, held))
    }

    /// Examples per epoch.
    pub fn len(&self) -> usize {
        self.source.len
    }

    pub fn is_empty(&self) -> bool {
        self.source.len == 0
    }

    /// Example `g` of the endless stream (epoch `g / len`). Fast when `g` follows the previous one;
    /// any other `g` restarts the reader at its window.
    pub fn get(&mut self, g: usize) -> Result<Vec<u16>> {
        let source = &self.source;
        let (epoch, pos) = (g / source.len, g % source.len);
        let at = (epoch, pos / source.window);
        if self.current.as_ref().is_none_or(|w| w.at != at) {
            self.current = Some(self.fetch(at)?);
        }
        let window = self.current.as_ref().expect("fetched above");
        Ok(window.sequences[window.order[pos % self.source.window]].clone())
    }

    /// Window `at`, from the reader if it is the next one it makes, else from a reader restarted there.
    fn fetch(&mut self, at: (usize, usize)) -> Result<Window> {
        if self.feed.as_ref().is_none_or(|feed| feed.next != at) {
            // Dropping the old receiver stops the old reader at its next window.
            let (sender, receiver) = sync_channel(1);
            let source = Arc::clone(&self.source);
            std::thread::Builder::new()
                .name("igpt-shard-reader".into())
                .spawn(move || source.produce(at, &sender))
                .map_err(|e| Error::invalid(format!("cannot start the shard reader: {e}")))?;
            self.feed = Some(Feed {
                windows: receiver,
                next: at,
            });
        }
        let feed = self.feed.as_mut().expect("set above");
        let window = feed
            .windows
            .recv()
            .map_err(|_| Error::invalid("the shard reader stopped"))??;
        feed.next = self.source.after(at);
        Ok(window)
    }
}

impl Source {
    /// The window after `at` (the next epoch's first after an epoch's last).
    fn after(&self, (epoch, w): (usize, usize)) -> (usize, usize) {
        if (w + 1) * self.window >= self.len {
            (epoch + 1, 0)
        } else {
            (epoch, w + 1)
        }
    }

    /// The epoch's shard order (indices into `shards`).
    fn shard_order(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.shards.len()).collect();
        order.shuffle(&mut rng(self.seed, epoch, usize::MAX));
        order
    }

    /// The background reader: makes windows from `at` on and sends them until the receiver is gone.
    fn produce(&self, mut at: (usize, usize), sender: &SyncSender<Result<Window>>) {
        loop {
            let made = self.read_epoch(at, &mut |window| sender.send(Ok(window)).is_ok());
            match made {
                Ok(true) => at = (at.0 + 1, 0),
                Ok(false) => return,
                Err(e) => {
                    let _ = sender.send(Err(e));
                    return;
                }
            }
        }
    }

    /// Reads epoch `at.0` from window `at.1` to its end, handing each window to `send`; `Ok(false)`
    /// when `send` declines one (the stream was dropped or restarted).
    fn read_epoch(
        &self,
        (epoch, first): (usize, usize),
        send: &mut dyn FnMut(Window) -> bool,
    ) -> Result<bool> {
        let order = self.shard_order(epoch);
        // Find the shard and the sample in it where window `first` begins.
        let mut skip = first * self.window;
        let mut k = 0;
        while skip >= self.shards[order[k]].1 {
            skip -= self.shards[order[k]].1;
            k += 1;
        }
        let mut w = first;
        let mut raw: Vec<(usize, Record)> = Vec::with_capacity(self.window);
        for &shard in &order[k..] {
            let (path, count) = &self.shards[shard];
            let mut wanted = count - skip;
            let mut declined = false;
            let mut failed = None;
            let read = shards::read(path, skip, |record| {
                raw.push((shard, record));
                wanted -= 1;
                let window_len = self.window.min(self.len - w * self.window);
                if raw.len() == window_len {
                    match self.make_window((epoch, w), std::mem::take(&mut raw)) {
                        Ok(window) => {
                            if send(window) {
                                w += 1;
                            } else {
                                declined = true;
                            }
                        }
                        Err(e) => failed = Some(e),
                    }
                }
                if declined || failed.is_some() || wanted == 0 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })?;
            if let Some(e) = failed {
                return Err(e);
            }
            if declined {
                return Ok(false);
            }
            if wanted != 0 {
                return Err(Error::format(
                    path,
                    format!(
                        "holds {read} samples, fewer than the {count} it held when the run began"
                    ),
                ));
            }
            skip = 0;
        }
        Ok(true)
    }

    /// Decodes and tokenizes a window's samples in parallel, and draws the order they are served in.
    fn make_window(&self, at: (usize, usize), raw: Vec<(usize, Record)>) -> Result<Window> {
        let sequences = raw
            .par_iter()
            .map(|(shard, record)| {
                let image = record.decode(&self.shards[*shard].0)?;
                Ok(self.tokenizer.tokenize(&image))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut order: Vec<usize> = (0..sequences.len()).collect();
        order.shuffle(&mut rng(self.seed, at.0, at.1));
        Ok(Window {
            at,
            sequences,
            order,
        })
    }
}

/// Reads samples `first..first + count` of one shard.
fn read_range(path: &Path, first: usize, count: usize, out: &mut Vec<Record>) -> Result<()> {
    shards::read(path, first, |record| {
        out.push(record);
        if out.len() == count {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    if out.len() != count {
        return Err(Error::format(path, "holds fewer samples than it did"));
    }
    Ok(())
}

/// The generator of one shuffle: the window's (`usize::MAX`: the epoch's shard order).
fn rng(seed: u64, epoch: usize, window: usize) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&(epoch as u64).to_le_bytes());
    key[16..24].copy_from_slice(&(window as u64).to_le_bytes());
    key[24..].copy_from_slice(b"igpt-shd");
    ChaCha8Rng::from_seed(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pixels::palette::Palette;
    use crate::pixels::raster::Raster;

    /// 2x2 grey images whose first pixel's token says which sample they are (up to 256).
    fn dataset(dir: &Path, shard_sizes: &[usize]) -> Tokenizer {
        let mut first = 0;
        for (i, &n) in shard_sizes.iter().enumerate() {
            let images: Vec<Raster> = (first..first + n)
                .map(|k| Raster::new(2, 2, 3, vec![k as u8; 12]).unwrap())
                .collect();
            shards::write(&dir.join(format!("s{i}.tar")), first, &images, None).unwrap();
            first += n;
        }
        let levels = (0..256).map(|v| v as f32 / 127.5 - 1.0).collect();
        Tokenizer {
            palette: Palette::new(1, levels).unwrap(),
            width: 2,
            height: 2,
        }
    }

    fn ids(stream: &mut ShardStream, range: std::ops::Range<usize>) -> Vec<u16> {
        range.map(|g| stream.get(g).unwrap()[0]).collect()
    }

    #[test]
    fn every_epoch_is_a_shuffle_of_every_sample_and_any_point_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let tokenizer = dataset(dir.path(), &[7, 5, 9]);
        let open = || {
            ShardStream::open(dir.path(), tokenizer.clone(), 3, 4, None, 0)
                .unwrap()
                .0
        };
        let mut stream = open();
        assert_eq!(stream.len(), 21);
        let run = ids(&mut stream, 0..63);
        for epoch in run.chunks(21) {
            let mut sorted = epoch.to_vec();
            sorted.sort();
            assert_eq!(sorted, (0..21).collect::<Vec<u16>>());
        }
        assert_ne!(run[..21], run[21..42], "each epoch has its own order");
        assert_ne!(run[..21], (0..21).collect::<Vec<u16>>());
        // Started anywhere, a stream continues exactly as the uninterrupted one.
        for start in [1, 4, 20, 21, 30, 47] {
            assert_eq!(ids(&mut open(), start..63), run[start..], "from {start}");
        }
        // Jumping back and forth in one stream too.
        assert_eq!(ids(&mut stream, 5..9), run[5..9]);
    }

    #[test]
    fn limit_and_holdout_take_samples_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let tokenizer = dataset(dir.path(), &[4, 4, 4]);
        let (mut stream, held) =
            ShardStream::open(dir.path(), tokenizer.clone(), 0, 3, Some(10), 3).unwrap();
        assert_eq!(stream.len(), 7);
        assert_eq!(held.iter().map(|s| s[0]).collect::<Vec<_>>(), [7, 8, 9]);
        let mut epoch = ids(&mut stream, 0..7);
        epoch.sort();
        assert_eq!(epoch, (0..7).collect::<Vec<u16>>());
        assert!(ShardStream::open(dir.path(), tokenizer, 0, 3, Some(10), 10).is_err());
    }
}
