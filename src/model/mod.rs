//! The transformer: exactly HF's `ImageGPTForCausalImageModeling`, so real checkpoints load (README: A model is a directory).

pub mod activation;
pub mod attention;
pub mod objective;
pub mod patch;
pub(crate) mod placeholder;
pub mod precision;

use burn::config::Config;
use burn::module::{Initializer, Module};
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig, RmsNorm, RmsNormConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor};

use crate::error::{Error, Result};
use crate::model::activation::quick_gelu;
use crate::model::attention::{Qkv, attend, attention_weights};
use crate::model::objective::Objective;
use crate::model::patch::Patch;
use crate::model::precision::Precision;
use crate::pixels::tokens::{inputs_and_targets, token_ids};

/// Shape of an iGPT model. The palette and image decide `n_colors` and `n_positions`; a preset the rest.
#[derive(Config, Debug, PartialEq)]
pub struct ImageGptConfig {
    /// Palette size K. Inputs use K + 1 ids: the last one is the start-of-sequence token (SOS).
    pub n_colors: usize,
    /// Context length: one position per pixel (28×28 = 784 for Fashion-MNIST).
    pub n_positions: usize,
    /// Width of the residual stream.
    #[config(default = 256)]
    pub n_embd: usize,
    #[config(default = 8)]
    pub n_layer: usize,
    #[config(default = 8)]
    pub n_head: usize,
    /// HF's `layer_norm_epsilon`.
    #[config(default = 1e-5)]
    pub layer_norm_epsilon: f64,
    /// Divide attention scores by √head_dim, as the paper and OpenAI's code do. HF transformers divides
    /// by ⌊√head_dim⌋ instead (its `torch_float` helper returns an int; seen in 5.17, and the fixture's
    /// logits only match that way), so HF checkpoints load with `false` to reproduce HF exactly. The two
    /// agree whenever head_dim is a perfect square (16, 64, 256).
    #[config(default = true)]
    pub exact_attention_scale: bool,
    /// What the model predicts: the next pixel (HF's ImageGPT), or hidden pixels (BERT).
    #[config(default = "Objective::Autoregressive")]
    pub objective: Objective,
}

/// Upper limits on a model's sizes, far above any real Image GPT (iGPT-XL: 3072 wide, 60 layers, 6.8B
/// parameters), so that a mistyped or hostile config is a clear error before anything is allocated.
/// Token ids are u16, so the palette plus SOS fits 65,536 ids.
pub(crate) const LIMITS: [(&str, u64); 5] = [
    ("n_colors", 65_535),
    ("n_positions", 1 << 20),
    ("n_embd", 1 << 15),
    ("n_layer", 1 << 10),
    ("parameters", 16_000_000_000),
];

/// The most memory one batch may ask for (the wasm32 address space is 4 GiB). Far beyond any real
/// run, it makes a mistyped batch size or image count an error instead of an allocation failure.
pub(crate) const MAX_BATCH_BYTES: u64 = if cfg!(target_arch = "wasm32") {
    2 << 30
} else {
    256 << 30
};

/// What a batch is for, which sets how much it keeps per position and layer.
#[derive(Clone, Copy, Debug)]
pub enum Workload {
    /// Activations kept for the backward pass: about 16 values of width d per layer.
    Training,
    /// The KV cache: 2 values of width d per layer.
    Sampling,
}

/// Named sizes: `(n_embd, n_layer, n_head)`. The iGPT ones are the paper's (Chen et al. 2020, Table 1).
pub(crate) const PRESETS: &[(&str, usize, usize, usize)] = &[
    ("tiny", 64, 2, 4),
    ("small", 256, 8, 8),
    ("igpt-s", 512, 24, 8),
    ("igpt-m", 1024, 36, 8),
    ("igpt-l", 1536, 48, 16),
];

/// `"128x4x2"` → `(128, 4, 2)`: width, layers, heads.
fn parse_shape(text: &str) -> Option<(usize, usize, usize)> {
    let mut parts = text.split('x').map(|p| p.parse::<usize>().ok());
    let shape = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(shape)
}

