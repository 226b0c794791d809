//! Zero ablation: the model with one part silenced (one attention head, one layer's whole attention,
//! or one MLP), to see what the image's pixels cost without it.
//!
//! Silencing is done on the weights, so every path (the inspector's pass, eval, sampling and its
//! cache) runs the ablated model unchanged: a head's output reaches the stream only through its rows
//! of the attention's output projection, so zeroing those rows removes it; zeroing a sublayer's
//! whole output projection (bias included) removes that sublayer.

use std::fmt;
use std::str::FromStr;

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde::Serialize;

use super::ablation_means::AblationMeans;
use super::intervention::Change;
use crate::error::{Error, Result};
use crate::model::ImageGpt;

/// The part of the model an ablation silences (layers and heads counted from 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ablated {
    Head { layer: usize, head: usize },
    Attention { layer: usize },
    Mlp { layer: usize },
}

impl fmt::Display for Ablated {
    /// The same words as direct logit attribution's parts: `layer 1 head 2`, `layer 1 attention`,
    /// `layer 1 MLP`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ablated::Head { layer, head } => write!(f, "layer {layer} head {head}"),
            Ablated::Attention { layer } => write!(f, "layer {layer} attention"),
            Ablated::Mlp { layer } => write!(f, "layer {layer} MLP"),
        }
    }
}

impl FromStr for Ablated {
    type Err = Error;

    /// `head:L.H`, `attention:L` or `mlp:L`.
    fn from_str(text: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(format!(
                "cannot read the part `{text}`: use head:LAYER.HEAD, attention:LAYER or mlp:LAYER (from 0), e.g. head:1.2"
            ))
        };
        let (kind, at) = text.split_once(':').ok_or_else(bad)?;
        let number = |s: &str| s.trim().parse::<usize>().map_err(|_| bad());
        match kind.trim() {
            "head" => {
                let (layer, head) = at.split_once('.').ok_or_else(bad)?;
                Ok(Ablated::Head {
                    layer: number(layer)?,
                    head: number(head)?,
                })
            }
            "attention" => Ok(Ablated::Attention { layer: number(at)? }),
            "mlp" => Ok(Ablated::Mlp { layer: number(at)? }),
            _ => Err(bad()),
        }
    }
}

impl Ablated {
    /// Refuses a layer or head the model does not have.
    pub fn check<B: Backend>(&self, model: &ImageGpt<B>) -> Result<()> {
        let (layer, head) = match *self {
            Ablated::Head { layer, head } => (layer, Some(head)),
            Ablated::Attention { layer } | Ablated::Mlp { layer } => (layer, None),
        };
        if layer >= model.n_layer() {
            return Err(Error::invalid(format!(
                "{self}: the model has layers 0 to {}",
                model.n_layer() - 1
            )));
        }
        let heads = model.h[layer].attn.n_head;
        if head.is_some_and(|h| h >= heads) {
            return Err(Error::invalid(format!(
                "{self}: layer {layer} has heads 0 to {}",
                heads - 1
            )));
        }
        Ok(())
    }
}

/// `model` with `part` silenced (see the module's doc); the original is untouched.
pub fn ablated<B: Backend>(model: &ImageGpt<B>, part: Ablated) -> Result<ImageGpt<B>> {
    part.check(model)?;
    let mut model = model.clone();
    match part {
        Ablated::Head { layer, head } => {
            let attn = &mut model.h[layer].attn;
            let [d, out] = attn.c_proj.weight.dims();
            let hd = d / attn.n_head;
            let weight = attn.c_proj.weight.val();
            let rows = Tensor::zeros([hd, out], &weight.device());
            let weight = weight.slice_assign([head * hd..(head + 1) * hd, 0..out], rows);
            attn.c_proj.weight = Param::from_tensor(weight);
        }
        Ablated::Attention { layer } => silence(&mut model.h[layer].attn.c_proj),
        Ablated::Mlp { layer } => silence(&mut model.h[layer].mlp.c_proj),
    }
    Ok(model)
}

/// `model` with `part` replaced by its mean write over a dataset (mean ablation): silenced as by
/// [`ablated`], then its mean added to the output projection's bias, a constant in every position.
pub fn mean_ablated<B: Backend>(
    model: &ImageGpt<B>,
    part: Ablated,
    means: &AblationMeans,
) -> Result<ImageGpt<B>> {
    means.check(model)?;
    let mut model = ablated(model, part)?;
    let (projection, mean) = match part {
        Ablated::Head { layer, head } => {
            (&mut model.h[layer].attn.c_proj, &means.heads[layer][head])
        }
        Ablated::Attention { layer } => (&mut model.h[layer].attn.c_proj, &means.attention[layer]),
        Ablated::Mlp { layer } => (&mut model.h[layer].mlp.c_proj, &means.mlp[layer]),
    };
    let device = projection.weight.device();
    let mean = Tensor::<B, 1>::from_data(TensorData::new(mean.clone(), [mean.len()]), &device);
    let bias = match &projection.bias {
        Some(bias) => bias.val() + mean,
        None => mean,
    };
    projection.bias = Some(Param::from_tensor(bias));
    Ok(model)
}

