//! Self-attention, causal (next-pixel prediction) or not (the BERT objective): the model's one entry
//! point, [`attend`], which picks the fastest kernel per backend.
//!
//! | backend | inference (sampling, eval) | training (autodiff) |
//! |---|---|---|
//! | flex, native | [`flash`]: tiled, causal blocks skipped, threads | [`flash`] forward and its own backward (`trained`) |
//! | flex in wasm | [`flash`] on one thread (it reads the KV cache in place; Burn's flex attention copied K and V every token) | (the browser does not train) |
//! | wgpu, cuda (native) | [`crate::kernels::cube_flash`]: fused, FlashAttention-2 tiling, one CubeCL source (`cube`) | the same forward and its own backward kernels (`cube_trained`) |
//! | WebGPU in the browser | Burn's unfused composition, through `crate::kernels::matmul` (see below) | (the browser does not train) |
//!
//! The page keeps the unfused path on WebGPU. Its fused forward was tried there (2026-12-06): it
//! added 33 KB to the gzipped wasm, 13 KB past the page's 1.6 MB budget, and on SwiftShader it
//! sampled the default model at 0.75x the unfused path's tokens/s (5.7 against 7.7; the first row
//! 9.5 s against 5.7 s after navigation): a sampled token is one query, and the kernel gives each
//! query one unit that walks every key, where a GPU wants the keys split across units.
//! burn-cubecl 0.21's own flash kernel is reached only through its autotuner and only without an
//! explicit scale, which the model always passes.
//!
//! Every path computes softmax(scale · q kᵀ + key bias + causal mask) v with the causal mask aligned
//! bottom-right, so queries at the end of a longer (cached) key sequence see every earlier key; without
//! the mask every query sees every key.
//! `tests/attention.rs` holds the fused paths to Burn's unfused one, gradients included.

#[cfg(feature = "flex")]
mod cpu;
#[cfg(all(any(feature = "wgpu", feature = "cuda"), not(target_arch = "wasm32")))]
mod cube;
#[cfg(all(any(feature = "wgpu", feature = "cuda"), not(target_arch = "wasm32")))]
mod cube_trained;
/// The CPU flash kernel itself: plain f32 compute under the model, so it lives in `crate::kernels`.
pub use crate::kernels::flash;
#[cfg(all(feature = "flex", not(target_arch = "wasm32")))]
mod trained;

use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{DType, Tensor};

/// Which implementation computes attention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// The CPU flash kernel of this module (forward and backward).
    Flash,
    /// The CubeCL backends' fused kernels (`crate::kernels::cube_flash`, forward and backward).
    Cube,
    /// Burn's own: the backend's `attention`, or the unfused fallback under autodiff.
    Burn,
}

impl std::fmt::Display for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kernel::Flash => "igpt flash (CPU)",
            Kernel::Cube => "igpt flash (CubeCL)",
            Kernel::Burn => "Burn's",
        })
    }
}

/// The kernel [`attend`] runs on backend `B` for tensors of `dtype`.
pub fn kernel<B: Backend>(dtype: DType) -> Kernel {
    #[cfg(feature = "flex")]
    if crate::kernels::flex::cpu::<B>(dtype).is_some() {
        return Kernel::Flash;
    }
    #[cfg(all(any(feature = "wgpu", feature = "cuda"), not(target_arch = "wasm32")))]
    if cube::fused::<B>(dtype) {
        return Kernel::Cube;
    }
    let _ = dtype;
    Kernel::Burn
}

/// One attention call: what every kernel reads.
pub struct Qkv<B: Backend> {
    /// `[batch, heads, queries, head_dim]`.
    pub q: Tensor<B, 4>,
    /// `[batch, heads, keys, head_dim]` with `queries ≤ keys` (more keys: a cached step).
    pub k: Tensor<B, 4>,
    pub v: Tensor<B, 4>,
    /// `[batch, 1, 1, keys]`, added to every score of that key (HF's padding mask).
    pub key_bias: Option<Tensor<B, 4>>,
    /// Multiplies q·kᵀ before the softmax.
    pub scale: f64,
    /// Whether query `i` sees only keys up to its own position (the autoregressive model); else
    /// every key (the BERT objective).
    pub causal: bool,
}

