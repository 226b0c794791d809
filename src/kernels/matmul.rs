//! The model's matrix products: `Tensor::matmul` and Burn's `linear` everywhere but on WebGPU in the
//! browser, where they launch one cubek-matmul routine directly ([`webgpu`], to keep the wasm small).

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

#[cfg(all(target_arch = "wasm32", feature = "wgpu"))]
mod webgpu;

/// `lhs · rhs`, `[.., m, k] · [.., k, n]`; leading dimensions of size 1 broadcast.
pub fn matmul<B: Backend, const D: usize>(lhs: Tensor<B, D>, rhs: Tensor<B, D>) -> Tensor<B, D> {
    #[cfg(all(target_arch = "wasm32", feature = "wgpu"))]
    if webgpu::is_webgpu::<B>() {
        return webgpu::matmul(lhs, rhs);
    }
    lhs.matmul(rhs)
}

/// `x · weight + bias` over the last dimension of `x` (`weight`: `[in, out]`), as Burn's `linear`.
pub fn linear<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, D> {
    #[cfg(all(target_arch = "wasm32", feature = "wgpu"))]
    if webgpu::is_webgpu::<B>() {
        // As Burn's own `linear` shapes it: [.., in] · [1.., in, out], the weight broadcast over the
        // leading dimensions (flattening them into rows instead ran 3× slower on SwiftShader).
        let y = webgpu::matmul(x, weight.unsqueeze::<D>());
        return match bias {
            Some(bias) => y + bias.unsqueeze::<D>(),
            None => y,
        };
    }
    burn::tensor::module::linear(x, weight, bias)
}