/// `model` with `part` replaced by its mean write when `means` are given (mean ablation), else
/// zeroed (zero ablation): the one choice the CLI and the page both make.
pub fn silenced<B: Backend>(
    model: &ImageGpt<B>,
    part: Ablated,
    means: Option<&AblationMeans>,
) -> Result<ImageGpt<B>> {
    match means {
        Some(means) => mean_ablated(model, part, means),
        None => ablated(model, part),
    }
}

/// Zeroes a projection's weight and bias: its sublayer adds nothing to the stream.
fn silence<B: Backend>(projection: &mut Linear<B>) {
    let weight = projection.weight.val();
    projection.weight = Param::from_tensor(weight.zeros_like());
    if let Some(bias) = &projection.bias {
        projection.bias = Some(Param::from_tensor(bias.val().zeros_like()));
    }
}

/// What silencing a part costs one image: its pixels' surprise without the part, and the change.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AblationReport {
    /// The part, in words (`layer 1 head 2`).
    pub part: String,
    /// `zero` or `mean`: what replaced the part's output.
    pub mode: String,
    /// `delta_bits` is positive where the part helped.
    #[serde(flatten)]
    pub change: Change,
}

impl AblationReport {
    /// From the ablated model's surprise per pixel and the intact model's.
    pub fn new(part: Ablated, mean: bool, bits_per_pixel: Vec<f32>, intact: &[f32]) -> Self {
        Self {
            part: part.to_string(),
            mode: if mean { "mean" } else { "zero" }.to_string(),
            change: Change::new(bits_per_pixel, intact),
        }
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use crate::model::{ForwardOptions, ImageGptConfig};
    use burn::backend::Flex;
    use burn::tensor::{Int, TensorData};

    fn model() -> ImageGpt<Flex> {
        // Two layers of four heads, random weights (a zero head changes nothing checked here).
        ImageGptConfig::new(16, 12)
            .with_n_embd(16)
            .with_n_layer(2)
            .with_n_head(4)
            .init::<Flex>(&Default::default())
            .materialised()
    }

    /// The last block's input (`residual[1]`) and output (`residual[2]`) on a fixed sequence, with
    /// each layer's per-head attention outputs.
    fn traced(model: &ImageGpt<Flex>) -> (Vec<Tensor<Flex, 3>>, Vec<Tensor<Flex, 4>>) {
        let ids: Vec<i64> = vec![16, 3, 7, 7, 1, 0, 15, 2, 9, 9, 4, 11];
        let ids =
            Tensor::<Flex, 2, Int>::from_data(TensorData::new(ids, [1, 12]), &Default::default());
        let options = ForwardOptions {
            residual: true,
            attention: true,
            ..Default::default()
        };
        let pass = model.forward_with(ids, options);
        (
            pass.residual,
            pass.attention.into_iter().map(|a| a.out).collect(),
        )
    }

    fn close(a: Tensor<Flex, 3>, b: Tensor<Flex, 3>) -> bool {
        let diff: f32 = (a - b).abs().max().into_scalar();
        diff < 1e-5
    }

    #[test]
    fn silencing_the_last_mlp_leaves_the_stream_after_attention() {
        let intact = model();
        let (x, _) = traced(&intact);
        let (y, _) = traced(&ablated(&intact, Ablated::Mlp { layer: 1 }).unwrap());
        // Intact: x2 = m + mlp(ln_2(m)), where m is what the ablated model ends with.
        let block = &intact.h[1];
        let m = y[2].clone();
        let rebuilt = m.clone() + block.mlp.forward(block.ln_2.forward(m), intact.precision);
        assert!(close(rebuilt, x[2].clone()));
        assert!(close(y[1].clone(), x[1].clone()), "layer 0 changed");
    }

    #[test]
    fn silencing_a_head_of_the_last_layer_removes_exactly_its_output() {
        let intact = model();
        let (x, heads) = traced(&intact);
        let head = 2;
        let (y, _) = traced(&ablated(&intact, Ablated::Head { layer: 1, head }).unwrap());
        // Intact, the last block's stream after attention is m = x1 + c_proj(all heads); without
        // the head it is m - (the head's output through its rows), and the MLP follows on that.
        let block = &intact.h[1];
        let (hd, d) = (4, 16);
        let all = heads[1].clone().swap_dims(1, 2).reshape([1, 12, d]);
        let m = x[1].clone() + block.attn.c_proj.forward(all);
        let rows = block
            .attn
            .c_proj
            .weight
            .val()
            .slice([head * hd..(head + 1) * hd, 0..d]);
        let written = heads[1]
            .clone()
            .slice([0..1, head..head + 1, 0..12, 0..hd])
            .reshape([1, 12, hd])
            .matmul(rows.unsqueeze());
        let without = m - written;
        let expected = without.clone()
            + block
                .mlp
                .forward(block.ln_2.forward(without), intact.precision);
        assert!(close(y[2].clone(), expected));
        assert!(!close(y[2].clone(), x[2].clone()), "the head wrote nothing");
    }

    #[test]
    fn bad_parts_are_refused_and_the_model_is_untouched() {
        let intact = model();
        for text in ["head:1", "head:a.b", "mlp", "neuron:1", "attention:x"] {
            assert!(text.parse::<Ablated>().is_err(), "{text}");
        }
        let part: Ablated = "head:1.3".parse().unwrap();
        assert_eq!(part.to_string(), "layer 1 head 3");
        assert_eq!(
            "mlp:0".parse::<Ablated>().unwrap().to_string(),
            "layer 0 MLP"
        );
        for (text, says) in [
            ("head:2.0", "layers 0 to 1"),
            ("head:1.4", "heads 0 to 3"),
            ("mlp:5", "layers 0 to 1"),
        ] {
            let e = ablated(&intact, text.parse().unwrap())
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains(says), "{text}: {e}");
        }
        let before = intact.h[1].attn.c_proj.weight.val();
        let _ = ablated(&intact, part).unwrap();
        let after = intact.h[1].attn.c_proj.weight.val();
        let diff: f32 = (before - after).abs().max().into_scalar();
        assert_eq!(diff, 0.0);
    }
}

