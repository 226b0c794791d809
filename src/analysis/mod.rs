//! Looking at what a model learned: the inspector's numbers (CLI and page alike), their principal
//! components and direct logit attribution; natively also baselines, per-layer features, linear probes and classification.

pub mod ablation;
pub mod attribution;
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
