//! Per-layer image features, as the paper's linear probes read them (Chen et al. 2020, §3.2): for each
//! layer l (0 = the embeddings, then the output of every block), n^l = layer_norm(h^l) with no learned
//! scale, averaged over all positions. One forward pass gives every layer. A BERT model reads the
//! whole image, with no pixel hidden or (the paper's mask averaging) under several seeded masks.

use std::path::{Path, PathBuf};

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result, read_file, write_file_atomic};
use crate::model::objective::{MaskUse, bert_mask, mask_tensor};
use crate::model::{ForwardOptions, ImageGpt};
use crate::store;

/// Pooled features of `count` images: `layers[l]` holds `count` rows of `width` values.
#[derive(Clone, Debug, PartialEq)]
pub struct Features {
    pub layers: Vec<Vec<f32>>,
    pub count: usize,
    pub width: usize,
}

impl Features {
    /// Image `i`'s features at layer `l`.
    pub fn row(&self, l: usize, i: usize) -> &[f32] {
        &self.layers[l][i * self.width..(i + 1) * self.width]
    }

    /// Every image's features at `layers`, end to end (`count` rows of `layers.len() · width`): the
    /// paper's probe of several layers at once (iGPT-XL's 15,360 ImageNet features are five layers
    /// of 3,072).
    pub fn concatenated(&self, layers: &[usize]) -> Vec<f32> {
        let mut rows = Vec::with_capacity(self.count * self.width * layers.len());
        for i in 0..self.count {
            for &l in layers {
                rows.extend_from_slice(self.row(l, i));
            }
        }
        rows
    }
}

/// `[batch, seq, d]` → `[batch, d]`: each position normalised over its `d` values (mean 0, variance 1,
/// no learned scale or bias), then averaged over positions.
pub(crate) fn pool<B: Backend>(hidden: Tensor<B, 3>, epsilon: f64) -> Tensor<B, 2> {
    let centred = hidden.clone() - hidden.mean_dim(2);
    let variance = centred.clone().square().mean_dim(2);
    (centred / variance.add_scalar(epsilon).sqrt())
        .mean_dim(1)
        .squeeze_dim::<2>(1)
}

/// The pooled features of every layer for `sequences` (palette ids, without SOS), in batches of up to
/// `batch`; `on_batch` hears how many images each finished batch held. An autoregressive model reads
/// each image as in training: SOS, then every pixel but the last; a BERT model the whole image, no
/// pixel hidden.
pub fn extract<B: Backend>(
    model: &ImageGpt<B>,
    sequences: &[Vec<u16>],
    batch: usize,
    on_batch: impl FnMut(usize),
) -> Result<Features> {
    extract_masked(model, sequences, batch, 0, on_batch)
}

/// [`extract`], with a BERT model's features averaged over `masks` seeded masks per image (hiding
/// pixels as in training; mask k of image i is the same every time). `masks` = 0 hides none.
pub fn extract_masked<B: Backend>(
    model: &ImageGpt<B>,
    sequences: &[Vec<u16>],
    batch: usize,
    masks: usize,
    mut on_batch: impl FnMut(usize),
) -> Result<Features> {
    let mask_prob = model.objective().mask_prob();
    if masks > 0 && mask_prob.is_none() {
        return Err(Error::invalid(
            "mask averaging is for BERT models; this one is autoregressive",
        ));
    }
    let n = model.n_positions();
    if let Some(bad) = sequences.iter().find(|s| s.len() != n) {
        return Err(Error::invalid(format!(
            "features need sequences of {n} tokens (the model's context), got one of {}",
            bad.len()
        )));
    }
    let (depth, width) = (model.n_layer() + 1, model.n_embd());
    let mut layers = vec![Vec::with_capacity(sequences.len() * width); depth];
    let device = model.device();
    for (index, chunk) in sequences.chunks(batch.max(1)).enumerate() {
        let rows = || chunk.iter().map(Vec::as_slice);
        let (inputs, _) = model.inputs_and_targets(rows());
        // [layers, batch, d] for one pass, hiding `masked` pixels.
        let pass = |masked| {
            let options = ForwardOptions {
                residual: true,
                masked,
                ..Default::default()
            };
            let residual = model.forward_with(inputs.clone(), options).residual;
            Tensor::stack::<3>(residual.into_iter().map(|h| pool(h, 1e-5)).collect(), 0)
        };
        let pooled = match mask_prob {
            Some(p) if masks > 0 => {
                let first = (index * batch.max(1)) as u64;
                let images = first..first + chunk.len() as u64;
                let sum = (0..masks)
                    .map(|draw| {
                        let key = (MaskUse::Evaluation, 0, draw as u64);
                        let masked = bert_mask(p, key, images.clone(), n);
                        pass(Some(mask_tensor(&masked, &device)))
                    })
                    .reduce(|a, b| a + b)
                    .expect("at least one mask");
                sum.div_scalar(masks as f64)
            }
            _ => pass(None),
        };
        // Read back once per batch.
        let values = pooled
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| Error::invalid(format!("reading features back: {e:?}")))?;
        for (layer, rows) in layers.iter_mut().zip(values.chunks(chunk.len() * width)) {
            layer.extend_from_slice(rows);
        }
        on_batch(chunk.len());
    }
    Ok(Features {
        layers,
        count: sequences.len(),
        width,
    })
}

