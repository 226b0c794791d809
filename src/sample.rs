//! Sampling and completion: the next token is drawn on the device (Gumbel-max) and fed straight back,
//! so the loop needs no host readback per token; tokens are read back only when the caller asks.
//!
//! The Gumbel noise is igpt's own stream, not the backend's: a value per (seed, image, position,
//! colour), the same on every backend and at every batch size. So WebGPU and the CPU draw the same
//! image wherever their logits pick the same colour, and a generation resumed at any token (after a
//! lost GPU) finishes as if it had never stopped.

use std::ops::Range;

use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::{Rng, SeedableRng, rngs::ChaCha8Rng};

use crate::error::{Error, Result};
use crate::model::patch::Patch;
use crate::model::{ForwardOptions, ImageGpt, KvCache, Workload};
use crate::pixels::tokens::{check_ids, continuation_input};

/// How the next token is chosen from the logits.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingConfig {
    /// Divides the logits; 0 means greedy (always the most likely colour).
    pub temperature: f32,
    /// Keep only the k most likely colours.
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely colours whose probability reaches p (nucleus sampling).
    pub top_p: Option<f32>,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: None,
            top_p: None,
        }
    }
}

impl SamplingConfig {
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// The settings as the page gives them: a `top_k` of 0, or a `top_p` of 0 or at least 1, is off.
    pub fn zero_as_off(temperature: f32, top_k: usize, top_p: f32) -> Self {
        Self {
            temperature,
            top_k: (top_k > 0).then_some(top_k),
            top_p: (top_p > 0.0 && top_p < 1.0).then_some(top_p),
        }
    }

    pub fn validate(&self, n_colors: usize) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(Error::invalid(format!(
                "temperature must be 0 or more, not {}",
                self.temperature
            )));
        }
        if self.top_k.is_some_and(|k| k == 0 || k > n_colors) {
            return Err(Error::invalid(format!(
                "top-k must be between 1 and {n_colors}"
            )));
        }
        if self.top_p.is_some_and(|p| !(p > 0.0 && p <= 1.0)) {
            return Err(Error::invalid("top-p must be in (0, 1]"));
        }
        Ok(())
    }

    /// Draws one token per row of `logits` (`[batch, K]`), on the device: `[batch, 1]` ids. Row `i`
    /// is image `images.start + i`, drawing its token at `position` with `noise`.
    pub fn draw<B: Backend>(
        &self,
        logits: Tensor<B, 2>,
        noise: &SamplingNoise,
        images: Range<usize>,
        position: usize,
    ) -> Tensor<B, 2, Int> {
        if self.temperature == 0.0 {
            return logits.argmax(1);
        }
        let logits = self.reshape(logits);
        let k = logits.dims()[1];
        // Gumbel-max: argmax(logits + G) with G = -ln(-ln U) is an exact draw from softmax(logits).
        let gumbel = noise.gumbel(images, position, k, &logits.device());
        (logits + gumbel).argmax(1)
    }

    /// The probability [`draw`](Self::draw) gives each colour, `[batch, K]`, from the same logits:
    /// what the inspector shows for a temperature and top-k. Greedy puts all of it on the argmax.
    pub fn probabilities<B: Backend>(&self, logits: Tensor<B, 2>) -> Tensor<B, 2> {
        let [b, k] = logits.dims();
        if self.temperature == 0.0 {
            let ids = Tensor::<B, 1, Int>::arange(0..k as i64, &logits.device())
                .reshape([1, k])
                .expand([b, k]);
            return ids.equal(logits.argmax(1).expand([b, k])).float();
        }
        softmax(self.reshape(logits), 1)
    }

    /// The logits sampling draws from (temperature above 0): divided by the temperature, with the
    /// colours top-k and top-p leave out at -inf.
    fn reshape<B: Backend>(&self, logits: Tensor<B, 2>) -> Tensor<B, 2> {
        let [b, k] = logits.dims();
        let mut logits = logits / self.temperature;
        if let Some(top_k) = self.top_k.filter(|&t| t < k) {
            // The k-th largest logit per row is the lowest one kept.
            let kth = logits
                .clone()
                .topk(top_k, 1)
                .slice([0..b, top_k - 1..top_k]);
            let drop = logits.clone().lower(kth.expand([b, k]));
            logits = logits.mask_fill(drop, f32::NEG_INFINITY);
        }
        if let Some(p) = self.top_p.filter(|&p| p < 1.0 && k > 1) {
            // Probabilities in descending order, their running sum, and the smallest probability still
            // needed to reach p. The order comes from topk (a GPU reduce) plus the minimum: Burn's GPU
            // backends sort on the host, which the browser cannot do synchronously.
            let probs = softmax(logits.clone(), 1);
            let sorted = Tensor::cat(
                vec![probs.clone().topk(k - 1, 1), probs.clone().min_dim(1)],
                1,
            );
            let before = sorted.clone().cumsum(1) - sorted.clone();
            let needed = before.lower_elem(p);
            let floor = sorted
                .mask_fill(needed.bool_not(), f32::INFINITY)
                .min_dim(1); // [b, 1]
            let drop = probs.lower(floor.expand([b, k]));
            logits = logits.mask_fill(drop, f32::NEG_INFINITY);
        }
        logits
    }
}

