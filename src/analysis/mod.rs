//! Looking at what a model learned: the inspector's numbers (CLI and page alike) and their principal
//! components; natively also baselines, per-layer features, linear probes and classification.

pub mod inspect;
pub mod pca;

#[cfg(not(target_arch = "wasm32"))]
pub mod baselines;
#[cfg(not(target_arch = "wasm32"))]
pub mod classify;
#[cfg(not(target_arch = "wasm32"))]
pub mod features;
#[cfg(not(target_arch = "wasm32"))]
pub mod probe;
