//! Training's flash attention: the kernel of [`super::flash`] as a custom autodiff operation for
//! `Autodiff<Flex>`, registering its own backward pass as burn-autodiff's own ops do. Native only (the
//! browser does not train).

use std::sync::Arc;

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;

use super::Qkv;
use super::cpu::{Inputs, strided, view};
use super::flash;
use crate::kernels::flex::{Trained, cast, primitive, tensor};

/// [`super::cpu::attention`] on `Autodiff<Flex>` (the caller checked that `B` is).
pub(super) fn attention<B: Backend>(x: Qkv<B>) -> Tensor<B, 4> {
    let inputs = [x.q, x.k, x.v].map(|t| primitive::<Trained, 4>(cast(t)));
    let bias = x
        .key_bias
        .map(|b| primitive::<Trained, 4>(cast(b)).primitive);
    cast(tensor::<Trained, 4>(tracked(
        inputs,
        bias,
        x.scale as f32,
        x.causal,
    )))
}

/// What the backward pass needs: the inputs, the output and each query's log-sum-exp (O(t) per head,
/// never the t × t probabilities).
#[derive(Clone, Debug)]
struct Saved {
    inputs: Inputs,
    output: FlexTensor,
    log_sum_exp: Arc<Vec<f32>>,
    scale: f32,
}

#[derive(Debug)]
struct FlashAttentionBackward;

impl Backward<Flex, 3> for FlashAttentionBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad_output = strided(grads.consume::<Flex>(&ops.node));
        let Saved {
            inputs,
            output,
            log_sum_exp,
            scale,
        } = ops.state;
        let (q, k, v) = (view(&inputs.q), view(&inputs.k), view(&inputs.v));
        let g = flash::backward(
            q,
            k,
            v,
            inputs.key_bias(),
            // The view's buffer is the kernel's token-major output itself.
            output.storage(),
            &log_sum_exp,
            view(&grad_output),
            inputs.dims,
            scale,
        );
        let [q_node, k_node, v_node] = ops.parents;
        let (tq, tk) = (inputs.dims.queries, inputs.dims.keys);
        for (node, grad, seq) in [
            (q_node, g.query, tq),
            (k_node, g.key, tk),
            (v_node, g.value, tk),
        ] {
            if let Some(node) = node {
                grads.register::<Flex>(node.id, inputs.heads_view(grad, seq));
            }
        }
    }
}

/// The forward pass under autodiff; registers the backward pass when any input needs a gradient.
fn tracked(
    [q, k, v]: [FloatTensor<Trained>; 3],
    key_bias: Option<FlexTensor>,
    scale: f32,
    causal: bool,
) -> FloatTensor<Trained> {
    let nodes = [q.node.clone(), k.node.clone(), v.node.clone()];
    let inputs = Inputs::new(q.primitive, k.primitive, v.primitive, key_bias, causal);
    let forward = inputs.forward(scale);
    let output = inputs.heads_view(forward.output, inputs.dims.queries);
    match FlashAttentionBackward
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let saved = Saved {
                inputs,
                output: output.clone(),
                log_sum_exp: Arc::new(forward.log_sum_exp),
                scale,
            };
            prep.finish(saved, output)
        }
        OpsKind::UnTracked(prep) => prep.finish(output),
    }
}