impl ImageGptConfig {
    /// A named preset (see [`PRESETS`]), or an explicit `WIDTHxLAYERSxHEADS` shape such as `128x4x2`,
    /// for a K-colour palette and `n_positions` pixels.
    pub fn preset(name: &str, n_colors: usize, n_positions: usize) -> Result<Self> {
        let (n_embd, n_layer, n_head) = match PRESETS.iter().find(|p| p.0 == name) {
            Some(&(_, d, l, h)) => (d, l, h),
            None => parse_shape(name).ok_or_else(|| {
                let names: Vec<_> = PRESETS.iter().map(|p| p.0).collect();
                Error::invalid(format!(
                    "unknown preset {name:?} (choose one of {}, or give WIDTHxLAYERSxHEADS like 128x4x2)",
                    names.join(", ")
                ))
            })?,
        };
        let config = Self::new(n_colors, n_positions)
            .with_n_embd(n_embd)
            .with_n_layer(n_layer)
            .with_n_head(n_head);
        config.validate()?;
        Ok(config)
    }

    /// Checks the shape can be built: non-zero sizes within [`LIMITS`], and whole heads.
    pub fn validate(&self) -> Result<()> {
        if self.n_colors == 0 || self.n_positions == 0 || self.n_embd == 0 || self.n_layer == 0 {
            return Err(Error::invalid(format!(
                "model sizes must be positive: {self:?}"
            )));
        }
        let sizes = [self.n_colors, self.n_positions, self.n_embd, self.n_layer];
        // The parameter count is only computed once the sizes are known to be small enough for it.
        let values = sizes
            .into_iter()
            .map(|v| v as u64)
            .chain(std::iter::once_with(|| self.param_count()));
        for (value, (name, limit)) in values.zip(LIMITS) {
            if value > limit {
                return Err(Error::invalid(format!(
                    "{name} is {value}: the limit is {limit}"
                )));
            }
        }
        // RmsNorm asserts a positive epsilon; NaN or infinity would poison every activation.
        if !(self.layer_norm_epsilon > 0.0 && self.layer_norm_epsilon.is_finite()) {
            return Err(Error::invalid(format!(
                "layer_norm_epsilon must be a positive number, not {}",
                self.layer_norm_epsilon
            )));
        }
        if self.n_head == 0 || !self.n_embd.is_multiple_of(self.n_head) {
            return Err(Error::invalid(format!(
                "n_embd ({}) must be a multiple of n_head ({})",
                self.n_embd, self.n_head
            )));
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// The factor attention scores are multiplied by before the softmax.
    pub(crate) fn attention_scale(&self) -> f64 {
        let root = (self.head_dim() as f64).sqrt();
        if self.exact_attention_scale {
            1.0 / root
        } else {
            1.0 / root.floor()
        }
    }

    /// Number of trainable parameters (without a classification head).
    pub fn num_params(&self) -> usize {
        self.param_count() as usize
    }

    /// Refuses a batch whose largest buffers (see [`Workload`], plus the logits) would pass
    /// [`MAX_BATCH_BYTES`], before anything is allocated.
    pub fn check_batch(&self, batch: usize, workload: Workload) -> Result<()> {
        let per_layer: u64 = match workload {
            Workload::Training => 16,
            Workload::Sampling => 2,
        };
        let [b, p, l, d, k] = [
            batch,
            self.n_positions,
            self.n_layer,
            self.n_embd,
            self.n_colors,
        ]
        .map(|v| v as u64);
        let bytes = b
            .saturating_mul(p)
            .saturating_mul((l * per_layer * d + 2 * k) * 4);
        if bytes > MAX_BATCH_BYTES {
            let gib = |v: u64| v as f64 / (1u64 << 30) as f64;
            return Err(Error::invalid(format!(
                "{batch} images at once would need about {:.0} GiB, over the {:.0} GiB limit: use a smaller batch or count",
                gib(bytes),
                gib(MAX_BATCH_BYTES)
            )));
        }
        Ok(())
    }

    /// The largest single buffer, in bytes, that sampling `batch` images at once needs on a GPU: the
    /// token embedding (K + 1 rows) or one layer's key or value cache (f32). WebGPU caps every
    /// buffer, so the page compares this with the adapter's limits before downloading any weight.
    pub fn largest_buffer_bytes(&self, batch: usize) -> u64 {
        let [b, p, d, k] = [batch, self.n_positions, self.n_embd, self.n_colors].map(|v| v as u64);
        4 * ((k + 1) * d).max(b * p * d)
    }

    /// The parameter count in 64 bits, which cannot overflow for sizes within [`LIMITS`], even where
    /// `usize` is 32 bits (wasm).
    pub(crate) fn param_count(&self) -> u64 {
        let [d, k, l, p] =
            [self.n_embd, self.n_colors, self.n_layer, self.n_positions].map(|v| v as u64);
        let block =
            2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d);
        (k + 1) * d + p * d + l * block + d + d * k
    }

    /// A randomly initialised model (GPT-2/nanoGPT init: N(0, 0.02), zero biases, residual projections
    /// scaled by 1/sqrt(2·n_layer)), with the output head zero-initialised as in the iGPT paper.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ImageGpt<B> {
        let normal = |std: f64| Initializer::Normal { mean: 0.0, std };
        let linear = |d_in, d_out, std: Option<f64>| match std {
            Some(std) => LinearConfig::new(d_in, d_out)
                .with_initializer(normal(std))
                .init(device)
                .zero_bias(),
            None => LinearConfig::new(d_in, d_out)
                .with_bias(false)
                .with_initializer(Initializer::Zeros)
                .init(device),
        };
        let norm = |d| {
            RmsNormConfig::new(d)
                .with_epsilon(self.layer_norm_epsilon)
                .init(device)
        };
        let embedding = |n, d| {
            EmbeddingConfig::new(n, d)
                .with_initializer(normal(0.02))
                .init(device)
        };
        self.build(linear, norm, embedding)
    }

