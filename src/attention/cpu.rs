//! The flash kernel behind Burn's types: plain `Flex` tensors for inference, and a custom autodiff
//! operation for `Autodiff<Flex>`, built as burn-autodiff's own ops are (a [`Backward`] impl, then
//! `prepare(..).compute_bound().stateful()`, `grads.register`).
//!
//! The model is generic over `B: Backend`, and Burn's backend traits cannot be extended without a new
//! bound on every generic function of the crate; so [`handles`] recognises the two CPU backends by
//! their type and [`attention`] moves the tensors to the concrete types (a checked downcast, no copy).

use std::any::{Any, TypeId};
use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};

use super::flash::{self, Dims};

type Trained = Autodiff<Flex>;

/// Whether the flash kernel runs on `B` for `dtype`: f32 on flex, with or without autodiff.
pub(super) fn handles<B: Backend>(dtype: DType) -> bool {
    let backend = TypeId::of::<B>();
    let on_cpu = backend == TypeId::of::<Flex>() || backend == TypeId::of::<Trained>();
    on_cpu && dtype == DType::F32
}

/// Runs the kernel; call only where [`handles`] said yes.
pub(super) fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    key_bias: Option<Tensor<B, 4>>,
    scale: f64,
) -> Tensor<B, 4> {
    if TypeId::of::<B>() == TypeId::of::<Trained>() {
        let inputs = [q, k, v].map(|t| primitive::<Trained>(cast(t)));
        let bias = key_bias.map(|b| primitive::<Trained>(cast(b)).primitive);
        return cast(tensor::<Trained>(tracked(inputs, bias, scale as f32)));
    }
    let [q, k, v] = [q, k, v].map(|t| primitive::<Flex>(cast(t)));
    let bias = key_bias.map(|b| primitive::<Flex>(cast(b)));
    let inputs = Inputs::new(q, k, v, bias);
    let output = inputs.forward(scale as f32).output;
    cast(tensor::<Flex>(flex_tensor(output, inputs.output_shape())))
}

/// `x` as the type it is known to be (`handles` checked the backend).
fn cast<T: 'static, U: 'static>(x: T) -> U {
    *(Box::new(x) as Box<dyn Any>)
        .downcast::<U>()
        .expect("backend type checked by `handles`")
}

fn primitive<B: Backend>(t: Tensor<B, 4>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

fn tensor<B: Backend>(p: FloatTensor<B>) -> Tensor<B, 4> {
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

fn flex_tensor(values: Vec<f32>, shape: [usize; 4]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// Contiguous inputs and their sizes.
#[derive(Clone, Debug)]
struct Inputs {
    q: FlexTensor,
    k: FlexTensor,
    v: FlexTensor,
    key_bias: Option<FlexTensor>,
    dims: Dims,
}

impl Inputs {
    fn new(q: FlexTensor, k: FlexTensor, v: FlexTensor, key_bias: Option<FlexTensor>) -> Self {
        let shape = |t: &FlexTensor| t.layout().shape().clone();
        let (qs, ks) = (shape(&q), shape(&k));
        let dims = Dims {
            batch: qs[0],
            heads: qs[1],
            queries: qs[2],
            keys: ks[2],
            head_dim: qs[3],
        };
        Inputs {
            q: q.to_contiguous(),
            k: k.to_contiguous(),
            v: v.to_contiguous(),
            key_bias: key_bias.map(|b| b.to_contiguous()),
            dims,
        }
    }

    fn output_shape(&self) -> [usize; 4] {
        let d = self.dims;
        [d.batch, d.heads, d.queries, d.head_dim]
    }

    fn key_shape(&self) -> [usize; 4] {
        let d = self.dims;
        [d.batch, d.heads, d.keys, d.head_dim]
    }

    fn forward(&self, scale: f32) -> flash::Forward {
        flash::forward(
            self.q.storage(),
            self.k.storage(),
            self.v.storage(),
            self.key_bias.as_ref().map(|b| b.storage()),
            self.dims,
            scale,
        )
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
        let grad_output = grads.consume::<Flex>(&ops.node).to_contiguous();
        let Saved {
            inputs,
            output,
            log_sum_exp,
            scale,
        } = ops.state;
        let g = flash::backward(
            inputs.q.storage(),
            inputs.k.storage(),
            inputs.v.storage(),
            inputs.key_bias.as_ref().map(|b| b.storage()),
            output.storage(),
            &log_sum_exp,
            grad_output.storage(),
            inputs.dims,
            scale,
        );
        let [q_node, k_node, v_node] = ops.parents;
        let shapes = [
            inputs.output_shape(),
            inputs.key_shape(),
            inputs.key_shape(),
        ];
        for ((node, grad), shape) in [q_node, k_node, v_node]
            .into_iter()
            .zip([g.query, g.key, g.value])
            .zip(shapes)
        {
            if let Some(node) = node {
                grads.register::<Flex>(node.id, flex_tensor(grad, shape));
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
    let output = flex_tensor(forward.output, inputs.output_shape());
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
