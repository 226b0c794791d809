//! Direct logit attribution: the true colour's logit at a pixel, split into what each part of the
//! model wrote into the residual stream (the embeddings, each attention head, each layer's attention
//! bias, each MLP), read through the final norm with its scale frozen and through the head.
//!
//! The last layer's hidden state is the sum of those parts (every block adds its attention and MLP
//! outputs to the stream), and with the norm's 1/rms held at its value the read-out is linear, so
//! the parts sum to the logit. Each head's part is its output through its rows of the attention's
//! output projection; an MLP's part is its output on the stream rebuilt from the parts before it.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use serde::Serialize;

use crate::kernels::matmul::linear;
use crate::model::{Block, ImageGpt};

/// One part's share of a logit.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Part {
    /// `embeddings`, `layer L head H`, `layer L attention bias` or `layer L MLP` (layers from 0).
    pub name: String,
    pub logit: f32,
}

/// The true colour's logit at one pixel and its parts, in the model's order.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Attribution {
    /// The model's logit for the true colour (its output, before the softmax).
    pub logit: f32,
    pub parts: Vec<Part>,
}

/// The parts' names, in the order [`contributions`] computes them.
pub fn part_names(n_layer: usize, n_head: usize) -> Vec<String> {
    let mut names = vec!["embeddings".to_string()];
    for l in 0..n_layer {
        names.extend((0..n_head).map(|h| format!("layer {l} head {h}")));
        names.push(format!("layer {l} attention bias"));
        names.push(format!("layer {l} MLP"));
    }
    names
}

/// Every part's contribution to the logit of `targets[p]` at every position p (one sequence), as
/// `[parts, positions]` flattened, parts in [`part_names`]' order. `residual` is the traced pass's
/// residual stream (`n_layer + 1` tensors `[1, seq, d]`) and `heads` each layer's per-head attention
/// output (`[1, heads, seq, head_dim]`).
pub(crate) fn contributions<B: Backend>(
    model: &ImageGpt<B>,
    residual: &[Tensor<B, 3>],
    heads: &[Tensor<B, 4>],
    targets: Tensor<B, 1, Int>,
) -> Tensor<B, 1> {
    let last = residual.last().expect("the embeddings at least").clone();
    let [_, n, d] = last.dims();
    let device = last.device();
    // What the head reads a part with: the final norm's gain over the stream's rms at that position
    // (frozen), times the head's column for the true colour: `[1, n, d]`.
    let norm = &model.ln_f;
    let inv_rms = (last.powi_scalar(2).mean_dim(2) + norm.epsilon)
        .sqrt()
        .recip(); // [1, n, 1]
    let gain = norm.gamma.val().reshape([1, 1, d]);
    let columns = model
        .lm_head
        .weight
        .val()
        .transpose()
        .select(0, targets)
        .reshape([1, n, d]);
    let read = gain * inv_rms * columns;
    let logit_of = |part: Tensor<B, 3>| (part * read.clone()).sum_dim(2).reshape([n]);

    let mut parts = vec![logit_of(residual[0].clone())];
    for (l, block) in model.h.iter().enumerate() {
        let projection = &block.attn.c_proj;
        let mut attention = Tensor::zeros([1, n, d], &device);
        for written in head_writes(block, heads[l].clone()) {
            attention = attention + written.clone();
            parts.push(logit_of(written));
        }
        let bias = match &projection.bias {
            Some(b) => b.val().reshape([1, 1, d]).expand([1, n, d]),
            None => Tensor::zeros([1, n, d], &device),
        };
        parts.push(logit_of(bias.clone()));
        // The MLP's output, run again on the stream its block gave it, rebuilt from the parts: the
        // parts then sum to the last layer's state only if the heads' split is right.
        let middle = residual[l].clone() + attention + bias;
        let mlp = block
            .mlp
            .forward(block.ln_2.forward(middle), model.precision);
        parts.push(logit_of(mlp));
    }
    Tensor::cat(parts, 0)
}

/// What each head of `block` writes into the stream: its output (`[batch, heads, seq, head_dim]`)
/// through its rows of the attention's output projection (rows head-major, as the heads are
/// concatenated), bias left out: one `[batch, seq, d]` per head.
pub(crate) fn head_writes<B: Backend>(block: &Block<B>, out: Tensor<B, 4>) -> Vec<Tensor<B, 3>> {
    let weight = block.attn.c_proj.weight.val(); // [d, d]
    let [b, h, n, hd] = out.dims();
    let d = weight.dims()[1];
    (0..h)
        .map(|head| {
            let rows = weight.clone().slice([head * hd..(head + 1) * hd, 0..d]);
            let own = out
                .clone()
                .slice([0..b, head..head + 1, 0..n, 0..hd])
                .reshape([b, n, hd]);
            linear(own, rows, None)
        })
        .collect()
}