/// The Gumbel noise sampling adds to the logits: for each (image, position), `K` values from ChaCha8
/// keyed by (seed, image, position). Keyed rather than streamed, so any token's noise is known
/// without drawing the ones before it: a resumed generation, a bigger batch or another backend sees
/// the same values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SamplingNoise {
    seed: u64,
}

impl SamplingNoise {
    pub fn new(seed: u64) -> Self {
        Self { seed }
    }

    /// The noise of `images` at `position`, `[images.len(), k]`, on `device`.
    pub fn gumbel<B: Backend>(
        &self,
        images: Range<usize>,
        position: usize,
        k: usize,
        device: &B::Device,
    ) -> Tensor<B, 2> {
        let b = images.len();
        let mut values = Vec::with_capacity(b * k);
        for image in images {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&self.seed.to_le_bytes());
            key[8..16].copy_from_slice(&(image as u64).to_le_bytes());
            key[16..24].copy_from_slice(&(position as u64).to_le_bytes());
            let mut rng = ChaCha8Rng::from_seed(key);
            values.extend((0..k).map(|_| {
                // U in (0, 1), never 0 or 1, so both logarithms are finite.
                let uniform = (rng.next_u32() as f64 + 0.5) / 4_294_967_296.0;
                -(-uniform.ln()).ln() as f32
            }));
        }
        Tensor::from_data(TensorData::new(values, [b, k]), device)
    }
}

/// How each step computes its logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoding {
    /// One new position per step against the KV cache (the fast path).
    Cached,
    /// Re-run the whole prefix every step: OpenAI's original sampler, O(n²); the reference.
    Reforward,
}

/// A batch of images being generated, one token per image per [`step`](Self::step).
/// Tokens stay on the device until [`take_pending`](Self::take_pending) hands them over for reading.
pub struct Generation<B: Backend> {
    config: SamplingConfig,
    decoding: Decoding,
    cache: Option<KvCache<B>>,
    /// What the next step feeds the model: the new token (cached) or the whole sequence (reforward).
    input: Tensor<B, 2, Int>,
    /// Drawn but not yet read back, `[batch, 1]` each.
    pending: Vec<Tensor<B, 2, Int>>,
    /// Tokens per image known so far: the prefix and everything read back.
    sequences: Vec<Vec<u16>>,
    /// Tokens per image drawn so far (prefix included).
    drawn: usize,
    total: usize,
    /// Stream replaced at one layer in every step (the inspector's completion under a patch).
    patch: Option<Patch<B>>,
    noise: SamplingNoise,
}

impl<B: Backend> Generation<B> {
    /// Starts `prefixes.len()` images, each continuing its prefix (empty for unconditional samples; all
    /// the same length). `seed` fixes the draws ([`SamplingNoise`]): the same seed gives the same
    /// images on every backend, up to the colours where the backends' logits pick differently.
    pub fn new(
        model: &ImageGpt<B>,
        prefixes: Vec<Vec<u16>>,
        config: SamplingConfig,
        decoding: Decoding,
        seed: u64,
    ) -> Result<Self> {
        model.objective().require_causal("sampling")?;
        let (k, total) = (model.n_colors(), model.n_positions());
        config.validate(k)?;
        let batch = prefixes.len();
        let len = prefixes.first().map_or(0, Vec::len);
        if batch == 0 {
            return Err(Error::invalid("nothing to generate: batch of 0 images"));
        }
        model.check_batch(batch, Workload::Sampling)?;
        if prefixes.iter().any(|p| p.len() != len) {
            return Err(Error::invalid(
                "all prefixes in a batch must have the same length",
            ));
        }
        if len >= total {
            return Err(Error::invalid(format!(
                "a prefix of {len} tokens leaves nothing to generate (the model has {total} positions)"
            )));
        }
        for prefix in &prefixes {
            check_ids("a prefix", prefix, k)?;
        }
        let input = continuation_input(&prefixes, k, &model.device());
        Ok(Self {
            config,
            decoding,
            cache: (decoding == Decoding::Cached).then(|| model.new_cache(batch)),
            input,
            pending: Vec::new(),
            sequences: prefixes,
            drawn: len,
            total,
            patch: None,
            noise: SamplingNoise::new(seed),
        })
    }

