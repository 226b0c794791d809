//! HuggingFace's side of a model directory: `config.json`'s fields, the checkpoint's tensor names and
//! Conv1D (in × out) layout, and the safetensors bytes in f32, f16 or bf16.

use std::collections::BTreeMap;

use burn::module::{Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

use super::q6;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::objective::Objective;
use crate::model::{ImageGpt, ImageGptConfig};

pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const CONFIG_FILE: &str = "config.json";
pub const PREPROCESSOR_FILE: &str = "preprocessor_config.json";

/// The fields of HF's `config.json` that define an ImageGPT model.
#[derive(Serialize, Deserialize)]
pub(super) struct HfConfig {
    pub(super) vocab_size: usize,
    pub(super) n_positions: usize,
    pub(super) n_embd: usize,
    pub(super) n_layer: usize,
    pub(super) n_head: usize,
    #[serde(default)]
    pub(super) n_inner: Option<usize>,
    #[serde(default = "quick_gelu")]
    pub(super) activation_function: String,
    #[serde(default = "default_epsilon")]
    pub(super) layer_norm_epsilon: f64,
    #[serde(default = "yes")]
    pub(super) scale_attn_weights: bool,
    #[serde(default)]
    pub(super) scale_attn_by_inverse_layer_idx: bool,
    #[serde(default)]
    pub(super) reorder_and_upcast_attn: bool,
    /// Ours: absent from HF checkpoints, which therefore load with HF's own (floored) attention scale.
    #[serde(default)]
    pub(super) igpt_exact_attention_scale: bool,
    /// Ours: what the model predicts (absent: HF's autoregressive ImageGPT). HF's classes are all
    /// causal, so they load a BERT model's weights but do not compute what it was trained for.
    #[serde(default)]
    pub(super) igpt_objective: Objective,
    /// Class names by id (HF writes `{"0": "LABEL_0", "1": "LABEL_1"}` even without a head, so only a
    /// `score.weight` in the weights says there is one).
    #[serde(default)]
    pub(super) id2label: BTreeMap<String, String>,
}

impl HfConfig {
    /// The names of `n` classes: `id2label`'s when it names them all, else HF's `LABEL_i`.
    pub(super) fn labels(&self, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                self.id2label
                    .get(&i.to_string())
                    .cloned()
                    .unwrap_or_else(|| format!("LABEL_{i}"))
            })
            .collect()
    }
}

fn quick_gelu() -> String {
    "quick_gelu".into()
}
fn default_epsilon() -> f64 {
    1e-5
}
fn yes() -> bool {
    true
}

