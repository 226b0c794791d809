//! What the inspector shows of one image, computed once from a traced forward pass: each pixel's
//! surprise (bits), the model's next-colour distribution at any pixel, attention and its rollout
//! from any pixel, the logit lens (every layer's hidden states read by the final norm and head, as
//! if the model stopped there) and direct logit attribution ([`attribution`]); and the same image
//! with one part silenced ([`ablation`]) or with another image's hidden states patched in
//! ([`patching`]). `igpt inspect` and the web page report the same numbers from here. A BERT model's
//! surprise (each pixel's bits when hidden) is [`masked`]'s.
//!
//! Positions: the model reads SOS then the pixels, so position 0 is SOS and position p > 0 holds
//! pixel p - 1; the query at position p predicts pixel p. "Attention of pixel p" is that query's
//! weights over positions 0..=p: the start token and every earlier pixel.

pub mod ablation;
pub mod ablation_means;
#[cfg(not(target_arch = "wasm32"))]
pub mod atlas;
pub mod attribution;
pub mod intervention;
pub mod masked;
pub mod patching;

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use serde::Serialize;

use burn::tensor::{Int, Tensor, TensorData};

use crate::analysis::explain::Explanation;
use crate::analysis::pca::principal_scores;
use crate::error::{Error, Result};
use crate::model::{ForwardOptions, ForwardPass, ImageGpt};
use crate::pixels::tokens::{check_image, inputs_and_targets};
use crate::sample::SamplingConfig;
use attribution::{Attribution, Part};

/// One colour of a next-pixel distribution.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Choice {
    /// Palette id.
    pub id: u16,
    /// Probability under the model (temperature 1, no top-k), or as sampling draws ([`Reshaped`]).
    pub p: f32,
}

/// The true colour of a pixel, as the model saw it coming.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Actual {
    pub id: u16,
    pub p: f32,
    /// 1 when the model ranked it first.
    pub rank: usize,
}

/// The logit lens at one layer and pixel: the distribution the final norm and head read from that
/// layer's hidden state (layer 0: the embeddings; the last layer: the model's own output).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LensLayer {
    pub layer: usize,
    /// The three likeliest colours, most likely first.
    pub top: Vec<Choice>,
    pub actual: Actual,
    /// Surprise of the true colour, in bits.
    pub bits: f32,
}

/// A next-pixel distribution as sampling draws from it (see [`Inspected::reshaped`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Reshaped {
    /// The colours that can be drawn, most likely first (ties: lower id first), as many as asked.
    pub choices: Vec<Choice>,
    /// The true colour's probability of being drawn; rank `None` when top-k or top-p leave it out.
    pub actual: Choice,
    pub rank: Option<usize>,
}

/// One image through the model, kept as plain numbers so any pixel can be asked about without
/// another pass.
pub struct Inspected {
    pub width: usize,
    pub height: usize,
    pub n_colors: usize,
    pub n_layer: usize,
    pub n_head: usize,
    /// Width of the hidden states.
    pub n_embd: usize,
    /// The image's palette ids, raster order.
    pub ids: Vec<u16>,
    /// `[layer + 1, pixels, K]`: log-probability of every colour at every pixel, read from every
    /// layer's hidden states through the final norm and head (the logit lens); the last layer's is
    /// the model's output.
    lens: Vec<f32>,
    /// `[layer, head, position, head_dim]`: every layer's queries and keys, as attention used them
    /// (a pixel's attention row is formed from them when asked: the full `n × n` probabilities of
    /// every head would be 64 MB for a 1,024-pixel, 4-layer, 4-head model).
    queries: Vec<f32>,
    keys: Vec<f32>,
    /// Attention's factor on q·k.
    scale: f32,
    /// `[layer + 1, position, n_embd]`: the residual stream (0: the embeddings, l: block l's output).
    residual: Vec<f32>,
    /// `[position, n_embd]`: the learned position embeddings.
    positions: Vec<f32>,
    /// `[part, pixel]`: each part's share of the true colour's logit (see [`attribution`]).
    attribution: Vec<f32>,
    /// `[pixel]`: the true colour's logit, the model's output.
    true_logits: Vec<f32>,
}

