//! `igpt bench`: throughput of training steps and of sampling strategies, as ratios from one run.

use std::time::Instant;

use anyhow::bail;
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, ElementConversion, Int, Tensor};
use clap::{Args, Subcommand};
use igpt::model::attention::{self, AttentionKernel, Qkv};
use igpt::sample::{Decoding, Generation, SamplingConfig};
use igpt::store;
use igpt::train::step::{self, Batch};
use igpt::{ImageGptConfig, Precision};

use crate::backend::{BackendJob, DeviceKind};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Training steps per second (forward, backward, Adam) on random tokens.
    Train(BenchTrainArgs),
    /// Sampling: KV cache with on-device sampling vs naive re-forward vs a readback every token.
    Sample(BenchSampleArgs),
    /// Causal attention alone, forward and backward: the kernel the model runs vs Burn's unfused one.
    Attention(BenchAttentionArgs),
}

/// The model shape to measure: a model directory, or a preset with a palette size and context.
#[derive(Args)]
pub struct Shape {
    /// Model directory (its own shape and weights).
    #[arg(long, conflicts_with = "preset")]
    model: Option<std::path::PathBuf>,
    /// Preset size when no --model is given (tiny, small, igpt-s, ..., or WIDTHxLAYERSxHEADS).
    #[arg(long, default_value = "small")]
    preset: String,
    /// Palette size K for --preset.
    #[arg(long, default_value_t = 16)]
    colors: usize,
    /// Context length (pixels) for --preset.
    #[arg(long, default_value_t = 784)]
    positions: usize,
    #[arg(long, value_enum, default_value_t)]
    pub device: DeviceKind,
}

impl Shape {
    fn config(&self) -> anyhow::Result<ImageGptConfig> {
        Ok(ImageGptConfig::preset(
            &self.preset,
            self.colors,
            self.positions,
        )?)
    }
}

#[derive(Args)]
pub struct BenchTrainArgs {
    #[command(flatten)]
    pub shape: Shape,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Timed steps (after 2 warm-up steps).
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Matrix products in bf16 or f16, as `igpt train --precision`.
    #[arg(long, value_enum, default_value_t)]
    precision: Precision,
}

#[derive(Args)]
pub struct BenchSampleArgs {
    #[command(flatten)]
    pub shape: Shape,
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Tokens generated per image (default: the whole image).
    #[arg(long)]
    tokens: Option<usize>,
    /// Time the cached samplers only, (a) and (c): the naive re-forward (b) is the slow baseline,
    /// and on a GPU backend each of its lengths may compile kernels of its own.
    #[arg(long)]
    cached_only: bool,
}

#[derive(Args)]
pub struct BenchAttentionArgs {
    #[arg(long, default_value_t = 16)]
    batch: usize,
    #[arg(long, default_value_t = 4)]
    heads: usize,
    #[arg(long, default_value_t = 32)]
    head_dim: usize,
    /// Sequence length.
    #[arg(long, default_value_t = 784)]
    len: usize,
    /// Timed repetitions (after one warm-up).
    #[arg(long, default_value_t = 5)]
    steps: usize,
    #[arg(long, value_enum, default_value_t)]
    pub device: DeviceKind,
}

impl BackendJob for BenchAttentionArgs {
    type Output = ();

    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<()> {
        type A<B> = Autodiff<B>;
        let shape = [self.batch, self.heads, self.len, self.head_dim];
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let random = || Tensor::<A<B>, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let (q, k, v) = (random(), random(), random());
        let mut seconds = Vec::new();
        for (name, attend) in [
            (
                attention::kernel::<A<B>>(q.dtype()).to_string(),
                attention::attend::<A<B>> as AttentionKernel<_>,
            ),
            (
                "Burn's unfused".to_string(),
                attention::unfused_or_backend::<A<B>>,
            ),
        ] {
            let mut began = Instant::now();
            for step in 0..self.steps + 1 {
                if step == 1 {
                    B::sync(&device)?;
                    began = Instant::now();
                }
                let (q, k, v) = (
                    q.clone().require_grad(),
                    k.clone().require_grad(),
                    v.clone().require_grad(),
                );
                // backward() computes every input's gradient; reading them back is not timed.
                let x = Qkv {
                    q,
                    k,
                    v,
                    key_bias: None,
                    scale,
                    causal: true,
                };
                let _grads = attend(x).sum().backward();
            }
            B::sync(&device)?;
            let s = began.elapsed().as_secs_f64() / self.steps as f64;
            println!(
                "attention {shape:?} forward+backward, {name:<18} {:>8.1} ms",
                s * 1e3
            );
            seconds.push(s);
        }
        println!(
            "ratio on {}: {:.2}x the unfused path's speed",
            B::name(&device),
            seconds[1] / seconds[0]
        );
        Ok(())
    }
}