impl HfConfig {
    pub(super) fn to_config(&self) -> std::result::Result<ImageGptConfig, String> {
        if self.activation_function != "quick_gelu" {
            return Err(format!(
                "activation {:?} is not ImageGPT's quick_gelu",
                self.activation_function
            ));
        }
        if self.n_inner.is_some_and(|n| n != 4 * self.n_embd) {
            return Err("only n_inner = 4 * n_embd is supported".into());
        }
        if !self.scale_attn_weights || self.scale_attn_by_inverse_layer_idx {
            return Err("only attention scaled by 1/sqrt(head_dim) is supported".into());
        }
        if self.vocab_size < 2 {
            return Err("vocab_size must count the palette plus SOS".into());
        }
        let config = ImageGptConfig::new(self.vocab_size - 1, self.n_positions)
            .with_n_embd(self.n_embd)
            .with_n_layer(self.n_layer)
            .with_n_head(self.n_head)
            .with_layer_norm_epsilon(self.layer_norm_epsilon)
            .with_exact_attention_scale(self.igpt_exact_attention_scale)
            .with_objective(self.igpt_objective);
        if let Some(p) = self.igpt_objective.mask_prob() {
            Objective::bert(p).map_err(|e| e.to_string())?;
        }
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    /// The full `config.json` HF's `save_pretrained` would write, so `from_pretrained` loads our models.
    #[cfg(not(target_arch = "wasm32"))]
    pub(super) fn write(config: &ImageGptConfig, labels: &[String]) -> String {
        let mut json = serde_json::json!({
            "architectures": ["ImageGPTForCausalImageModeling"],
            "model_type": "imagegpt",
            "activation_function": "quick_gelu",
            "vocab_size": config.n_colors + 1,
            "n_positions": config.n_positions,
            "n_embd": config.n_embd,
            "n_layer": config.n_layer,
            "n_head": config.n_head,
            "n_inner": null,
            "layer_norm_epsilon": config.layer_norm_epsilon,
            "attn_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "resid_pdrop": 0.0,
            "initializer_range": 0.02,
            "scale_attn_weights": true,
            "scale_attn_by_inverse_layer_idx": false,
            "reorder_and_upcast_attn": false,
            "tie_word_embeddings": false,
            "use_cache": true,
            "dtype": "float32",
            "igpt_exact_attention_scale": config.exact_attention_scale,
        });
        if !config.objective.is_causal() {
            json["igpt_objective"] = serde_json::to_value(config.objective).expect("plain data");
        }
        if !labels.is_empty() {
            // A fine-tuned model: HF's ImageGPTForImageClassification loads it (score.weight), and
            // ImageGPTForCausalImageModeling still does (it skips the head).
            json["architectures"] = serde_json::json!([
                "ImageGPTForCausalImageModeling",
                "ImageGPTForImageClassification"
            ]);
            json["num_labels"] = labels.len().into();
            json["id2label"] = labels
                .iter()
                .enumerate()
                .map(|(i, l)| (i.to_string(), serde_json::Value::from(l.as_str())))
                .collect::<serde_json::Map<_, _>>()
                .into();
            json["label2id"] = labels
                .iter()
                .enumerate()
                .map(|(i, l)| (l.clone(), serde_json::Value::from(i)))
                .collect::<serde_json::Map<_, _>>()
                .into();
        }
        serde_json::to_string_pretty(&json).expect("plain data serialises")
    }
}

/// Storage precision of the weights file. Models always compute in f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightPrecision {
    F32,
    F16,
    /// Block-wise 6-bit, packed ([`super::q6`]): the page's light download.
    Q6,
}

impl WeightPrecision {
    /// As cards record it: "f32", "f16" or "q6".
    pub fn name(self) -> &'static str {
        match self {
            WeightPrecision::F32 => "f32",
            WeightPrecision::F16 => "f16",
            WeightPrecision::Q6 => "q6",
        }
    }
}

