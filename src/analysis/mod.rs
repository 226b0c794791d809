//! Measuring what a model learned over datasets: principal components; natively also baselines,
//! per-layer features, linear probes and classification; on both, which pixels moved a label. (What it makes of one image is
//! `crate::inspect`.)

pub mod explain;
pub mod pca;

#[cfg(not(target_arch = "wasm32"))]
pub mod baselines;
#[cfg(not(target_arch = "wasm32"))]
pub mod classify;
#[cfg(not(target_arch = "wasm32"))]
pub mod features;
#[cfg(not(target_arch = "wasm32"))]
pub mod probe;
