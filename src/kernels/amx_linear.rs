//! The model's linear layers in bf16 on AMX tiles ([`super::amx`]) behind Burn's types on flex (see
//! [`super::flex`]): f32 tensors in and out, each product's operands rounded to bf16 as they are
//! packed, as PyTorch's autocast computes a linear layer in bf16. Under autodiff, a custom operation
//! with its own backward pass, whose two products (dX = dY · Wᵀ, dW = Xᵀ · dY) run on the tiles too.

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorData};

use super::amx::{self, Matrix};
use super::flex::{Cpu, Trained, cast, primitive, tensor};

/// `x · weight + bias` over the last dimension of `x` (`weight`: `[in, out]`), as Burn's `linear`,
/// with the product on the tiles. `B` is flex, plain or under autodiff, as `cpu` says.
pub(crate) fn linear<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
    cpu: Cpu,
) -> Tensor<B, D> {
    let mut shape = x.dims();
    let inputs = shape[D - 1];
    let rows = shape[..D - 1].iter().product();
    shape[D - 1] = weight.dims()[1];
    let x: Tensor<B, 2> = x.reshape([rows, inputs]);
    let y: Tensor<B, 2> = match cpu {
        Cpu::Plain => {
            let (x, w) = (
                primitive::<Flex, 2>(cast(x)),
                primitive::<Flex, 2>(cast(weight)),
            );
            cast(tensor::<Flex, 2>(product(&readable(x), &readable(w))))
        }
        Cpu::Trained => {
            let (x, w) = (
                primitive::<Trained, 2>(cast(x)),
                primitive::<Trained, 2>(cast(weight)),
            );
            cast(tensor::<Trained, 2>(tracked(x, w)))
        }
    };
    let y = y.reshape(shape);
    match bias {
        Some(bias) => y + bias.unsqueeze::<D>(),
        None => y,
    }
}

/// A 2-D flex tensor as a [`Matrix`] read in place through its strides (a contiguous copy only if a
/// stride is negative).
fn matrix(t: &FlexTensor) -> Matrix<'_> {
    let layout = t.layout();
    let (shape, strides) = (layout.shape(), layout.strides());
    debug_assert!(
        strides.iter().all(|&s| s >= 0),
        "made readable by `readable`"
    );
    Matrix {
        data: &t.storage::<f32>()[layout.start_offset()..],
        rows: shape[0],
        cols: shape[1],
        row_stride: strides[0] as usize,
        col_stride: strides[1] as usize,
    }
}

/// `t` as it is when [`matrix`] can read it in place, else a contiguous copy.
fn readable(t: FlexTensor) -> FlexTensor {
    if t.layout().strides().iter().all(|&s| s >= 0) {
        t
    } else {
        t.to_contiguous()
    }
}

fn from_rows(values: Vec<f32>, rows: usize, cols: usize) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, [rows, cols]))
}

/// `x · w` on the tiles.
fn product(x: &FlexTensor, w: &FlexTensor) -> FlexTensor {
    let (a, b) = (matrix(x), matrix(w));
    from_rows(amx::matmul(a, b), a.rows, b.cols)
}

/// What the backward pass needs: both inputs.
#[derive(Clone, Debug)]
struct Saved {
    x: FlexTensor,
    w: FlexTensor,
}

#[derive(Debug)]
struct TileLinearBackward;

impl Backward<Flex, 2> for TileLinearBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = readable(grads.consume::<Flex>(&ops.node));
        let Saved { x, w } = ops.state;
        let (x, w, g) = (matrix(&x), matrix(&w), matrix(&grad));
        let [x_node, w_node] = ops.parents;
        if let Some(node) = x_node {
            let dx = amx::matmul(g, w.transposed());
            grads.register::<Flex>(node.id, from_rows(dx, x.rows, x.cols));
        }
        if let Some(node) = w_node {
            let dw = amx::matmul(x.transposed(), g);
            grads.register::<Flex>(node.id, from_rows(dw, w.rows, w.cols));
        }
    }
}

/// The forward pass under autodiff; registers the backward pass when either input needs a gradient.
fn tracked(x: FloatTensor<Trained>, w: FloatTensor<Trained>) -> FloatTensor<Trained> {
    let nodes = [x.node.clone(), w.node.clone()];
    let (x, w) = (readable(x.primitive), readable(w.primitive));
    let output = product(&x, &w);
    match TileLinearBackward
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(Saved { x, w }, output),
        OpsKind::UnTracked(prep) => prep.finish(output),
    }
}