/// A parameter of the model as the checkpoint names and lays it out.
enum Slot<'a, B: Backend> {
    Vector(&'a mut Param<Tensor<B, 1>>),
    /// Stored in our in × out layout, like HF's Conv1D (and Burn's `Linear`) and embeddings.
    Matrix(&'a mut Param<Tensor<B, 2>>),
    /// `lm_head` and `score` are torch `nn.Linear`s: stored out × in, the transpose of Burn's layout.
    Transposed(&'a mut Param<Tensor<B, 2>>),
}

/// The one name map between the model and HF checkpoint names.
fn slots<B: Backend>(model: &mut ImageGpt<B>) -> Vec<(String, Slot<'_, B>)> {
    /// A projection's weight and bias under `{prefix}.weight` / `{prefix}.bias`.
    fn linear<'a, B: Backend>(
        prefix: String,
        linear: &'a mut burn::nn::Linear<B>,
    ) -> [(String, Slot<'a, B>); 2] {
        let burn::nn::Linear { weight, bias } = linear;
        let bias = bias.as_mut().expect("every ImageGPT projection has a bias");
        [
            (format!("{prefix}.weight"), Slot::Matrix(weight)),
            (format!("{prefix}.bias"), Slot::Vector(bias)),
        ]
    }
    let mut out = vec![
        (
            "transformer.wte.weight".to_string(),
            Slot::Matrix(&mut model.wte.weight),
        ),
        (
            "transformer.wpe.weight".to_string(),
            Slot::Matrix(&mut model.wpe.weight),
        ),
        (
            "transformer.ln_f.weight".to_string(),
            Slot::Vector(&mut model.ln_f.gamma),
        ),
        (
            "lm_head.weight".to_string(),
            Slot::Transposed(&mut model.lm_head.weight),
        ),
    ];
    if let Some(score) = model.score.as_mut() {
        out.push((
            "score.weight".to_string(),
            Slot::Transposed(&mut score.weight),
        ));
    }
    for (i, block) in model.h.iter_mut().enumerate() {
        let p = format!("transformer.h.{i}");
        out.push((
            format!("{p}.ln_1.weight"),
            Slot::Vector(&mut block.ln_1.gamma),
        ));
        out.push((
            format!("{p}.ln_2.weight"),
            Slot::Vector(&mut block.ln_2.gamma),
        ));
        out.extend(linear(format!("{p}.attn.c_attn"), &mut block.attn.c_attn));
        out.extend(linear(format!("{p}.attn.c_proj"), &mut block.attn.c_proj));
        out.extend(linear(format!("{p}.mlp.c_fc"), &mut block.mlp.c_fc));
        out.extend(linear(format!("{p}.mlp.c_proj"), &mut block.mlp.c_proj));
    }
    out
}

/// Compares the parameters the config declares with those the weights file holds, before the model is
/// built: a config that overstates the sizes must be an error, not an allocation the machine cannot make.
pub(super) fn check_parameter_count(config: &ImageGptConfig, tensors: &SafeTensors) -> Result<()> {
    let held: u64 = tensors
        .iter()
        .filter(|(name, _)| {
            !is_known_buffer(name) && *name != "score.weight" && !name.ends_with(q6::SCALES_SUFFIX)
        })
        // safetensors has checked every shape against its byte range, so the product fits; a
        // packed tensor holds four values in three bytes.
        .map(|(_, view)| {
            let stored = view.shape().iter().product::<usize>() as u64;
            if view.dtype() == Dtype::U8 {
                stored / 3 * 4
            } else {
                stored
            }
        })
        .sum();
    let declared = config.param_count();
    if held != declared {
        return Err(Error::format(
            CONFIG_FILE,
            format!(
                "it describes {declared} parameters (width {}, {} layers, {} positions, {} colours), \
                 but {WEIGHTS_FILE} holds {held}: they do not belong together",
                config.n_embd, config.n_layer, config.n_positions, config.n_colors
            ),
        ));
    }
    Ok(())
}

/// Buffers that some HF/GPT-2 checkpoints carry (causal masks), not parameters: safe to skip.
fn is_known_buffer(name: &str) -> bool {
    name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias")
}

pub(super) fn load_weights<B: Backend>(
    config: &ImageGptConfig,
    tensors: &SafeTensors,
    device: &B::Device,
) -> std::result::Result<ImageGpt<B>, String> {
    // Placeholders, never computed: every parameter is replaced before first use.
    let mut model = config.skeleton::<B>(device);
    if let Ok(score) = tensors.tensor("score.weight") {
        let n_labels = score.shape().first().copied().unwrap_or(0);
        model.score = Some(crate::model::placeholder::linear(
            config.n_embd,
            n_labels,
            false,
            device,
        ));
    }
    let mut expected = std::collections::HashSet::new();
    for (name, slot) in slots(&mut model) {
        let view = tensors
            .tensor(&name)
            .map_err(|_| format!("tensor `{name}` is missing"))?;
        let (values, shape) = if view.dtype() == Dtype::U8 {
            let scales_name = format!("{name}{}", q6::SCALES_SUFFIX);
            let scales = tensors
                .tensor(&scales_name)
                .map_err(|_| format!("`{name}` is packed but `{scales_name}` is missing"))?;
            let scales: Vec<half::f16> = match scales.dtype() {
                Dtype::F16 => bytemuck::pod_collect_to_vec(scales.data()),
                other => return Err(format!("`{scales_name}` is {other:?}, not F16")),
            };
            expected.insert(scales_name);
            let shape = q6::unpacked_shape(view.shape()).map_err(|e| format!("`{name}`: {e}"))?;
            let values = q6::unpack(view.data(), &scales).map_err(|e| format!("`{name}`: {e}"))?;
            (values, shape)
        } else {
            let values = to_f32(view.dtype(), view.data()).map_err(|e| format!("`{name}`: {e}"))?;
            (values, view.shape().to_vec())
        };
        let check = |want: Vec<usize>| {
            if shape == want {
                Ok(())
            } else {
                Err(format!(
                    "`{name}` has shape {shape:?}, the config needs {want:?}"
                ))
            }
        };
        let data = TensorData::new(values, shape.clone());
        match slot {
            Slot::Vector(p) => {
                check(p.shape().dims::<1>().to_vec())?;
                *p = Param::from_data(data, device);
            }
            Slot::Matrix(p) => {
                check(p.shape().dims::<2>().to_vec())?;
                *p = Param::from_data(data, device);
            }
            Slot::Transposed(p) => {
                let dims = p.shape().dims::<2>();
                check(vec![dims[1], dims[0]])?;
                *p = Param::from_tensor(Tensor::<B, 2>::from_data(data, device).transpose());
            }
        }
        expected.insert(name);
    }
    if let Some(extra) = tensors
        .names()
        .into_iter()
        .find(|n| !expected.contains(*n) && !is_known_buffer(n))
    {
        return Err(format!(
            "unexpected tensor {extra:?}: not an ImageGPT checkpoint of this config"
        ));
    }
    Ok(with_stable_ids(model))
}

/// Numbers every parameter by its place in the name map. Optimizer state is keyed by parameter id,
/// so a run resumed from a saved model directory finds its Adam moments again.
pub fn with_stable_ids<B: Backend>(mut model: ImageGpt<B>) -> ImageGpt<B> {
    fn renumber<B: Backend, const D: usize>(p: &mut Param<Tensor<B, D>>, id: u64) {
        let value = p.val();
        *p = Param::initialized(ParamId::from(id), value.require_grad());
    }
    for (i, (_, slot)) in slots(&mut model).into_iter().enumerate() {
        match slot {
            Slot::Vector(p) => renumber(p, i as u64),
            Slot::Matrix(p) | Slot::Transposed(p) => renumber(p, i as u64),
        }
    }
    model
}

/// Little-endian f32, f16 or bf16 bytes as f32 values.
fn to_f32(dtype: Dtype, bytes: &[u8]) -> std::result::Result<Vec<f32>, String> {
    use half::{bf16, f16};
    let words = |n: usize| bytes.chunks_exact(n);
    Ok(match dtype {
        Dtype::F32 => words(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => words(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => words(2)
            .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => {
            return Err(format!(
                "dtype {other:?} is not supported (f32, f16, bf16 are)"
            ));
        }
    })
}

/// Serialises the weights under HF names (reads them back from the device: native only).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn weights_to_safetensors<B: Backend>(
    model: &ImageGpt<B>,
    precision: WeightPrecision,
) -> Result<Vec<u8>> {
    // Cloning a module clones tensor handles, not data; a parameter not yet drawn would be drawn
    // anew by the clone, so draw it in the model itself first (what is written is what computes).
    model.materialise();
    let mut model = model.clone();
    let mut stored: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, slot) in slots(&mut model) {
        let data = match slot {
            Slot::Vector(p) => p.val().into_data(),
            Slot::Matrix(p) => p.val().into_data(),
            Slot::Transposed(p) => p.val().transpose().into_data(),
        };
        let shape = data.shape.to_vec();
        let values = data
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| Error::invalid(format!("reading `{name}` back: {e:?}")))?;
        let f16_bytes = |values: &[f32]| -> Vec<u8> {
            values
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect()
        };
        match precision {
            WeightPrecision::F32 => {
                let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                stored.push((name, Dtype::F32, shape, bytes));
            }
            WeightPrecision::Q6 if q6::is_packed(&shape) => {
                let (packed, scales) = q6::pack(&values);
                let scales_bytes = bytemuck::cast_slice(&scales).to_vec();
                let scales_name = format!("{name}{}", q6::SCALES_SUFFIX);
                stored.push((scales_name, Dtype::F16, vec![scales.len()], scales_bytes));
                stored.push((name, Dtype::U8, q6::packed_shape(&shape), packed));
            }
            WeightPrecision::F16 | WeightPrecision::Q6 => {
                stored.push((name, Dtype::F16, shape, f16_bytes(&values)));
            }
        }
    }
    let views = stored.iter().map(|(name, dtype, shape, bytes)| {
        let view = safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes)
            .expect("byte count matches shape");
        (name.clone(), view)
    });
    let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::invalid(format!("cannot serialise weights: {e}")))
}