impl BackendJob for BenchTrainArgs {
    type Output = ();

    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<()> {
        type A<B> = Autodiff<B>;
        let config = match &self.shape.model {
            Some(dir) => store::load_dir::<B>(dir, &device)?.config,
            None => self.shape.config()?,
        };
        let (k, n, b) = (config.n_colors, config.n_positions, self.batch);
        self.precision.check_supported::<B>(&device)?;
        let mut model = config.init::<A<B>>(&device).with_precision(self.precision);
        let mut optimizer = step::adam();
        let tokens = || {
            Tensor::<A<B>, 2, Int>::random([b, n], Distribution::Uniform(0.0, k as f64), &device)
        };
        let mut loss_value = 0.0;
        let mut timed = Instant::now();
        for i in 0..self.steps + 2 {
            if i == 2 {
                B::sync(&device)?;
                timed = Instant::now();
            }
            let targets = tokens();
            // Shapes and cost are what matter here, not which tokens.
            let batch = Batch {
                inputs: targets.clone(),
                targets,
                masked: None,
                labels: None,
                classification_only: false,
            };
            // Training's own step, clipping included (the default --grad-clip).
            let out;
            (model, out) = step::step(model, &mut optimizer, &batch, 1e-4, 1.0);
            if i == self.steps + 1 {
                loss_value = out.losses.total.into_scalar().elem::<f64>();
            }
        }
        B::sync(&device)?;
        let seconds = timed.elapsed().as_secs_f64();
        let tokens_per_second = (self.steps * b * n) as f64 / seconds;
        println!(
            "train {} ({:.2}M params, K={k}, ctx {n}) batch {b} on {}, {}: {tokens_per_second:.0} tokens/s, {:.1} images/s, {:.3} s/step (loss {loss_value:.3})",
            self.shape
                .model
                .as_ref()
                .map_or(self.shape.preset.clone(), |m| m.display().to_string()),
            config.num_params() as f64 / 1e6,
            B::name(&device),
            self.precision.describe_on::<A<B>>(),
            (self.steps * b) as f64 / seconds,
            seconds / self.steps as f64
        );
        Ok(())
    }
}

impl BackendJob for BenchSampleArgs {
    type Output = ();

    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<()> {
        let model = match &self.shape.model {
            Some(dir) => store::load_dir::<B>(dir, &device)?.model,
            // A random model samples exactly as fast as a trained one of the same shape.
            None => self.shape.config()?.init::<B>(&device),
        };
        let n = model.n_positions();
        let tokens = self.tokens.unwrap_or(n).min(n);
        if tokens == 0 {
            bail!("--tokens must be at least 1");
        }
        // Warm up (allocator pools, thread pools, shader compilation) before anything is timed, over
        // every position timed: the cached attention's length grows by one each step, and a GPU
        // backend may compile or tune kernels for each new length once, which (a) would pay and (c),
        // timed after it, would not (seen on CUDA with a 16-token warm-up: (a) 22, (c) 159 steps/s).
        let mut warm = Generation::new(
            &model,
            vec![vec![]; self.batch],
            SamplingConfig::default(),
            Decoding::Cached,
            0,
        )?;
        for _ in 0..tokens {
            warm.step(&model);
        }
        warm.read_back()?;
        let mut results = Vec::new();
        let samplers = [
            ("(a) KV cache, on-device sampling", Decoding::Cached, false),
            (
                "(b) naive re-forward (OpenAI's sampler)",
                Decoding::Reforward,
                false,
            ),
            ("(c) KV cache, readback every token", Decoding::Cached, true),
        ];
        for (name, decoding, every_token) in samplers {
            if self.cached_only && decoding == Decoding::Reforward {
                continue;
            }
            let prefixes = vec![vec![]; self.batch];
            let mut g = Generation::new(&model, prefixes, SamplingConfig::default(), decoding, 0)?;
            B::sync(&device)?;
            let began = Instant::now();
            for _ in 0..tokens {
                g.step(&model);
                if every_token {
                    g.read_back()?;
                }
            }
            g.read_back()?;
            let seconds = began.elapsed().as_secs_f64();
            let steps_per_second = tokens as f64 / seconds;
            println!(
                "{name:<42} {steps_per_second:>9.1} steps/s {:>10.0} tokens/s ({tokens} steps, batch {}, {seconds:.2}s)",
                steps_per_second * self.batch as f64,
                self.batch
            );
            results.push(steps_per_second);
        }
        let (cached, readback) = (results[0], results[results.len() - 1]);
        if self.cached_only {
            println!(
                "ratio on {}: (a)/(c) = {:.2}x",
                B::name(&device),
                cached / readback
            );
        } else {
            println!(
                "ratios on {}: (a)/(b) = {:.1}x, (a)/(c) = {:.2}x",
                B::name(&device),
                cached / results[1],
                cached / readback
            );
        }
        Ok(())
    }
}
