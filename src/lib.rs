//! igpt: Image GPT (Chen et al., "Generative Pretraining from Pixels", 2020) in Rust.
//!
//! Data flows one way: image → palette tokens → model → logits → sampler → tokens → palette colours →
//! pixels. The model is generic over Burn's backend; the CLI (native) and `web.rs` (wasm) choose one.

pub mod activation;
pub mod attention;
pub mod error;
pub mod inspect;
pub mod matmul;
pub mod model;
pub mod palette;
pub mod pca;
pub mod precision;
pub mod raster;
pub mod sample;
pub mod store;

#[cfg(not(target_arch = "wasm32"))]
pub mod augment;
#[cfg(not(target_arch = "wasm32"))]
pub mod baselines;
#[cfg(not(target_arch = "wasm32"))]
pub mod classify;
#[cfg(not(target_arch = "wasm32"))]
pub mod data;
#[cfg(not(target_arch = "wasm32"))]
pub mod eval;
#[cfg(not(target_arch = "wasm32"))]
pub mod features;
#[cfg(not(target_arch = "wasm32"))]
pub mod finetune;
#[cfg(not(target_arch = "wasm32"))]
pub mod probe;
#[cfg(not(target_arch = "wasm32"))]
pub mod run;
#[cfg(not(target_arch = "wasm32"))]
pub mod step;
#[cfg(not(target_arch = "wasm32"))]
pub mod train;
#[cfg(target_arch = "wasm32")]
pub mod web;

mod cache_write;
mod cast;
#[cfg(feature = "flex")]
mod flex;
mod par;
mod placeholder;
mod simd;

pub use error::{Error, Result};
pub use model::{ImageGpt, ImageGptConfig, KvCache, Trace};
pub use palette::{Palette, Tokenizer};
pub use precision::Precision;
pub use raster::Raster;
pub use store::{ModelCard, ModelFiles, StoredModel, WeightPrecision};