/// An attention kernel: softmax(scale · q kᵀ + key bias + causal mask if `causal`) v, `[batch, heads,
/// queries, head_dim]`. [`attend`], [`unfused_or_backend`] and the CPU kernels all are one.
pub type AttentionKernel<B> = fn(Qkv<B>) -> Tensor<B, 4>;

/// The model's attention: the fastest kernel for this backend and dtype.
pub fn attend<B: Backend>(x: Qkv<B>) -> Tensor<B, 4> {
    #[cfg(feature = "flex")]
    if let Some(cpu) = crate::kernels::flex::cpu::<B>(x.q.dtype())
        && x.key_bias.as_ref().is_none_or(|b| b.dtype() == DType::F32)
    {
        #[cfg(not(target_arch = "wasm32"))]
        if cpu == crate::kernels::flex::Cpu::Trained {
            return trained::attention(x);
        }
        let _ = cpu;
        return cpu::attention(x);
    }
    #[cfg(all(any(feature = "wgpu", feature = "cuda"), not(target_arch = "wasm32")))]
    let x = match cube::attention(x) {
        Ok(output) => return output,
        Err(x) => x,
    };
    // In the browser the other backend is WebGPU: Burn's attention there is this same unfused
    // composition, but through Burn's matmul, which `crate::kernels::matmul` keeps out of the wasm.
    #[cfg(target_arch = "wasm32")]
    return crate::kernels::matmul::matmul(
        attention_weights(x.q, x.k, x.key_bias, x.scale, x.causal),
        x.v,
    );
    #[cfg(not(target_arch = "wasm32"))]
    unfused_or_backend(x)
}

/// What the backend itself runs for `attention` (Burn's unfused fallback under autodiff): the
/// reference the fused CPU kernel is tested against.
pub fn unfused_or_backend<B: Backend>(x: Qkv<B>) -> Tensor<B, 4> {
    let Qkv {
        q,
        k,
        v,
        key_bias,
        scale,
        causal,
    } = x;
    let [b, h, tq, _] = q.dims();
    let tk = k.dims()[2];
    let options = AttentionModuleOptions {
        is_causal: causal,
        scale: Some(scale),
        ..Default::default()
    };
    let bias = key_bias.map(|bias| bias.expand([b, h, tq, tk]));
    attention(q, k, v, None, bias, options)
}

/// The attention probabilities softmax(scale · q kᵀ + key bias + causal mask if `causal`), `[batch,
/// heads, queries, keys]`, formed explicitly: what the inspector shows. The fused kernels never form
/// them, so this is the slow path; `weights.matmul(v)` equals [`attend`] (tests/inspect.rs).
pub fn attention_weights<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    key_bias: Option<Tensor<B, 4>>,
    scale: f64,
    causal: bool,
) -> Tensor<B, 4> {
    let [b, h, tq, _] = q.dims();
    let tk = k.dims()[2];
    let scores = crate::kernels::matmul::matmul(q, k.swap_dims(2, 3)).mul_scalar(scale);
    let scores = match key_bias {
        Some(bias) => scores + bias.expand([b, h, tq, tk]),
        None => scores,
    };
    // Bottom-right aligned: query i (of the last tq) sees keys 0..=tk - tq + i, so a single query
    // (a sampling step) sees them all.
    if tq == 1 || !causal {
        return burn::tensor::activation::softmax(scores, 3);
    }
    let future =
        Tensor::<B, 2, burn::tensor::Bool>::tril_mask([tq, tk], (tk - tq) as i64, &scores.device())
            .unsqueeze::<4>()
            .expand([b, h, tq, tk]);
    burn::tensor::activation::softmax(scores.mask_fill(future, f32::NEG_INFINITY), 3)
}