    /// Runs every step with `patch` applied (its positions may lie in the prefix or ahead).
    pub fn with_patch(mut self, patch: Option<Patch<B>>) -> Self {
        self.patch = patch;
        self
    }

    pub fn batch(&self) -> usize {
        self.sequences.len()
    }

    /// Tokens per image drawn so far (prefix included).
    pub fn drawn(&self) -> usize {
        self.drawn
    }

    /// Tokens per image in a finished image.
    pub fn total(&self) -> usize {
        self.total
    }

    pub fn is_done(&self) -> bool {
        self.drawn == self.total
    }

    /// Draws the next token of every image (on the device; nothing is read back).
    pub fn step(&mut self, model: &ImageGpt<B>) {
        if self.is_done() {
            return;
        }
        let options = ForwardOptions {
            cache: self.cache.as_mut(),
            patch: self.patch.as_ref(),
            ..Default::default()
        };
        let logits = model.logits(model.forward_with(self.input.clone(), options).normed);
        let [b, t, k] = logits.dims();
        let next = self.config.draw(
            logits.slice([0..b, t - 1..t, 0..k]).reshape([b, k]),
            &self.noise,
            0..b,
            self.drawn,
        );
        self.input = match self.decoding {
            Decoding::Cached => next.clone(),
            Decoding::Reforward => Tensor::cat(vec![self.input.clone(), next.clone()], 1),
        };
        self.pending.push(next);
        self.drawn += 1;
    }

    /// The tokens drawn since the last call, `[batch, n]`, for the caller to read back (synchronously
    /// natively, with `into_data_async` in the browser) and hand to [`absorb`](Self::absorb).
    pub(crate) fn take_pending(&mut self) -> Option<Tensor<B, 2, Int>> {
        if self.pending.is_empty() {
            return None;
        }
        Some(Tensor::cat(std::mem::take(&mut self.pending), 1))
    }

    /// Appends read-back tokens (`[batch, n]` data from [`take_pending`](Self::take_pending)).
    pub(crate) fn absorb(&mut self, data: TensorData) -> Result<()> {
        let ids = data
            .convert::<i64>()
            .into_vec::<i64>()
            .map_err(|e| Error::invalid(format!("reading tokens back: {e:?}")))?;
        let per_image = ids.len() / self.batch().max(1);
        for (seq, row) in self.sequences.iter_mut().zip(ids.chunks(per_image.max(1))) {
            seq.extend(row.iter().map(|&id| id as u16));
        }
        Ok(())
    }

    /// Tokens per image read back so far (prefix included).
    pub fn sequences(&self) -> &[Vec<u16>] {
        &self.sequences
    }

    pub fn into_sequences(self) -> Vec<Vec<u16>> {
        self.sequences
    }

    /// Reads back pending tokens synchronously (native only: the browser must read asynchronously).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_back(&mut self) -> Result<()> {
        match self.take_pending() {
            Some(tokens) => self.absorb(tokens.into_data()),
            None => Ok(()),
        }
    }
}

/// Generates whole images natively, reading tokens back every `every` steps (e.g. once per image
/// row) and reporting `(tokens so far per image, total per image)` through `progress`.
#[cfg(not(target_arch = "wasm32"))]
pub fn generate<B: Backend>(
    model: &ImageGpt<B>,
    prefixes: Vec<Vec<u16>>,
    config: SamplingConfig,
    seed: u64,
    every: usize,
    mut progress: impl FnMut(&[Vec<u16>], usize),
) -> Result<Vec<Vec<u16>>> {
    let mut generation = Generation::new(model, prefixes, config, Decoding::Cached, seed)?;
    while !generation.is_done() {
        generation.step(model);
        if generation.drawn() % every.max(1) == 0 || generation.is_done() {
            generation.read_back()?;
            progress(generation.sequences(), generation.total());
        }
    }
    Ok(generation.into_sequences())
}
