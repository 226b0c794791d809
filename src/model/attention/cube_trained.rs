//! Training's fused attention on the CubeCL backends: the kernels of [`crate::kernels::cube_flash`]
//! as a custom autodiff operation for `Autodiff<CubeBackend<..>>` (wgpu, cuda), registering their
//! own backward pass as [`super::trained`] does for flex. Native only (the browser does not train).

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};

use super::Qkv;
use crate::kernels::cast::{unwrap_float, wrap_float};
use crate::kernels::cube_flash::{self, Forward};

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
pub(super) fn tracked<B, R, F, I, BT>(x: Qkv<B>) -> Tensor<B, 4>
where
    B: Backend,
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    type Tracked<R, F, I, BT> = FloatTensor<Autodiff<CubeBackend<R, F, I, BT>>>;
    let [q, k, v] = [x.q, x.k, x.v].map(unwrap_float::<B, 4, Tracked<R, F, I, BT>>);
    // The bias is a constant (HF's padding mask): no gradient flows to it.
    let key_bias = x
        .key_bias
        .map(|b| unwrap_float::<B, 4, Tracked<R, F, I, BT>>(b).primitive);
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
    wrap_float(result)
}
