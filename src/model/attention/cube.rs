//! The CubeCL backends' fused attention ([`crate::kernels::cube_flash`]) behind Burn's types: plain
//! tensors for inference, and under autodiff the custom operation of [`super::cube_trained`].
//!
//! The backends are recognised by type (see `crate::kernels::flex` for why): wgpu and cuda, each
//! plain or under autodiff. Anything the kernels do not take (another dtype, a head dimension past
//! [`cube_flash::MAX_HEAD_DIM`], more queries than keys) is handed back for Burn's unfused path.

use std::any::TypeId;

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{CubeBackend, CubeRuntime};

use super::Qkv;
use super::cube_trained::tracked;
use crate::kernels::cast::{unwrap_float, wrap_float};
use crate::kernels::cube_flash;

/// Whether [`attention`] takes tensors of `dtype` on backend `B`.
pub(super) fn fused<B: Backend>(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F16 | DType::BF16) && backend::<B>().is_some()
}

/// The CubeCL backends this build has, plain or under autodiff.
#[derive(Clone, Copy)]
enum Cube {
    #[cfg(feature = "wgpu")]
    Wgpu,
    #[cfg(feature = "wgpu")]
    WgpuTrained,
    #[cfg(feature = "cuda")]
    Cuda,
    #[cfg(feature = "cuda")]
    CudaTrained,
}

#[cfg(feature = "wgpu")]
type WgpuRuntime = burn_cubecl::cubecl::wgpu::WgpuRuntime;
/// `burn::backend::Wgpu`.
#[cfg(feature = "wgpu")]
type Wgpu = CubeBackend<WgpuRuntime, f32, i32, u32>;
#[cfg(feature = "cuda")]
type CudaRuntime = burn_cubecl::cubecl::cuda::CudaRuntime;
/// `burn::backend::Cuda`.
#[cfg(feature = "cuda")]
type Cuda = CubeBackend<CudaRuntime, f32, i32, u8>;

fn backend<B: Backend>() -> Option<Cube> {
    let id = TypeId::of::<B>();
    #[cfg(feature = "wgpu")]
    if id == TypeId::of::<Wgpu>() {
        return Some(Cube::Wgpu);
    }
    #[cfg(feature = "wgpu")]
    if id == TypeId::of::<Autodiff<Wgpu>>() {
        return Some(Cube::WgpuTrained);
    }
    #[cfg(feature = "cuda")]
    if id == TypeId::of::<Cuda>() {
        return Some(Cube::Cuda);
    }
    #[cfg(feature = "cuda")]
    if id == TypeId::of::<Autodiff<Cuda>>() {
        return Some(Cube::CudaTrained);
    }
    let _ = id;
    None
}

/// Runs the fused kernels when `B` is a CubeCL backend and the call is one they take; otherwise
/// hands the call back.
pub(super) fn attention<B: Backend>(x: Qkv<B>) -> Result<Tensor<B, 4>, Qkv<B>> {
    let [_, _, tq, d] = x.q.dims();
    let tk = x.k.dims()[2];
    let dtype = x.q.dtype();
    let same = x.k.dtype() == dtype && x.v.dtype() == dtype;
    let Some(cube) = backend::<B>() else {
        return Err(x);
    };
    if !fused::<B>(dtype) || !same || tq > tk || d == 0 || d > cube_flash::MAX_HEAD_DIM {
        return Err(x);
    }
    // The kernels read the bias as f32 (HF's padding bias is f32 even in half precision).
    let x = Qkv {
        key_bias: x.key_bias.map(|b| b.cast(DType::F32)),
        ..x
    };
    Ok(match cube {
        #[cfg(feature = "wgpu")]
        Cube::Wgpu => plain::<B, WgpuRuntime>(x),
        #[cfg(feature = "wgpu")]
        Cube::WgpuTrained => tracked::<B, WgpuRuntime, f32, i32, u32>(x),
        #[cfg(feature = "cuda")]
        Cube::Cuda => plain::<B, CudaRuntime>(x),
        #[cfg(feature = "cuda")]
        Cube::CudaTrained => tracked::<B, CudaRuntime, f32, i32, u8>(x),
    })
}

/// Inference: the forward kernel alone (`B`'s tensors are `CubeTensor<R>`).
fn plain<B: Backend, R: CubeRuntime>(x: Qkv<B>) -> Tensor<B, 4> {
    let [q, k, v] = [x.q, x.k, x.v].map(unwrap_float::<B, 4, CubeTensor<R>>);
    let bias = x.key_bias.map(unwrap_float::<B, 4, CubeTensor<R>>);
    let forward = cube_flash::forward(&q, &k, &v, bias.as_ref(), x.scale as f32, x.causal);
    wrap_float(forward.output)
}