    /// The model's shape with placeholder parameters, never computed: what a loader fills
    /// ([`crate::model::placeholder`]).
    pub(crate) fn skeleton<B: Backend>(&self, device: &B::Device) -> ImageGpt<B> {
        use crate::model::placeholder;
        self.build(
            |d_in, d_out, std: Option<f64>| placeholder::linear(d_in, d_out, std.is_some(), device),
            |d| placeholder::norm(d, self.layer_norm_epsilon, device),
            |n, d| placeholder::embedding(n, d, device),
        )
    }

    /// The model from its parts: `linear(d_in, d_out, Some(std))` a projection with a bias and that
    /// initial spread, `linear(.., None)` the bias-free, zero-initialised output head.
    fn build<B: Backend>(
        &self,
        linear: impl Fn(usize, usize, Option<f64>) -> Linear<B>,
        norm: impl Fn(usize) -> RmsNorm<B>,
        embedding: impl Fn(usize, usize) -> Embedding<B>,
    ) -> ImageGpt<B> {
        let d = self.n_embd;
        let residual_std = 0.02 / (2.0 * self.n_layer as f64).sqrt();
        let blocks = (0..self.n_layer)
            .map(|_| Block {
                ln_1: norm(d),
                attn: Attention {
                    c_attn: linear(d, 3 * d, Some(0.02)),
                    c_proj: linear(d, d, Some(residual_std)),
                    n_head: self.n_head,
                    scale: self.attention_scale(),
                },
                ln_2: norm(d),
                mlp: Mlp {
                    c_fc: linear(d, 4 * d, Some(0.02)),
                    c_proj: linear(4 * d, d, Some(residual_std)),
                },
            })
            .collect();
        ImageGpt {
            wte: embedding(self.n_colors + 1, d),
            wpe: embedding(self.n_positions, d),
            h: blocks,
            ln_f: norm(d),
            lm_head: linear(d, self.n_colors, None),
            score: None,
            precision: Precision::F32,
            objective: self.objective,
        }
    }
}

/// Zero biases, as GPT-2 initialises them (Burn's default init draws them at random).
trait ZeroBias {
    fn zero_bias(self) -> Self;
}

impl<B: Backend> ZeroBias for Linear<B> {
    fn zero_bias(mut self) -> Self {
        self.bias = self.bias.map(|b| b.map(|t| t.zeros_like()));
        self
    }
}

/// Multi-head self-attention, causal unless the model is BERT's; q|k|v come from one projection (HF
/// `c_attn`, in × out layout).
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    pub(crate) c_attn: Linear<B>,
    pub(crate) c_proj: Linear<B>,
    pub(crate) n_head: usize,
    /// Multiplies qkᵀ before the softmax (see [`ImageGptConfig::exact_attention_scale`]).
    pub(crate) scale: f64,
}