/// How many tensors [`Traced`] holds.
pub const TRACED_TENSORS: usize = 7;

/// The tensors an inspection reads back, each flattened: the logit lens's log-probabilities, queries,
/// keys, the residual stream, the position embeddings, the attribution and the true colours' logits
/// (see [`Inspected`]'s fields).
pub struct Traced<B: Backend> {
    pub tensors: [Tensor<B, 1>; TRACED_TENSORS],
    pub n_head: usize,
    pub scale: f64,
    /// A fine-tuned model's class scores per position, `[positions, labels]`, from the same pass
    /// (`igpt::analysis::explain::Explanation::from_numbers` reads them); `None` without a head.
    pub labels: Option<Tensor<B, 2>>,
}

impl<B: Backend> Traced<B> {
    /// A fine-tuned model's label from the numbers of [`Traced::labels`]. The inspector reads
    /// causal models only, so position 0 is the start token.
    pub fn label(model: &ImageGpt<B>, scores: &[f32]) -> Result<Explanation> {
        Explanation::from_numbers(scores, model.n_labels(), true)
    }
}

/// `igpt inspect --json`'s line, and the page's `igptState.inspect`.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Surprise of every pixel in bits, raster order.
    pub bits_per_pixel: Vec<f32>,
    pub mean_bits: f64,
    /// The selected pixel, `[row, column]`.
    pub pixel: [usize; 2],
    /// The five likeliest colours for the selected pixel, most likely first.
    pub top: Vec<Choice>,
    /// The selected pixel's true colour, its probability and rank.
    pub actual: Actual,
    /// `[layer][head][position]`: the selected pixel's attention over positions 0..=pixel (0 is SOS).
    pub attention: Vec<Vec<Vec<f32>>>,
    /// The logit lens at the selected pixel, one entry per layer (0: the embeddings).
    pub lens: Vec<LensLayer>,
    /// `[layer][pixel]`: the logit lens's surprise of every pixel in bits, per layer (the last row is
    /// `bits_per_pixel`).
    pub lens_bits_per_pixel: Vec<Vec<f32>>,
    /// The selected pixel's true-colour logit split into the parts of the model that wrote it.
    pub attribution: Attribution,
    /// Attention rollout from the selected pixel over positions 0..=pixel (0 is SOS), summing to 1.
    pub rollout: Vec<f32>,
}

impl Inspected {
    /// Runs `ids` (one image's palette ids, as many as the model has positions) through the model.
    /// (The page reads the same tensors without blocking: [`Inspected::trace`], then
    /// [`Inspected::from_numbers`].)
    pub fn new<B: Backend>(model: &ImageGpt<B>, ids: &[u16], width: usize) -> Result<Self> {
        Ok(Self::labelled(model, ids, width)?.0)
    }

    /// As [`Inspected::new`], with a fine-tuned model's label of the image and which pixels moved
    /// it, from the same pass (`None` without a classification head).
    pub fn labelled<B: Backend>(
        model: &ImageGpt<B>,
        ids: &[u16],
        width: usize,
    ) -> Result<(Self, Option<Explanation>)> {
        let traced = Self::trace(model, ids, width)?;
        let label = match traced.labels {
            Some(scores) => Some(Traced::label(model, &floats(scores.into_data())?)?),
            None => None,
        };
        let (n_head, scale) = (traced.n_head, traced.scale);
        let numbers: Vec<Vec<f32>> = traced
            .tensors
            .into_iter()
            .map(|t| floats(t.into_data()))
            .collect::<Result<_>>()?;
        let numbers = numbers.try_into().expect("one list per tensor");
        let inspected = Self::from_numbers(model, ids, width, n_head, scale, numbers)?;
        Ok((inspected, label))
    }

