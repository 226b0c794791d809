//! Matrix products on WebGPU in the browser, through the one cubek-matmul routine a browser gets.
//!
//! Burn's matmul (burn-cubecl → `cubek::matmul::launch_ref`) chooses among twenty-odd kernel families
//! at run time, so the wasm carries the host code that generates every one of them: a bare Burn
//! wgpu + flex build is 0.47 MB gzipped, one `matmul` call on `Wgpu` makes it 1.45 MB, and the same
//! call launching SimpleUnit directly 0.88 MB (wasm probes built for this comparison). WebGPU in
//! browsers has no cooperative-matrix (CMMA) instructions, so Burn's default (`Strategy::Auto`) tries the
//! CMMA kernel, finds it unavailable and runs `SimpleUnit` every time. Launching `SimpleUnit` directly
//! keeps the same kernel and leaves the others out of the build (the site's wasm: 2.26 → 1.70 MB
//! gzipped; sampling on SwiftShader's WebGPU 11.0 → 11.1 tokens/s). Native builds keep Burn's matmul.

use std::any::TypeId;

use burn::backend::Wgpu;
use burn::backend::wgpu::WgpuRuntime;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn_cubecl::kernel::matmul::init_matmul_output;
use burn_cubecl::tensor::CubeTensor;
use cubek::matmul::definition::{MatmulElems, MatmulGlobalElems};
use cubek::matmul::launch::launch_tiling;
use cubek::matmul::routines::BlueprintStrategy;
use cubek::matmul::routines::simple_unit::SimpleUnitAlgorithm;
use cubek::std::InputBinding;

use crate::kernels::cast::{unwrap_float, wrap_float};

/// Whether `B` is the WebGPU backend.
pub(super) fn is_webgpu<B: Backend>() -> bool {
    TypeId::of::<B>() == TypeId::of::<Wgpu>()
}

/// `lhs · rhs` (`[.., m, k] · [.., k, n]`, leading dimensions of size 1 broadcast); `B` must be WebGPU.
pub(super) fn matmul<B: Backend, const D: usize>(
    lhs: Tensor<B, D>,
    rhs: Tensor<B, D>,
) -> Tensor<B, D> {
    let lhs: CubeTensor<WgpuRuntime> = unwrap_float(lhs);
    let rhs: CubeTensor<WgpuRuntime> = unwrap_float(rhs);
    let out = init_matmul_output(&lhs, &rhs, lhs.dtype);
    let mut dtypes = MatmulElems::from_globals(&MatmulGlobalElems {
        lhs: lhs.dtype.into(),
        rhs: rhs.dtype.into(),
        out: out.dtype.into(),
    });
    let (lhs_dtype, rhs_dtype) = (lhs.dtype.into(), rhs.dtype.into());
    let launched = launch_tiling::launch_ref(
        &out.client.clone(),
        InputBinding::new(lhs.binding(), lhs_dtype),
        InputBinding::new(rhs.binding(), rhs_dtype),
        out.clone().binding(),
        &BlueprintStrategy::<(), SimpleUnitAlgorithm>::default(),
        &mut dtypes,
    );
    // SimpleUnit runs on every WebGPU adapter (it is Burn's own fallback); a failure here is a bug.
    if let Err(e) = launched {
        panic!("WebGPU matmul could not launch: {e:?}");
    }
    wrap_float(out)
}