/// What one layer's pass reads besides its input: [`ForwardOptions`] as one layer sees them.
struct LayerPass<'a, B: Backend> {
    /// With a cache, the new keys/values are appended at its current length and the queries attend
    /// to everything cached so far.
    cache: Option<&'a mut LayerCache<B>>,
    /// `[batch, 1, 1, keys]`, added to every score of a key.
    padding: Option<&'a Tensor<B, 4>>,
    precision: Precision,
    /// Whether each position attends only to itself and earlier ones.
    causal: bool,
    /// Where this layer's attention is recorded (queries, keys, each head's output): the inspector
    /// forms attention probabilities and per-head attributions from it.
    trace: Option<&'a mut Vec<AttentionTrace<B>>>,
}

/// One layer's attention as a traced pass keeps it, each `[batch, heads, seq, head_dim]`.
pub struct AttentionTrace<B: Backend> {
    /// Queries and keys as attention used them.
    pub q: Tensor<B, 4>,
    pub k: Tensor<B, 4>,
    /// Each head's output, before the output projection mixes the heads.
    pub out: Tensor<B, 4>,
}

impl<B: Backend> Attention<B> {
    /// `x`: `[batch, seq, d]`.
    fn forward(&self, x: Tensor<B, 3>, pass: LayerPass<B>) -> Tensor<B, 3> {
        let LayerPass {
            cache,
            padding,
            precision,
            causal,
            trace,
        } = pass;
        let [b, t, d] = x.dims();
        let (h, hd) = (self.n_head, d / self.n_head);
        let heads = |z: Tensor<B, 3>| z.reshape([b, t, h, hd]).swap_dims(1, 2); // [b, h, t, hd]
        let mut qkv = precision
            .linear(&self.c_attn, x)
            .chunk(3, 2)
            .into_iter()
            .map(heads);
        let (q, k, v) = (
            qkv.next().unwrap(),
            qkv.next().unwrap(),
            qkv.next().unwrap(),
        );
        let (k, v) = match cache {
            Some(cache) => cache.append(k, v),
            None => (k, v),
        };
        let bias = padding.map(|p| precision.round(p.clone().clamp_min(precision.mask_value())));
        let (q, k, v) = (precision.round(q), precision.round(k), precision.round(v));
        let traced = trace.map(|trace| (trace, [q.clone(), k.clone()]));
        let y = precision.widen(attend(Qkv {
            q,
            k,
            v,
            key_bias: bias,
            scale: self.scale,
            causal,
        })); // [b, h, t, hd]
        if let Some((trace, [q, k])) = traced {
            trace.push(AttentionTrace {
                q,
                k,
                out: y.clone(),
            });
        }
        precision.linear(&self.c_proj, y.swap_dims(1, 2).reshape([b, t, d]))
    }
}

/// Position-wise MLP with HF's quick-GELU, `x·σ(1.702x)`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub(crate) c_fc: Linear<B>,
    pub(crate) c_proj: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    pub(crate) fn forward(&self, x: Tensor<B, 3>, precision: Precision) -> Tensor<B, 3> {
        let x = quick_gelu(precision.linear(&self.c_fc, x));
        precision.linear(&self.c_proj, x)
    }
}

/// Pre-norm residual block. HF's `ImageGPTLayerNorm` (no mean subtraction, no bias) is exactly RMSNorm.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    pub(crate) ln_1: RmsNorm<B>,
    pub(crate) attn: Attention<B>,
    pub(crate) ln_2: RmsNorm<B>,
    pub(crate) mlp: Mlp<B>,
}

impl<B: Backend> Block<B> {
    fn forward(&self, x: Tensor<B, 3>, pass: LayerPass<B>) -> Tensor<B, 3> {
        let precision = pass.precision;
        let x = x.clone() + self.attn.forward(self.ln_1.forward(x), pass);
        x.clone() + self.mlp.forward(self.ln_2.forward(x), precision)
    }
}

/// The whole model. Field names are the checkpoint's (`transformer.wte`, `transformer.h.{i}`, `lm_head`).
#[derive(Module, Debug)]
pub struct ImageGpt<B: Backend> {
    pub(crate) wte: Embedding<B>,
    pub(crate) wpe: Embedding<B>,
    pub(crate) h: Vec<Block<B>>,
    pub(crate) ln_f: RmsNorm<B>,
    pub(crate) lm_head: Linear<B>,
    /// The classification head of a fine-tuned model (HF's `score`: no bias), if it has one.
    pub(crate) score: Option<Linear<B>>,
    /// How the matrix products compute (f32 unless [`with_precision`](Self::with_precision) says).
    #[module(skip)]
    pub(crate) precision: Precision,
    /// What it was trained to predict; BERT's attention is not causal.
    #[module(skip)]
    pub(crate) objective: Objective,
}