    /// The traced pass over one image (SOS, then every pixel but the last), as flat tensors to read.
    pub fn trace<B: Backend>(model: &ImageGpt<B>, ids: &[u16], width: usize) -> Result<Traced<B>> {
        model.objective().require_causal("the inspector")?;
        check_image(ids, width, model.n_positions(), model.n_colors())?;
        let (inputs, _) =
            inputs_and_targets::<B>(std::iter::once(ids), model.n_colors(), &model.device());
        let options = ForwardOptions {
            residual: true,
            attention: true,
            ..Default::default()
        };
        let flat = |t: Tensor<B, 3>| t.reshape([-1]);
        // The lens reads the last layer's states through the final norm itself; `normed` feeds a
        // fine-tuned model's head, so the page labels the image without a second pass.
        let ForwardPass {
            normed,
            residual,
            attention,
            scale,
            causal: _,
        } = model.forward_with(inputs, options);
        // The logit lens: every layer's hidden states through the final norm and head; the last
        // layer's is the model's output.
        let read: Vec<Tensor<B, 3>> = residual
            .iter()
            .map(|x| model.logits(model.final_norm(x.clone())))
            .collect();
        let output = read.last().expect("the embeddings at least").clone();
        let lens: Vec<Tensor<B, 1>> = read.into_iter().map(|l| flat(log_softmax(l, 2))).collect();
        // The true colour's logit at every pixel, and its parts.
        let device = model.device();
        let targets = Tensor::<B, 1, Int>::from_data(
            TensorData::new(ids.iter().map(|&id| id as i64).collect(), [ids.len()]),
            &device,
        );
        let true_logits = output
            .reshape([ids.len(), model.n_colors()])
            .gather(1, targets.clone().reshape([ids.len(), 1]))
            .reshape([-1]);
        let heads: Vec<Tensor<B, 4>> = attention.iter().map(|a| a.out.clone()).collect();
        let parts = attribution::contributions(model, &residual, &heads, targets);
        let n_head = attention.first().map_or(0, |a| a.q.dims()[1]);
        let (queries, keys): (Vec<_>, Vec<_>) = attention
            .into_iter()
            .map(|a| (a.q.reshape([-1]), a.k.reshape([-1])))
            .unzip();
        Ok(Traced {
            tensors: [
                Tensor::cat(lens, 0),
                Tensor::cat(queries, 0),
                Tensor::cat(keys, 0),
                Tensor::cat(residual.into_iter().map(flat).collect(), 0),
                model.position_embeddings().reshape([-1]),
                parts,
                true_logits,
            ],
            n_head,
            scale,
            labels: model
                .position_class_logits(normed)
                .map(|t| t.squeeze_dim::<2>(0)),
        })
    }

    /// From the numbers of [`Inspected::trace`]'s tensors, in order.
    pub(crate) fn from_numbers<B: Backend>(
        model: &ImageGpt<B>,
        ids: &[u16],
        width: usize,
        n_head: usize,
        scale: f64,
        [
            lens,
            queries,
            keys,
            residual,
            positions,
            attribution,
            true_logits,
        ]: [Vec<f32>; TRACED_TENSORS],
    ) -> Result<Self> {
        let (n, k, d, layers) = (ids.len(), model.n_colors(), model.n_embd(), model.n_layer());
        let sizes = [
            (layers + 1) * n * k,
            layers * n * d,
            layers * n * d,
            (layers + 1) * n * d,
            n * d,
            (1 + layers * (n_head + 2)) * n,
            n,
        ];
        let got = [
            lens.len(),
            queries.len(),
            keys.len(),
            residual.len(),
            positions.len(),
            attribution.len(),
            true_logits.len(),
        ];
        if sizes != got {
            return Err(Error::invalid(format!(
                "an inspection of {n} pixels expected {sizes:?} numbers and got {got:?}"
            )));
        }
        Ok(Self {
            width,
            height: n / width,
            n_colors: k,
            n_layer: layers,
            n_head,
            n_embd: d,
            ids: ids.to_vec(),
            lens,
            queries,
            keys,
            scale: scale as f32,
            residual,
            positions,
            attribution,
            true_logits,
        })
    }

