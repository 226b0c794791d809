//! The flash kernel behind Burn's types (see `crate::kernels::flex`): plain `Flex` tensors for inference
//! (natively and in the browser), and the strided inputs that the autodiff operation for
//! `Autodiff<Flex>` ([`super::trained`]) reads too.
//!
//! q, k and v are read in place through their strides; the output and the gradients come back as
//! `[batch, heads, seq, head_dim]` views of token-major buffers, so the model's merge of the heads
//! (`swap_dims(1, 2).reshape(..)`) costs nothing.

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::Qkv;
use super::flash::{self, Dims, Strided, Strides};
use crate::kernels::flex::{cast, primitive, tensor};

/// Runs the kernel on plain `Flex` tensors (inference; `B` is `Flex`, as
/// `crate::kernels::flex::cpu` found).
pub(super) fn attention<B: Backend>(x: Qkv<B>) -> Tensor<B, 4> {
    let [q, k, v] = [x.q, x.k, x.v].map(|t| primitive::<Flex, 4>(cast(t)));
    let bias = x.key_bias.map(|b| primitive::<Flex, 4>(cast(b)));
    let inputs = Inputs::new(q, k, v, bias, x.causal);
    let output = inputs.forward(x.scale as f32).output;
    cast(tensor::<Flex, 4>(
        inputs.heads_view(output, inputs.dims.queries),
    ))
}

/// A `[batch, heads, seq, head_dim]` tensor and its strides: as it is when its last dimension is
/// contiguous and no stride is negative (the views the model makes), else a contiguous copy.
pub(super) fn strided(t: FlexTensor) -> (FlexTensor, Strides) {
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
pub(super) struct Inputs {
    pub(super) q: (FlexTensor, Strides),
    pub(super) k: (FlexTensor, Strides),
    pub(super) v: (FlexTensor, Strides),
    /// `[batch, keys]`, contiguous.
    key_bias: Option<FlexTensor>,
    pub(super) dims: Dims,
}

pub(super) fn view(t: &(FlexTensor, Strides)) -> Strided<'_> {
    Strided::new(t.0.storage(), t.1)
}

impl Inputs {
    pub(super) fn new(
        q: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        key_bias: Option<FlexTensor>,
        causal: bool,
    ) -> Self {
        let (qs, ks) = (q.layout().shape().clone(), k.layout().shape().clone());
        let dims = Dims {
            batch: qs[0],
            heads: qs[1],
            queries: qs[2],
            keys: ks[2],
            head_dim: qs[3],
            causal,
        };
        Inputs {
            q: strided(q),
            k: strided(k),
            v: strided(v),
            key_bias: key_bias.map(|b| b.to_contiguous()),
            dims,
        }
    }

    pub(super) fn key_bias(&self) -> Option<&[f32]> {
        self.key_bias.as_ref().map(|b| b.storage())
    }

    pub(super) fn forward(&self, scale: f32) -> flash::Forward {
        let (q, k, v) = (view(&self.q), view(&self.k), view(&self.v));
        flash::forward(q, k, v, self.key_bias(), self.dims, scale)
    }

    /// A token-major buffer (`[batch, seq, heads, head_dim]`) as a `[batch, heads, seq, head_dim]`
    /// tensor: a permuted view, no copy.
    pub(super) fn heads_view(&self, values: Vec<f32>, seq: usize) -> FlexTensor {
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