/// What a forward pass keeps and reads besides the token ids; the default keeps nothing but the
/// final norm's output (see [`ImageGpt::forward_with`]).
pub struct ForwardOptions<'a, B: Backend> {
    /// Continue the sequence this cache holds (and grow it by the new tokens): sampling's fast path.
    pub cache: Option<&'a mut KvCache<B>>,
    /// HF's `attention_mask`, `[batch, seq]`: keys where it is false are padding. As in HF, padding
    /// gets an additive `f32::MIN` (a finite value of the half type in mixed precision, see
    /// `Precision::mask_value`) rather than -inf, so a query that sees only padding (the first
    /// position, when it is padding) still attends to it.
    pub keep: Option<Tensor<B, 2, Bool>>,
    /// Keep the residual stream ([`ForwardPass::residual`]): features, probes, the inspector.
    pub residual: bool,
    /// Keep every layer's attention: queries, keys and each head's output ([`ForwardPass::attention`]),
    /// for the inspector.
    pub attention: bool,
    /// Replace part of the stream at one layer (activation patching, the inspector).
    pub patch: Option<&'a Patch<B>>,
    /// `[batch, seq]`, true where a pixel is hidden: its input embedding is zeroed before the position
    /// embedding is added (the BERT objective's mask).
    pub masked: Option<Tensor<B, 2, Bool>>,
}

impl<B: Backend> Default for ForwardOptions<'_, B> {
    fn default() -> Self {
        Self {
            cache: None,
            keep: None,
            residual: false,
            attention: false,
            patch: None,
            masked: None,
        }
    }
}

/// One forward pass, up to the output heads.
pub struct ForwardPass<B: Backend> {
    /// The last block's output through the final norm `ln_f`: what [`ImageGpt::logits`] and
    /// [`ImageGpt::class_logits`] read.
    pub normed: Tensor<B, 3>,
    /// With [`ForwardOptions::residual`], `n_layer + 1` tensors `[batch, seq, d]`: index 0 the
    /// embeddings, index l the output of block l (the paper's h^l). HF's `hidden_states` are these
    /// with the last one through `ln_f`, i.e. `normed`.
    pub residual: Vec<Tensor<B, 3>>,
    /// With [`ForwardOptions::attention`], each layer's queries, keys and per-head outputs.
    pub attention: Vec<AttentionTrace<B>>,
    /// What attention multiplies q·k by before the softmax.
    pub scale: f64,
    /// Whether attention was causal.
    pub causal: bool,
}

impl<B: Backend> ForwardPass<B> {
    /// Layer `layer`'s attention probabilities, `[batch, heads, queries, keys]`, formed explicitly
    /// from the kept queries and keys (the fused kernels never form them).
    pub fn attention_weights(&self, layer: usize) -> Tensor<B, 4> {
        let AttentionTrace { q, k, .. } = &self.attention[layer];
        attention_weights(q.clone(), k.clone(), None, self.scale, self.causal)
    }
}

impl<B: Backend> ImageGpt<B> {
    /// The same weights, computing their products in `precision` (see [`Precision`]).
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// What the model was trained to predict.
    pub fn objective(&self) -> Objective {
        self.objective
    }