    /// Layer `layer`'s hidden states (0: the embeddings, l: block l's output) projected on their first
    /// three principal components, as RGB bytes in raster order (each component stretched over its
    /// range). Cell p shows the state at position p: the one that predicts pixel p.
    pub fn features_rgb(&self, layer: usize) -> Vec<u8> {
        let (n, d) = (self.pixels(), self.n_embd);
        let states = &self.residual[layer * n * d..(layer + 1) * n * d];
        let scores = principal_scores(states, d, 3);
        let mut rgb = vec![0u8; n * 3];
        for c in 0..3.min(scores.len() / n.max(1)) {
            let column = || scores.iter().skip(c).step_by(3);
            let (lo, hi) =
                column().fold((f32::MAX, f32::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
            for (i, &x) in column().enumerate() {
                rgb[i * 3 + c] = (255.0 * (x - lo) / (hi - lo).max(1e-12)).round() as u8;
            }
        }
        rgb
    }

    /// Cosine similarity of position `pixel`'s learned embedding with every position's.
    pub fn position_similarity(&self, pixel: usize) -> Vec<f32> {
        let d = self.n_embd;
        let rows: Vec<&[f32]> = self.positions.chunks_exact(d).collect();
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        let chosen = rows[pixel];
        rows.iter()
            .map(|r| {
                r.iter().zip(chosen).map(|(a, b)| a * b).sum::<f32>() / (norm(r) * norm(chosen))
            })
            .collect()
    }

    fn pixels(&self) -> usize {
        self.ids.len()
    }

    /// Raster index of `[row, column]`, or an error naming the image's size.
    pub fn index(&self, [row, col]: [usize; 2]) -> Result<usize> {
        if row >= self.height || col >= self.width {
            return Err(Error::invalid(format!(
                "pixel {row},{col} is outside the {}x{} image (rows and columns count from 0)",
                self.width, self.height
            )));
        }
        Ok(row * self.width + col)
    }

    /// Every colour's log-probability (natural log) at raster index `pixel`: the model's output.
    pub fn log_probs_at(&self, pixel: usize) -> &[f32] {
        self.lens_log_probs(self.n_layer, pixel)
    }

    /// Every colour's log-probability at raster index `pixel` as the logit lens reads it from
    /// `layer` (0: the embeddings, l: block l's output).
    pub fn lens_log_probs(&self, layer: usize, pixel: usize) -> &[f32] {
        let at = (layer * self.pixels() + pixel) * self.n_colors;
        &self.lens[at..at + self.n_colors]
    }

    /// Surprise of every pixel, in bits: −log₂ p(true colour).
    pub fn bits_per_pixel(&self) -> Vec<f32> {
        self.lens_bits(self.n_layer)
    }

    /// Surprise of every pixel in bits as the logit lens reads it from `layer`.
    pub fn lens_bits(&self, layer: usize) -> Vec<f32> {
        (0..self.pixels())
            .map(|i| bits(self.lens_log_probs(layer, i), self.ids[i]))
            .collect()
    }

    /// The `k` likeliest colours at raster index `pixel`, most likely first (ties: lower id first).
    pub fn top(&self, pixel: usize, k: usize) -> Vec<Choice> {
        top_of(self.log_probs_at(pixel), k)
    }

    /// The true colour at raster index `pixel`, its probability and rank.
    pub fn actual(&self, pixel: usize) -> Actual {
        actual_of(self.log_probs_at(pixel), self.ids[pixel])
    }

    /// The logit lens at raster index `pixel`: every layer's three likeliest colours and the true
    /// colour's probability, rank and bits.
    pub fn lens(&self, pixel: usize) -> Vec<LensLayer> {
        (0..=self.n_layer)
            .map(|layer| {
                let lp = self.lens_log_probs(layer, pixel);
                LensLayer {
                    layer,
                    top: top_of(lp, 3),
                    actual: actual_of(lp, self.ids[pixel]),
                    bits: bits(lp, self.ids[pixel]),
                }
            })
            .collect()
    }

    /// The distribution at raster index `pixel` as sampling with `config` draws from it (the
    /// sampler's own [`SamplingConfig::probabilities`], on `B`): up to `show` colours, and the true
    /// colour's probability and rank.
    pub fn reshaped<B: Backend>(
        &self,
        pixel: usize,
        config: &SamplingConfig,
        show: usize,
        device: &B::Device,
    ) -> Result<Reshaped> {
        let lp = self.log_probs_at(pixel);
        config.validate(lp.len())?;
        let logits = Tensor::<B, 2>::from_data(TensorData::new(lp.to_vec(), [1, lp.len()]), device);
        let p = floats(config.probabilities(logits).into_data())?;
        let id = self.ids[pixel] as usize;
        let mut order: Vec<usize> = (0..p.len()).filter(|&c| p[c] > 0.0).collect();
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
        let choice = |c: usize| Choice {
            id: c as u16,
            p: p[c],
        };
        Ok(Reshaped {
            choices: order.into_iter().take(show).map(choice).collect(),
            actual: choice(id),
            rank: (p[id] > 0.0).then(|| 1 + p.iter().filter(|&&x| x > p[id]).count()),
        })
    }

    /// Attention of the query that predicts raster index `pixel`, in `layer` and `head`, over
    /// positions 0..=pixel: softmax(scale · q·k) over the keys it may see.
    pub fn attention_of(&self, pixel: usize, layer: usize, head: usize) -> Vec<f32> {
        let (n, hd) = (self.pixels(), self.n_embd / self.n_head.max(1));
        let at = |position: usize| ((layer * self.n_head + head) * n + position) * hd;
        let q = &self.queries[at(pixel)..at(pixel) + hd];
        let scores: Vec<f32> = (0..=pixel)
            .map(|j| {
                let k = &self.keys[at(j)..at(j) + hd];
                self.scale * q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>()
            })
            .collect();
        let max = scores.iter().copied().fold(f32::MIN, f32::max);
        let exp: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
        let total: f32 = exp.iter().sum();
        exp.into_iter().map(|e| e / total).collect()
    }

    /// Attention rollout (Abnar & Zuidema, 2020) from raster index `pixel`: how much of what its query
    /// holds flows from each position 0..=pixel (0: SOS) through every layer, each layer taken as
    /// ½·(its attention, mean of heads) + ½·identity (the residual path), from the last layer down.
    /// The weights sum to 1.
    pub fn rollout(&self, pixel: usize) -> Vec<f32> {
        let mut flow = vec![0f32; pixel + 1];
        flow[pixel] = 1.0;
        for layer in (0..self.n_layer).rev() {
            let mut next = vec![0f32; pixel + 1];
            for (i, &weight) in flow.iter().enumerate() {
                // Above the last layer only the pixel itself carries weight: one row, not all.
                if weight == 0.0 {
                    continue;
                }
                next[i] += 0.5 * weight;
                for (j, a) in self.mean_attention_of(i, layer).into_iter().enumerate() {
                    next[j] += 0.5 * weight * a;
                }
            }
            flow = next;
        }
        flow
    }

    /// [`Inspected::attention_of`] averaged over the heads.
    fn mean_attention_of(&self, pixel: usize, layer: usize) -> Vec<f32> {
        let mut mean = vec![0f32; pixel + 1];
        for head in 0..self.n_head {
            for (m, a) in mean.iter_mut().zip(self.attention_of(pixel, layer, head)) {
                *m += a / self.n_head as f32;
            }
        }
        mean
    }

    /// The true colour's logit at raster index `pixel` split into the model's parts (see
    /// [`attribution`]): they sum to it, up to rounding.
    pub fn attribution(&self, pixel: usize) -> Attribution {
        let n = self.pixels();
        let parts = attribution::part_names(self.n_layer, self.n_head)
            .into_iter()
            .enumerate()
            .map(|(i, name)| Part {
                name,
                logit: self.attribution[i * n + pixel],
            })
            .collect();
        Attribution {
            logit: self.true_logits[pixel],
            parts,
        }
    }

    /// The report for `[row, column]`.
    pub fn report(&self, pixel: [usize; 2]) -> Result<Report> {
        let i = self.index(pixel)?;
        let bits_per_pixel = self.bits_per_pixel();
        let mean_bits =
            bits_per_pixel.iter().map(|&b| b as f64).sum::<f64>() / bits_per_pixel.len() as f64;
        Ok(Report {
            bits_per_pixel,
            mean_bits,
            pixel,
            top: self.top(i, 5),
            actual: self.actual(i),
            attention: (0..self.n_layer)
                .map(|l| {
                    (0..self.n_head)
                        .map(|h| self.attention_of(i, l, h))
                        .collect()
                })
                .collect(),
            lens: self.lens(i),
            lens_bits_per_pixel: (0..=self.n_layer).map(|l| self.lens_bits(l)).collect(),
            attribution: self.attribution(i),
            rollout: self.rollout(i),
        })
    }
}

/// −log₂ of colour `id`'s probability, from natural-log probabilities.
fn bits(log_probs: &[f32], id: u16) -> f32 {
    -log_probs[id as usize] / std::f32::consts::LN_2
}

/// The `k` likeliest colours of a distribution (natural-log probabilities), most likely first (ties:
/// lower id first).
fn top_of(log_probs: &[f32], k: usize) -> Vec<Choice> {
    let mut order: Vec<usize> = (0..log_probs.len()).collect();
    order.sort_by(|&a, &b| log_probs[b].total_cmp(&log_probs[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .take(k)
        .map(|id| Choice {
            id: id as u16,
            p: log_probs[id].exp(),
        })
        .collect()
}

/// Colour `id`'s probability and rank in a distribution (natural-log probabilities).
fn actual_of(log_probs: &[f32], id: u16) -> Actual {
    let lp = log_probs[id as usize];
    Actual {
        id,
        p: lp.exp(),
        rank: 1 + log_probs.iter().filter(|&&x| x > lp).count(),
    }
}

/// The inspector's heat colour for `v` in 0..=1 (clamped): black → purple → orange → pale yellow.
/// `igpt inspect -o` paints its panels with it, and the page its views (through [`heat_ramp`]).
pub fn heat(v: f32) -> [u8; 3] {
    const STOPS: [[f32; 3]; 4] = [
        [0., 0., 4.],
        [100., 30., 130.],
        [235., 100., 50.],
        [252., 253., 191.],
    ];
    let x = v.clamp(0.0, 1.0) * (STOPS.len() - 1) as f32;
    let k = (x as usize).min(STOPS.len() - 2);
    let t = x - k as f32;
    std::array::from_fn(|c| (STOPS[k][c] * (1.0 - t) + STOPS[k + 1][c] * t).round() as u8)
}

/// A diverging colour for `v` in -1..=1: blue (negative) through light grey (0) to red (positive),
/// as the page draws a label's pixel shares (`www/inspect.js`'s `diverging`).
pub fn diverging(v: f32) -> [u8; 3] {
    let t = v.clamp(-1.0, 1.0);
    let end: [f32; 3] = if t < 0.0 {
        [59., 76., 192.]
    } else {
        [180., 4., 38.]
    };
    std::array::from_fn(|c| (221.0 + (end[c] - 221.0) * t.abs()).round() as u8)
}

/// [`heat`] at `steps` (at least 2) evenly spaced values from 0 to 1, as RGB bytes: the page's
/// lookup table, so the browser draws the same colours without a copy of the ramp.
pub fn heat_ramp(steps: usize) -> Vec<u8> {
    let last = steps.max(2) - 1;
    (0..=last)
        .flat_map(|i| heat(i as f32 / last as f32))
        .collect()
}

/// A tensor's numbers as f32.
pub fn floats(data: TensorData) -> Result<Vec<f32>> {
    data.convert::<f32>()
        .into_vec()
        .map_err(|e| Error::invalid(format!("reading the model's output: {e:?}")))
}