#[cfg(all(test, feature = "flex"))]
mod mean_tests {
    use super::*;
    use crate::model::{ForwardOptions, ImageGptConfig};
    use burn::backend::Flex;
    use burn::tensor::Int;

    const IMAGE: [u16; 12] = [3, 7, 7, 1, 0, 15, 2, 9, 9, 4, 11, 5];

    fn model(layers: usize) -> ImageGpt<Flex> {
        ImageGptConfig::new(16, 12)
            .with_n_embd(16)
            .with_n_layer(layers)
            .with_n_head(4)
            .init::<Flex>(&Default::default())
            .materialised()
    }

    /// The last layer's hidden states, `[12, 16]` as numbers.
    fn last_states(model: &ImageGpt<Flex>) -> Vec<f32> {
        let ids: Vec<i64> = std::iter::once(16)
            .chain(IMAGE[..11].iter().map(|&i| i as i64))
            .collect();
        let ids =
            Tensor::<Flex, 2, Int>::from_data(TensorData::new(ids, [1, 12]), &Default::default());
        let options = ForwardOptions {
            residual: true,
            ..Default::default()
        };
        let residual = model.forward_with(ids, options).residual;
        residual
            .last()
            .unwrap()
            .clone()
            .into_data()
            .into_vec::<f32>()
            .unwrap()
    }

    /// Measured on the one image it then runs, the last MLP's mean write keeps the sum over
    /// positions of the last layer's states (each position gets the average of what it wrote)
    /// while moving each position's.
    #[test]
    fn a_mean_ablated_last_mlp_keeps_the_states_sum_over_positions() {
        let intact = model(2);
        let means =
            AblationMeans::measure(&intact, &[IMAGE.to_vec()], 1, "one image", |_| {}).unwrap();
        let averaged = mean_ablated(&intact, Ablated::Mlp { layer: 1 }, &means).unwrap();
        let (x, y) = (last_states(&intact), last_states(&averaged));
        let sum = |v: &[f32], c: usize| v.iter().skip(c).step_by(16).sum::<f32>();
        for c in 0..16 {
            assert!((sum(&x, c) - sum(&y, c)).abs() < 1e-4, "channel {c}");
        }
        assert!(
            x.iter().zip(&y).any(|(a, b)| (a - b).abs() > 1e-4),
            "nothing moved"
        );
        // A head's and the whole attention's means are as wide as the stream; the heads of a layer
        // and its bias add up to the attention's mean.
        for l in 0..2 {
            for c in 0..16 {
                let heads: f32 = means.heads[l].iter().map(|h| h[c]).sum();
                let bias: f32 = intact.h[l]
                    .attn
                    .c_proj
                    .bias
                    .as_ref()
                    .unwrap()
                    .val()
                    .into_data()
                    .into_vec::<f32>()
                    .unwrap()[c];
                assert!(
                    (heads + bias - means.attention[l][c]).abs() < 1e-5,
                    "layer {l}, channel {c}"
                );
            }
        }
    }

    #[test]
    fn means_of_another_shape_are_refused() {
        let means =
            AblationMeans::measure(&model(2), &[IMAGE.to_vec()], 1, "one image", |_| {}).unwrap();
        let e = mean_ablated(&model(3), Ablated::Mlp { layer: 0 }, &means)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("another shape of model"), "{e}");
        let text = serde_json::to_string(&means).unwrap();
        assert_eq!(AblationMeans::parse(&text).unwrap(), means);
    }
}