    /// How this model reads whole sequences of palette ids (no SOS), all of one length: its inputs
    /// and the tokens it predicts, `[batch, len]` each. Autoregressive: SOS then all but the last
    /// token; BERT: the tokens themselves (to hide some, pass [`ForwardOptions::masked`]).
    pub fn inputs_and_targets<'a>(
        &self,
        sequences: impl Iterator<Item = &'a [u16]> + Clone,
    ) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
        let device = self.device();
        if self.objective.is_causal() {
            return inputs_and_targets(sequences, self.n_colors(), &device);
        }
        let ids = token_ids(sequences, &device);
        (ids.clone(), ids)
    }

    /// The device the weights live on.
    pub fn device(&self) -> B::Device {
        self.wte.weight.device()
    }

    /// Palette size K (the SOS id).
    pub fn n_colors(&self) -> usize {
        self.lm_head.weight.dims()[1]
    }

    pub fn n_positions(&self) -> usize {
        self.wpe.weight.dims()[0]
    }

    pub fn n_embd(&self) -> usize {
        self.wte.weight.dims()[1]
    }

    pub fn n_layer(&self) -> usize {
        self.h.len()
    }

    /// [`ImageGptConfig::check_batch`] for this model's sizes.
    pub fn check_batch(&self, batch: usize, workload: Workload) -> Result<()> {
        ImageGptConfig::new(self.n_colors(), self.n_positions())
            .with_n_embd(self.n_embd())
            .with_n_layer(self.n_layer())
            .check_batch(batch, workload)
    }

    /// Logits for every position of `ids` (`[batch, seq]`, starting with SOS).
    pub fn forward(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.logits(self.forward_with(ids, ForwardOptions::default()).normed)
    }

    /// Incremental forward: `ids` (`[batch, new]`) continue the sequence held in `cache`, which grows by
    /// `new`. Gives the same logits as [`forward`](Self::forward) on the whole sequence.
    pub fn forward_cached(&self, ids: Tensor<B, 2, Int>, cache: &mut KvCache<B>) -> Tensor<B, 3> {
        let options = ForwardOptions {
            cache: Some(cache),
            ..Default::default()
        };
        self.logits(self.forward_with(ids, options).normed)
    }

    /// The learned position embeddings, `[n_positions, n_embd]`.
    pub(crate) fn position_embeddings(&self) -> Tensor<B, 2> {
        self.wpe.weight.val()
    }

    /// Draws every lazily initialised parameter now. Burn initialises a parameter on first use, and a
    /// clone taken before that gets its own draw: a random model that will be cloned (saved, hashed,
    /// compared) must be materialised first to stay one model.
    pub(crate) fn materialise(&self) {
        struct Touch;
        impl<B: Backend> burn::module::ModuleVisitor<B> for Touch {
            fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
                let _ = param.val();
            }
        }
        self.visit(&mut Touch);
    }

    /// The model, [materialised](Self::materialise).
    pub fn materialised(self) -> Self {
        self.materialise();
        self
    }

    /// Adds a zero-initialised classification head over `n_labels` classes, replacing any it had.
    pub fn with_classifier(mut self, n_labels: usize) -> Self {
        let device = self.device();
        self.score = Some(
            LinearConfig::new(self.n_embd(), n_labels)
                .with_bias(false)
                .with_initializer(Initializer::Zeros)
                .init(&device),
        );
        self
    }

    /// Classes the classification head scores; 0 without a head.
    pub fn n_labels(&self) -> usize {
        self.score.as_ref().map_or(0, |s| s.weight.dims()[1])
    }

    /// Refuses a model without a classification head rather than guess.
    pub fn require_head(&self) -> Result<()> {
        if self.n_labels() == 0 {
            return Err(Error::invalid(
                "this model has no classification head: fine-tune it first (igpt finetune)",
            ));
        }
        Ok(())
    }

    /// Class scores `[batch, labels]`: the final norm's output averaged over positions, through the
    /// head (HF's `ImageGPTForImageClassification`). `None` without a head.
    pub fn class_logits(&self, normed: Tensor<B, 3>) -> Option<Tensor<B, 2>> {
        let score = self.score.as_ref()?;
        let pooled = normed.mean_dim(1).squeeze_dim::<2>(1); // [batch, d]
        Some(self.precision.linear(score, pooled))
    }

    /// Each position's share of the class scores, `[batch, positions, labels]`: the head has no bias
    /// and reads the mean over positions, so a class's score is the sum over positions of the head
    /// applied to that position's state over their number. `None` without a head.
    pub fn position_class_logits(&self, normed: Tensor<B, 3>) -> Option<Tensor<B, 3>> {
        let score = self.score.as_ref()?;
        let positions = normed.dims()[1] as f32;
        Some(self.precision.linear(score, normed).div_scalar(positions))
    }

    /// The final norm `ln_f`, which the heads read after the last block (the logit lens applies it
    /// to any layer's hidden states).
    pub fn final_norm(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.ln_f.forward(x)
    }

    /// Block `layer`'s MLP neurons, after the activation (`[batch, seq, 4d]`), for the block's input
    /// stream `x` ([`ForwardPass::residual`]`[layer]`): the block's attention is run again to reach
    /// them. The feature atlas ranks images by these.
    pub fn mlp_neurons(&self, layer: usize, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let block = &self.h[layer];
        let pass = LayerPass {
            cache: None,
            padding: None,
            precision: self.precision,
            causal: self.objective.is_causal(),
            trace: None,
        };
        let mid = x.clone() + block.attn.forward(block.ln_1.forward(x), pass);
        quick_gelu(
            self.precision
                .linear(&block.mlp.c_fc, block.ln_2.forward(mid)),
        )
    }

    /// The next-colour scores from the final norm's output.
    pub fn logits(&self, normed: Tensor<B, 3>) -> Tensor<B, 3> {
        self.precision.linear(&self.lm_head, normed)
    }

    /// An empty cache for `batch` sequences of up to `n_positions` tokens.
    pub fn new_cache(&self, batch: usize) -> KvCache<B> {
        let device = self.device();
        let (d, t_max) = (self.n_embd(), self.n_positions());
        let layers = self
            .h
            .iter()
            .map(|block| {
                let h = block.attn.n_head;
                let empty = || Tensor::zeros([batch, h, t_max, d / h], &device);
                LayerCache {
                    key: empty(),
                    value: empty(),
                    len: 0,
                }
            })
            .collect();
        KvCache { layers, len: 0 }
    }

    /// The one forward pass: embeddings, blocks, final norm, keeping what `options` asks for. The
    /// heads are applied by the caller ([`logits`](Self::logits), [`class_logits`](Self::class_logits)),
    /// so one pass serves both of fine-tuning's losses.
    pub fn forward_with(
        &self,
        ids: Tensor<B, 2, Int>,
        options: ForwardOptions<B>,
    ) -> ForwardPass<B> {
        let ForwardOptions {
            mut cache,
            keep,
            residual: keep_residual,
            attention: keep_attention,
            patch,
            masked,
        } = options;
        let [_, t] = ids.dims();
        let start = cache.as_ref().map_or(0, |c| c.len);
        assert!(
            start + t <= self.n_positions(),
            "sequence of {} tokens exceeds the model's {} positions",
            start + t,
            self.n_positions()
        );
        let padding = keep.map(|keep| {
            let [b, t] = keep.dims();
            keep.bool_not()
                .float()
                .mul_scalar(f32::MIN)
                .reshape([b, 1, 1, t]) // [b, 1, 1, keys]
        });
        let positions = self
            .wpe
            .weight
            .val()
            .slice(start..start + t)
            .unsqueeze::<3>(); // [1, t, d]
        let tokens = self.wte.forward(ids); // [b, t, d]
        let tokens = match masked {
            Some(masked) => tokens * masked.bool_not().float().unsqueeze_dim::<3>(2),
            None => tokens,
        };
        let mut x = tokens + positions;
        let mut residual = Vec::new();
        let mut attention = Vec::new();
        let patched = |x: Tensor<B, 3>, layer: usize| match patch {
            Some(patch) if patch.layer == layer => patch.apply(x, start),
            _ => x,
        };
        for (i, block) in self.h.iter().enumerate() {
            x = patched(x, i);
            if keep_residual {
                residual.push(x.clone());
            }
            let pass = LayerPass {
                cache: cache.as_mut().map(|c| &mut c.layers[i]),
                padding: padding.as_ref(),
                precision: self.precision,
                causal: self.objective.is_causal(),
                trace: keep_attention.then_some(&mut attention),
            };
            x = block.forward(x, pass);
        }
        if let Some(cache) = cache {
            cache.len += t;
        }
        x = patched(x, self.n_layer());
        if keep_residual {
            residual.push(x.clone());
        }
        ForwardPass {
            normed: self.final_norm(x),
            residual,
            attention,
            scale: self.h.first().map_or(1.0, |block| block.attn.scale),
            causal: self.objective.is_causal(),
        }
    }
}

