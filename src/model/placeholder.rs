//! Modules whose parameters are placeholders, never computed: the model's shape for a loader to fill.
//!
//! `ImageGptConfig::init` would do (Burn computes parameters lazily, and the loader replaces every one
//! before use), but Burn's initializers include an orthogonal one built on matmul, so going through
//! them brings all of Burn's WebGPU matmul kernels into the browser build (see `crate::kernels::matmul`).

use burn::module::{Param, ParamId};
use burn::nn::{Embedding, Linear, RmsNorm};
use burn::tensor::backend::Backend;
use burn::tensor::{Shape, Tensor};

/// A parameter of `shape` that would be zeros if it were ever read before being replaced.
fn lazy<B: Backend, const D: usize>(shape: [usize; D], device: &B::Device) -> Param<Tensor<B, D>> {
    Param::uninitialized(
        ParamId::new(),
        move |device, _| Tensor::zeros(shape, device),
        device.clone(),
        false,
        Shape::new(shape),
    )
}

pub(crate) fn linear<B: Backend>(
    d_in: usize,
    d_out: usize,
    bias: bool,
    device: &B::Device,
) -> Linear<B> {
    Linear {
        weight: lazy([d_in, d_out], device),
        bias: bias.then(|| lazy([d_out], device)),
    }
}

pub(crate) fn norm<B: Backend>(d: usize, epsilon: f64, device: &B::Device) -> RmsNorm<B> {
    RmsNorm {
        gamma: lazy([d], device),
        epsilon,
    }
}

pub(crate) fn embedding<B: Backend>(n: usize, d: usize, device: &B::Device) -> Embedding<B> {
    Embedding {
        weight: lazy([n, d], device),
    }
}
