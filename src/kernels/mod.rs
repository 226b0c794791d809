//! The routines under the model: the CPU kernels (causal flash attention, flex glue, SIMD loops,
//! parallel loops, the KV cache written in place) and the matrix products (one cubek routine in the
//! browser).

// bf16 matrix products on Intel AMX tiles, and the linear layer that runs them on flex (mixed
// precision on the CPU). Linux grants a process the tiles through arch_prctl (libc).
#[cfg(all(
    feature = "flex",
    target_arch = "x86_64",
    target_os = "linux",
    target_env = "gnu"
))]
pub(crate) mod amx;
#[cfg(all(
    feature = "flex",
    target_arch = "x86_64",
    target_os = "linux",
    target_env = "gnu"
))]
pub(crate) mod amx_linear;
pub(crate) mod cache_write;
pub(crate) mod cast;
// Fused attention for the CubeCL backends, natively (wgpu, cuda; the browser keeps its unfused path,
// see `crate::model::attention`).
#[cfg(all(any(feature = "wgpu", feature = "cuda"), not(target_arch = "wasm32")))]
pub(crate) mod cube_flash;
#[cfg(feature = "flex")]
pub(crate) mod flex;
// Public through `crate::model::attention::flash`: the model's CPU attention, tested directly.
pub mod flash;
pub(crate) mod matmul;
pub(crate) mod par;
pub(crate) mod simd;