/// Keys and values of every layer for the tokens seen so far. Preallocated to the full context
/// (`[batch, heads, n_positions, head_dim]`) and filled in place, never grown by concatenation.
pub struct KvCache<B: Backend> {
    layers: Vec<LayerCache<B>>,
    len: usize,
}

impl<B: Backend> KvCache<B> {
    /// Tokens cached so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

struct LayerCache<B: Backend> {
    key: Tensor<B, 4>,
    value: Tensor<B, 4>,
    len: usize,
}

impl<B: Backend> LayerCache<B> {
    /// Writes `[b, h, new, hd]` keys/values after the cached ones; returns all of them so far.
    fn append(&mut self, k: Tensor<B, 4>, v: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let [b, h, t, hd] = k.dims();
        let (start, end) = (self.len, self.len + t);
        // Moved out, not cloned: the cache must be the buffer's only owner for the backend to write
        // in place instead of copying the whole [b, h, n_positions, hd] buffer every step.
        let placeholder = || Tensor::empty([0, 0, 0, 0], &k.device());
        let key = std::mem::replace(&mut self.key, placeholder());
        let value = std::mem::replace(&mut self.value, placeholder());
        self.key = crate::kernels::cache_write::write_rows(key, k, start);
        self.value = crate::kernels::cache_write::write_rows(value, v, start);
        self.len = end;
        (
            self.key.clone().slice([0..b, 0..h, 0..end, 0..hd]),
            self.value.clone().slice([0..b, 0..h, 0..end, 0..hd]),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_gpu_buffer_is_the_embedding_or_one_layer_s_cache() {
        // 512 colours, 16 positions, width 8: the embedding (513 x 8 = 4104 floats) outweighs one
        // image's cache (16 x 8), and 64 images' cache (64 x 16 x 8 = 8192 floats) outweighs it.
        let config = ImageGptConfig::new(512, 16).with_n_embd(8);
        assert_eq!(config.largest_buffer_bytes(1), 4 * 513 * 8);
        assert_eq!(config.largest_buffer_bytes(64), 4 * 64 * 16 * 8);
    }

    /// `mlp_neurons` are the block's own: a block's output y is mid + MLP(mid), with the neurons
    /// n = act(c_fc(ln_2(mid))); so y - c_proj(n) must give back the mid that n came from.
    #[cfg(feature = "flex")]
    #[test]
    fn mlp_neurons_are_what_the_block_projects() {
        use burn::backend::Flex;
        use burn::tensor::TensorData;
        let device = Default::default();
        let model = ImageGptConfig::new(16, 12)
            .with_n_embd(8)
            .init::<Flex>(&device);
        let ids = Tensor::<Flex, 2, Int>::from_data(
            TensorData::new((0..24).map(|i| (i * 5 % 17) as i64).collect(), [2, 12]),
            &device,
        );
        let options = ForwardOptions {
            residual: true,
            ..Default::default()
        };
        let pass = model.forward_with(ids, options);
        for layer in 0..model.n_layer() {
            let neurons = model.mlp_neurons(layer, pass.residual[layer].clone());
            assert_eq!(neurons.dims(), [2, 12, 4 * 8]);
            let block = &model.h[layer];
            let mid = pass.residual[layer + 1].clone() - block.mlp.c_proj.forward(neurons.clone());
            let again = quick_gelu(block.mlp.c_fc.forward(block.ln_2.forward(mid)));
            let diff: f32 = (again - neurons.clone()).abs().max().into_scalar();
            assert!(diff < 1e-5, "layer {layer}: {diff}");
            // The check can tell: neurons read from the stream before attention are off by well
            // over its tolerance (by about 1e-3 at this random init, whose attention writes little;
            // a 1e-3 bar failed once at 8.7e-4, so the bar is ten times the tolerance).
            let before = block.ln_2.forward(pass.residual[layer].clone());
            let wrong = quick_gelu(block.mlp.c_fc.forward(before));
            let off: f32 = (wrong - neurons).abs().max().into_scalar();
            assert!(
                off > 1e-4,
                "layer {layer}: skipping attention moves the neurons only {off}"
            );
        }
    }

    #[test]
    fn preset_takes_names_and_explicit_shapes() {
        let named = ImageGptConfig::preset("small", 16, 784).unwrap();
        assert_eq!((named.n_embd, named.n_layer, named.n_head), (256, 8, 8));
        let explicit = ImageGptConfig::preset("128x4x2", 16, 784).unwrap();
        assert_eq!(
            (explicit.n_embd, explicit.n_layer, explicit.n_head),
            (128, 4, 2)
        );
        for bad in ["huge", "128x4", "128x4x2x1", "ax4x2", "130x4x4"] {
            assert!(ImageGptConfig::preset(bad, 16, 784).is_err(), "{bad}");
        }
    }
}