/// Features saved on disk (safetensors, one `layer.{l}` tensor `[images, d]` each), named by a digest
/// of the model's weights and what was fed to it, so a second probe of the same model and data reads
/// them instead of running the model again. What was fed is the token ids themselves, not only a
/// name for the data: two models of one shape with other palettes (e.g. two random-init twins)
/// read the same images as other tokens.
pub struct FeatureCache {
    dir: PathBuf,
}

impl FeatureCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The files for `model`'s features of each set of token sequences in `data`, each with a
    /// description of anything else that shaped its features (e.g. BERT mask averaging). The
    /// weights are read back and digested once for all of them.
    pub fn paths<B: Backend>(
        &self,
        model: &ImageGpt<B>,
        data: &[(&str, &[Vec<u16>])],
    ) -> Result<Vec<PathBuf>> {
        let mut weights = Sha256::new();
        weights.update(b"igpt features v2\0");
        // The same weights read another way give other features (an autoregressive model's keys
        // stay as they were).
        if let Some(p) = model.objective().mask_prob() {
            weights.update(format!("bert {p}\0").as_bytes());
        }
        weights.update(store::weights_to_safetensors(
            model,
            store::WeightPrecision::F32,
        )?);
        Ok(data
            .iter()
            .map(|(description, sequences)| {
                let mut fed = weights.clone().chain_update(description.as_bytes());
                for ids in *sequences {
                    fed.update((ids.len() as u64).to_le_bytes());
                    fed.update(
                        ids.iter()
                            .flat_map(|id| id.to_le_bytes())
                            .collect::<Vec<u8>>(),
                    );
                }
                let digest = fed.finalize();
                let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
                self.dir.join(format!("{hex}.safetensors"))
            })
            .collect())
    }

    /// The cached features at `path`, or `None` when there are none (or they cannot be read).
    pub fn read(path: &Path) -> Option<Features> {
        let bytes = read_file(path).ok()?;
        let tensors = SafeTensors::deserialize(&bytes).ok()?;
        let mut layers = Vec::new();
        let (mut count, mut width) = (0, 0);
        while let Ok(view) = tensors.tensor(&format!("layer.{}", layers.len())) {
            if view.dtype() != Dtype::F32 || view.shape().len() != 2 {
                return None;
            }
            (count, width) = (view.shape()[0], view.shape()[1]);
            let values = view.data().chunks_exact(4);
            layers.push(
                values
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            );
        }
        (!layers.is_empty()).then_some(Features {
            layers,
            count,
            width,
        })
    }

    pub fn write(path: &Path, features: &Features) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let bytes: Vec<Vec<u8>> = features
            .layers
            .iter()
            .map(|l| l.iter().flat_map(|v| v.to_le_bytes()).collect())
            .collect();
        let views = bytes.iter().enumerate().map(|(l, b)| {
            let shape = vec![features.count, features.width];
            let view = safetensors::tensor::TensorView::new(Dtype::F32, shape, b)
                .expect("byte count matches shape");
            (format!("layer.{l}"), view)
        });
        let file = safetensors::serialize(views, None)
            .map_err(|e| Error::invalid(format!("cannot serialise features: {e}")))?;
        write_file_atomic(path, &file)
    }
}
