//! igpt: Image GPT (Chen et al., "Generative Pretraining from Pixels", 2020) in Rust.
//!
//! Data flows one way: image → palette tokens → model → logits → sampler → tokens → palette colours →
//! pixels. The folders are that flow: `pixels` (palette, raster), `data` (datasets), `model` (the
//! transformer), `kernels` (the CPU and GPU routines under it), `train` (the one loop, its step and run
//! folder), `analysis` (probes, features, baselines), `inspect` (what the model makes of one image:
//! the inspector's views), `store` (model directories); `sample` draws images left to right and
//! `inpaint` fills any region with a BERT model. The model is
//! generic over Burn's backend; the CLI (native) and `web.rs` (wasm) choose one.

pub mod analysis;
pub mod error;
pub mod inpaint;
pub mod inspect;
pub(crate) mod kernels;
pub mod model;
pub mod pixels;
pub mod sample;
pub mod store;

#[cfg(not(target_arch = "wasm32"))]
pub mod data;
#[cfg(not(target_arch = "wasm32"))]
pub mod eval;
#[cfg(not(target_arch = "wasm32"))]
pub mod train;
#[cfg(target_arch = "wasm32")]
pub mod web;

pub use error::{Error, Result};
pub use model::precision::Precision;
pub use model::{ForwardOptions, ForwardPass, ImageGpt, ImageGptConfig, KvCache};
pub use pixels::palette::{Palette, Tokenizer};
pub use pixels::raster::Raster;
pub use store::{ModelCard, ModelFiles, StoredModel, WeightPrecision};
