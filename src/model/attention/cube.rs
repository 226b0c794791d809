//! The CubeCL backends' fused attention ([`crate::kernels::cube_flash`]) behind Burn's types: plain
//! tensors for inference, and under autodiff a custom operation that registers the kernels'
//! backward pass, as the CPU kernel's does for flex ([`super::trained`]).
//!
//! The backends are recognised by type (see `crate::kernels::flex` for why): wgpu and cuda, each
//! plain or under autodiff. Anything the kernels do not take (another dtype, a head dimension past
//! [`cube_flash::MAX_HEAD_DIM`], more queries than keys) is handed back for Burn's unfused path.

use std::any::TypeId;

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Tensor, TensorPrimitive};
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};

use super::Qkv;
use crate::kernels::cast::cast;
use crate::kernels::cube_flash::{self, Forward};

/// Whether [`attention`] takes tensors of `dtype` on backend `B`.
pub(super) fn fused<B: Backend>(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F16 | DType::BF16) && backend::<B>().is_some()
}

/// The CubeCL backends this build has, plain or under autodiff.
#[derive(Clone, Copy)]
enum Cube {
    #[cfg(feature = "wgpu")]
    Wgpu { trained: bool },
    #[cfg(feature = "cuda")]
    Cuda { trained: bool },
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
    if id == TypeId::of::<Wgpu>() || id == TypeId::of::<Autodiff<Wgpu>>() {
        let trained = id == TypeId::of::<Autodiff<Wgpu>>();
        return Some(Cube::Wgpu { trained });
    }
    #[cfg(feature = "cuda")]
    if id == TypeId::of::<Cuda>() || id == TypeId::of::<Autodiff<Cuda>>() {
        let trained = id == TypeId::of::<Autodiff<Cuda>>();
        return Some(Cube::Cuda { trained });
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
        Cube::Wgpu { trained: false } => plain::<B, WgpuRuntime>(x),
        #[cfg(feature = "wgpu")]
        Cube::Wgpu { trained: true } => tracked::<B, WgpuRuntime, f32, i32, u32>(x),
        #[cfg(feature = "cuda")]
        Cube::Cuda { trained: false } => plain::<B, CudaRuntime>(x),
        #[cfg(feature = "cuda")]
        Cube::Cuda { trained: true } => tracked::<B, CudaRuntime, f32, i32, u8>(x),
    })
}

/// The backend's tensor inside `t`, as the type it is known to be.
fn inner<B: Backend, T: 'static>(t: Tensor<B, 4>) -> T {
    cast(t.into_primitive().tensor())
}

fn outer<B: Backend, T: 'static>(t: T) -> Tensor<B, 4> {
    Tensor::from_primitive(TensorPrimitive::Float(cast(t)))
}

/// Inference: the forward kernel alone (`B`'s tensors are `CubeTensor<R>`).
fn plain<B: Backend, R: CubeRuntime>(x: Qkv<B>) -> Tensor<B, 4> {
    let [q, k, v] = [x.q, x.k, x.v].map(inner::<B, CubeTensor<R>>);
    let bias = x.key_bias.map(inner::<B, CubeTensor<R>>);
    let forward = cube_flash::forward(&q, &k, &v, bias.as_ref(), x.scale as f32, x.causal);
    outer::<B, _>(forward.output)
}

/// What the backward pass needs: the inputs, the output and each query's log-sum-exp.
#[derive(Clone, Debug)]
struct Saved<R: CubeRuntime> {
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    key_bias: Option<CubeTensor<R>>,
    output: CubeTensor<R>,
    log_sum_exp: CubeTensor<R>,
    scale: f32,
    causal: bool,
}

#[derive(Debug)]
struct FusedAttentionBackward;

impl<R, F, I, BT> Backward<CubeBackend<R, F, I, BT>, 3> for FusedAttentionBackward
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    type State = Saved<R>;

    fn backward(self, ops: Ops<Saved<R>, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        type C<R, F, I, BT> = CubeBackend<R, F, I, BT>;
        let grad_output = grads.consume::<C<R, F, I, BT>>(&ops.node);
        let s = ops.state;
        let forward = Forward {
            output: s.output,
            log_sum_exp: s.log_sum_exp,
        };
        let g = cube_flash::backward(
            &s.q,
            &s.k,
            &s.v,
            s.key_bias.as_ref(),
            &forward,
            &grad_output,
            s.scale,
            s.causal,
        );
        let [q_node, k_node, v_node] = ops.parents;
        for (node, grad) in [(q_node, g.query), (k_node, g.key), (v_node, g.value)] {
            if let Some(node) = node {
                grads.register::<C<R, F, I, BT>>(node.id, grad);
            }
        }
    }
}

/// Training: the forward kernel under autodiff, registering the backward kernels when any input
/// needs a gradient (`B` is `Autodiff<CubeBackend<R, F, I, BT>>`).
fn tracked<B, R, F, I, BT>(x: Qkv<B>) -> Tensor<B, 4>
where
    B: Backend,
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    type Tracked<R, F, I, BT> = FloatTensor<Autodiff<CubeBackend<R, F, I, BT>>>;
    let [q, k, v] = [x.q, x.k, x.v].map(inner::<B, Tracked<R, F, I, BT>>);
    // The bias is a constant (HF's padding mask): no gradient flows to it.
    let key_bias = x
        .key_bias
        .map(|b| inner::<B, Tracked<R, F, I, BT>>(b).primitive);
    let nodes = [q.node.clone(), k.node.clone(), v.node.clone()];
    let (scale, causal) = (x.scale as f32, x.causal);
    let (q, k, v) = (q.primitive, k.primitive, v.primitive);
    let forward = cube_flash::forward(&q, &k, &v, key_bias.as_ref(), scale, causal);
    let output = forward.output.clone();
    let prepared = Backward::<CubeBackend<R, F, I, BT>, 3>::prepare::<NoCheckpointing>(
        FusedAttentionBackward,
        nodes,
    );
    let result = match prepared.compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let saved = Saved {
                q,
                k,
                v,
                key_bias,
                output: forward.output,
                log_sum_exp: forward.log_sum_exp,
                scale,
                causal,
            };
            prep.finish(saved, output)
        }
        OpsKind::UnTracked(prep) => prep.finish(output),
    };
    outer::<B, _>(result)
}
