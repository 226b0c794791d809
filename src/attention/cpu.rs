//! The flash kernel behind Burn's types (see `crate::flex`): plain `Flex` tensors for inference, and
//! a custom autodiff operation for `Autodiff<Flex>`.
//!
//! q, k and v are read in place through their strides; the output and the gradients come back as
//! `[batch, heads, seq, head_dim]` views of token-major buffers, so the model's merge of the heads
//! (`swap_dims(1, 2).reshape(..)`) costs nothing.

use std::sync::Arc;

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorData};

use super::flash::{self, Dims, Strided, Strides};
use crate::flex::{Cpu, Trained, cast, primitive, tensor};

/// Runs the kernel on `cpu` (what `crate::flex::cpu` said `B` is).
pub(super) fn attention<B: Backend>(
    cpu: Cpu,
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    key_bias: Option<Tensor<B, 4>>,
    scale: f64,
) -> Tensor<B, 4> {
    if cpu == Cpu::Trained {
        let inputs = [q, k, v].map(|t| primitive::<Trained, 4>(cast(t)));
        let bias = key_bias.map(|b| primitive::<Trained, 4>(cast(b)).primitive);
        return cast(tensor::<Trained, 4>(tracked(inputs, bias, scale as f32)));
    }
    let [q, k, v] = [q, k, v].map(|t| primitive::<Flex, 4>(cast(t)));
    let bias = key_bias.map(|b| primitive::<Flex, 4>(cast(b)));
    let inputs = Inputs::new(q, k, v, bias);
    let output = inputs.forward(scale as f32).output;
    cast(tensor::<Flex, 4>(
        inputs.heads_view(output, inputs.dims.queries),
    ))
}

/// A `[batch, heads, seq, head_dim]` tensor and its strides: as it is when its last dimension is
/// contiguous and no stride is negative (the views the model makes), else a contiguous copy.
fn strided(t: FlexTensor) -> (FlexTensor, Strides) {
    let readable = |t: &FlexTensor| {
        let s = t.layout().strides();
        s[3] == 1 && s.iter().all(|&x| x >= 0)
    };
    let t = if readable(&t) { t } else { t.to_contiguous() };
    let (s, offset) = (t.layout().strides(), t.layout().start_offset());
    let strides = Strides {
        offset,
        batch: s[0] as usize,
        head: s[1] as usize,
        row: s[2] as usize,
    };
    (t, strides)
}

/// Inputs with their strides and sizes.
#[derive(Clone, Debug)]
struct Inputs {
    q: (FlexTensor, Strides),
    k: (FlexTensor, Strides),
    v: (FlexTensor, Strides),
    /// `[batch, keys]`, contiguous.
    key_bias: Option<FlexTensor>,
    dims: Dims,
}

fn view(t: &(FlexTensor, Strides)) -> Strided<'_> {
    Strided::new(t.0.storage(), t.1)
}

impl Inputs {
    fn new(q: FlexTensor, k: FlexTensor, v: FlexTensor, key_bias: Option<FlexTensor>) -> Self {
        let (qs, ks) = (q.layout().shape().clone(), k.layout().shape().clone());
        let dims = Dims {
            batch: qs[0],
            heads: qs[1],
            queries: qs[2],
            keys: ks[2],
            head_dim: qs[3],
        };
        Inputs {
            q: strided(q),
            k: strided(k),
            v: strided(v),
            key_bias: key_bias.map(|b| b.to_contiguous()),
            dims,
        }
    }

    fn key_bias(&self) -> Option<&[f32]> {
        self.key_bias.as_ref().map(|b| b.storage())
    }

    fn forward(&self, scale: f32) -> flash::Forward {
        let (q, k, v) = (view(&self.q), view(&self.k), view(&self.v));
        flash::forward(q, k, v, self.key_bias(), self.dims, scale)
    }

    /// A token-major buffer (`[batch, seq, heads, head_dim]`) as a `[batch, heads, seq, head_dim]`
    /// tensor: a permuted view, no copy.
    fn heads_view(&self, values: Vec<f32>, seq: usize) -> FlexTensor {
        let d = self.dims;
        if d.heads == 1 {
            // The same memory; a contiguous layout keeps flex on its fast paths (its contiguity
            // check does not look past the size-1 head dimension's stride).
            return FlexTensor::from_data(TensorData::new(values, [d.batch, 1, seq, d.head_dim]));
        }
        FlexTensor::from_data(TensorData::new(values, [d.batch, seq, d.heads, d.head_dim]))
            .permute(&[0, 2, 1, 3])
    }
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
) -> FloatTensor<Trained> {
    let nodes = [q.node.clone(), k.node.clone(), v.node.clone()];
    let inputs = Inputs::new(q.primitive, k.primitive, v.primitive, key_bias);
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
