//! Mean ablation's means: what each head, each layer's attention and each MLP writes into the
//! residual stream on average over a dataset's images and positions. Replacing a part's output by
//! its mean removes what it says about this image while keeping its typical contribution, so the
//! stream stays where later layers expect it (zero ablation moves it). `igpt ablation-means` computes
//! them and writes them beside the model ([`MEANS_FILE`]).

#[cfg(not(target_arch = "wasm32"))]
use std::path::Path;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use super::attribution::head_writes;
use crate::error::{Error, Result};
#[cfg(not(target_arch = "wasm32"))]
use crate::error::{read_file, write_file_atomic};
use crate::model::{ForwardOptions, ImageGpt};

/// Where the means live in a model directory.
pub const MEANS_FILE: &str = "ablation-means.json";

/// Each part's mean write into the stream, `d` numbers each (layers and heads from 0).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AblationMeans {
    /// The images they were measured on (a dataset spec) and how many.
    pub data: String,
    pub images: usize,
    /// `[layer][head]`: the head's output through its rows of the output projection.
    pub heads: Vec<Vec<Vec<f32>>>,
    /// `[layer]`: the whole attention sublayer's output, bias included.
    pub attention: Vec<Vec<f32>>,
    /// `[layer]`: the MLP's output.
    pub mlp: Vec<Vec<f32>>,
}

impl AblationMeans {
    /// Measures them over `sequences` (whole images), `batch` at a time; `on_batch(n)` after each.
    pub fn measure<B: Backend>(
        model: &ImageGpt<B>,
        sequences: &[Vec<u16>],
        batch: usize,
        data: &str,
        mut on_batch: impl FnMut(usize),
    ) -> Result<Self> {
        if sequences.is_empty() {
            return Err(Error::invalid("ablation means need at least one image"));
        }
        let (layers, d) = (model.n_layer(), model.n_embd());
        let heads = model.h.first().map_or(0, |b| b.attn.n_head);
        let device = model.device();
        let zeros = || Tensor::<B, 1>::zeros([d], &device);
        let mut head_sums: Vec<Vec<Tensor<B, 1>>> = vec![vec![zeros(); heads]; layers];
        let mut attention_sums = vec![zeros(); layers];
        let mut mlp_sums = vec![zeros(); layers];
        let total = |t: Tensor<B, 3>| t.sum_dim(0).sum_dim(1).reshape([d]);
        for chunk in sequences.chunks(batch.max(1)) {
            let (inputs, _) = model.inputs_and_targets(chunk.iter().map(Vec::as_slice));
            let options = ForwardOptions {
                residual: true,
                attention: true,
                ..Default::default()
            };
            let pass = model.forward_with(inputs, options);
            for (l, block) in model.h.iter().enumerate() {
                // The attention's output is its heads' writes plus the projection's bias.
                let mut attention = match &block.attn.c_proj.bias {
                    Some(bias) => bias.val().reshape([1, 1, d]),
                    None => Tensor::zeros([1, 1, d], &device),
                };
                let writes = head_writes(block, pass.attention[l].out.clone());
                for (h, written) in writes.into_iter().enumerate() {
                    attention = attention + written.clone();
                    head_sums[l][h] = head_sums[l][h].clone() + total(written);
                }
                let mlp =
                    pass.residual[l + 1].clone() - pass.residual[l].clone() - attention.clone();
                attention_sums[l] = attention_sums[l].clone() + total(attention);
                mlp_sums[l] = mlp_sums[l].clone() + total(mlp);
            }
            on_batch(chunk.len());
        }
        let count = (sequences.len() * model.n_positions()) as f64;
        let read = |t: Tensor<B, 1>| -> Result<Vec<f32>> {
            crate::inspect::floats(t.div_scalar(count).into_data())
        };
        Ok(Self {
            data: data.to_string(),
            images: sequences.len(),
            heads: head_sums
                .into_iter()
                .map(|layer| layer.into_iter().map(read).collect())
                .collect::<Result<_>>()?,
            attention: attention_sums
                .into_iter()
                .map(read)
                .collect::<Result<_>>()?,
            mlp: mlp_sums.into_iter().map(read).collect::<Result<_>>()?,
        })
    }

    /// Refuses means measured on a model of another shape.
    pub fn check<B: Backend>(&self, model: &ImageGpt<B>) -> Result<()> {
        let (layers, d) = (model.n_layer(), model.n_embd());
        let heads = model.h.first().map_or(0, |b| b.attn.n_head);
        let fits = self.heads.len() == layers
            && self.attention.len() == layers
            && self.mlp.len() == layers
            && self
                .heads
                .iter()
                .all(|l| l.len() == heads && l.iter().all(|h| h.len() == d))
            && self.attention.iter().chain(&self.mlp).all(|v| v.len() == d);
        if fits {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "these ablation means are for another shape of model (this one: {layers} layers of {heads} heads, width {d})"
            )))
        }
    }

    /// Reads `dir`'s means, if it has them.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(MEANS_FILE);
        if !path.exists() {
            return Ok(None);
        }
        Self::parse(&String::from_utf8_lossy(&read_file(&path)?)).map(Some)
    }

    /// From the file's JSON text.
    pub fn parse(text: &str) -> Result<Self> {
        serde_json::from_str(text)
            .map_err(|e| Error::invalid(format!("{MEANS_FILE} is not readable: {e}")))
    }

    /// Writes them into `dir`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn save(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string(self).expect("plain data serialises");
        write_file_atomic(&dir.join(MEANS_FILE), text.as_bytes())
    }
}
