//! A model on disk: HF's directory layout (`model.safetensors`, `config.json`, `preprocessor_config.json`)
//! plus our `card.json`. One name map serves loading and saving, natively and in the browser.

use std::collections::BTreeMap;

use burn::module::{Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{ImageGpt, ImageGptConfig};
use crate::palette::{Palette, Tokenizer};

pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const CONFIG_FILE: &str = "config.json";
pub const PREPROCESSOR_FILE: &str = "preprocessor_config.json";
pub const CARD_FILE: &str = "card.json";

/// What we know about a model beyond its weights: where it came from and how well it does.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ModelCard {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The dataset spec it was trained on, e.g. `fashion-mnist:train`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    pub image_height: usize,
    pub image_width: usize,
    /// 1 (grey) or 3 (RGB): the palette's channels.
    pub channels: usize,
    /// Measured numbers, e.g. `test_bits_per_token`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
    /// Anything else (training run details, notes), kept as written so it survives a load and save.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The fields of HF's `config.json` that define an ImageGPT model.
#[derive(Serialize, Deserialize)]
struct HfConfig {
    vocab_size: usize,
    n_positions: usize,
    n_embd: usize,
    n_layer: usize,
    n_head: usize,
    #[serde(default)]
    n_inner: Option<usize>,
    #[serde(default = "quick_gelu")]
    activation_function: String,
    #[serde(default = "default_epsilon")]
    layer_norm_epsilon: f64,
    #[serde(default = "yes")]
    scale_attn_weights: bool,
    #[serde(default)]
    scale_attn_by_inverse_layer_idx: bool,
    #[serde(default)]
    reorder_and_upcast_attn: bool,
    /// Ours: absent from HF checkpoints, which therefore load with HF's own (floored) attention scale.
    #[serde(default)]
    igpt_exact_attention_scale: bool,
    /// Class names by id (HF writes `{"0": "LABEL_0", "1": "LABEL_1"}` even without a head, so only a
    /// `score.weight` in the weights says there is one).
    #[serde(default)]
    id2label: BTreeMap<String, String>,
}

impl HfConfig {
    /// The names of `n` classes: `id2label`'s when it names them all, else HF's `LABEL_i`.
    fn labels(&self, n: usize) -> Vec<String> {
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
    fn to_config(&self) -> std::result::Result<ImageGptConfig, String> {
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
            .with_exact_attention_scale(self.igpt_exact_attention_scale);
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    /// The full `config.json` HF's `save_pretrained` would write, so `from_pretrained` loads our models.
    #[cfg(not(target_arch = "wasm32"))]
    fn write(config: &ImageGptConfig, labels: &[String]) -> String {
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

/// The raw files of a model directory (read from disk natively, fetched over HTTP in the browser).
pub struct ModelFiles {
    pub weights: Vec<u8>,
    pub config: String,
    pub preprocessor: String,
    /// Absent for plain HF checkpoints: the image size is then inferred from a square context.
    pub card: Option<String>,
}

/// A loaded model with everything needed to turn images into tokens and back.
pub struct StoredModel<B: Backend> {
    pub model: ImageGpt<B>,
    pub config: ImageGptConfig,
    pub palette: Palette,
    pub card: ModelCard,
    /// Class names, one per output of the model's classification head (empty without one).
    pub labels: Vec<String>,
}

/// Storage precision of the weights file. Models always compute in f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightPrecision {
    F32,
    F16,
}

impl ModelFiles {
    /// Parses and checks the files, then builds the model on `device`.
    pub fn load<B: Backend>(&self, device: &B::Device) -> Result<StoredModel<B>> {
        let hf: HfConfig = serde_json::from_str(&self.config)
            .map_err(|e| Error::format(CONFIG_FILE, e.to_string()))?;
        let config = hf.to_config().map_err(|e| Error::format(CONFIG_FILE, e))?;
        let (palette, _) = Palette::from_preprocessor_json(&self.preprocessor)
            .map_err(|e| Error::format(PREPROCESSOR_FILE, e.to_string()))?;
        if palette.len() != config.n_colors {
            return Err(Error::format(
                PREPROCESSOR_FILE,
                format!(
                    "the palette has {} colours but the model predicts {}",
                    palette.len(),
                    config.n_colors
                ),
            ));
        }
        let card = match &self.card {
            Some(text) => {
                let card: ModelCard = serde_json::from_str(text)
                    .map_err(|e| Error::format(CARD_FILE, e.to_string()))?;
                if card.image_height * card.image_width != config.n_positions
                    || card.channels != palette.channels()
                {
                    return Err(Error::format(
                        CARD_FILE,
                        format!(
                            "a {}x{}x{} image does not fit a model of {} positions with a {}-channel palette",
                            card.image_height,
                            card.image_width,
                            card.channels,
                            config.n_positions,
                            palette.channels()
                        ),
                    ));
                }
                card
            }
            None => {
                let side = (config.n_positions as f64).sqrt().round() as usize;
                if side * side != config.n_positions {
                    return Err(Error::invalid(format!(
                        "no {CARD_FILE}, and {} positions are not a square image: add a card with the image size",
                        config.n_positions
                    )));
                }
                ModelCard {
                    image_height: side,
                    image_width: side,
                    channels: palette.channels(),
                    ..Default::default()
                }
            }
        };
        let tensors = SafeTensors::deserialize(&self.weights)
            .map_err(|e| Error::format(WEIGHTS_FILE, format!("not a safetensors file: {e}")))?;
        check_parameter_count(&config, &tensors)?;
        let model = load_weights(&config, &tensors, device)
            .map_err(|reason| Error::format(WEIGHTS_FILE, reason))?;
        Ok(StoredModel {
            labels: hf.labels(model.n_labels()),
            model,
            config,
            palette,
            card,
        })
    }

    /// Reads a model directory's files.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_dir(dir: &std::path::Path) -> Result<Self> {
        use crate::error::read_file;
        let text = |name: &str| -> Result<String> {
            let path = dir.join(name);
            String::from_utf8(read_file(&path)?).map_err(|_| Error::format(path, "not UTF-8 text"))
        };
        let card_path = dir.join(CARD_FILE);
        Ok(Self {
            weights: read_file(&dir.join(WEIGHTS_FILE))?,
            config: text(CONFIG_FILE)?,
            preprocessor: text(PREPROCESSOR_FILE)?,
            card: if card_path.exists() {
                Some(text(CARD_FILE)?)
            } else {
                None
            },
        })
    }
}

/// Loads a model directory (ours or a plain HF checkpoint). Errors name the file at fault.
#[cfg(not(target_arch = "wasm32"))]
pub fn load_dir<B: Backend>(dir: &std::path::Path, device: &B::Device) -> Result<StoredModel<B>> {
    ModelFiles::read_dir(dir)?
        .load(device)
        .map_err(|e| match e {
            Error::Format { path, reason } => Error::Format {
                path: dir.join(path),
                reason,
            },
            other => other,
        })
}

impl<B: Backend> StoredModel<B> {
    /// The palette at this model's image size.
    pub fn tokenizer(&self) -> Tokenizer {
        Tokenizer {
            palette: self.palette.clone(),
            height: self.card.image_height,
            width: self.card.image_width,
        }
    }
}

/// The palette and image size of a model directory (without loading weights) or of a palette directory
/// written by `igpt palette`. The size comes from `card.json`, else a square `config.json` context,
/// else the preprocessor's declared size.
#[cfg(not(target_arch = "wasm32"))]
pub fn read_tokenizer(dir: &std::path::Path) -> Result<Tokenizer> {
    let read_text = |name: &str| -> Result<Option<String>> {
        let path = dir.join(name);
        if !path.exists() {
            return Ok(None);
        }
        let bytes = crate::error::read_file(&path)?;
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| Error::format(path, "not UTF-8 text"))
    };
    let preprocessor_path = dir.join(PREPROCESSOR_FILE);
    let preprocessor = read_text(PREPROCESSOR_FILE)?.ok_or_else(|| {
        Error::format(
            &preprocessor_path,
            "not found: not a model or palette directory",
        )
    })?;
    let (palette, declared) = Palette::from_preprocessor_json(&preprocessor)
        .map_err(|e| Error::format(&preprocessor_path, e.to_string()))?;
    let size = if let Some(card) = read_text(CARD_FILE)? {
        let card: ModelCard = serde_json::from_str(&card)
            .map_err(|e| Error::format(dir.join(CARD_FILE), e.to_string()))?;
        Some((card.image_height, card.image_width))
    } else if let Some(config) = read_text(CONFIG_FILE)? {
        let config: HfConfig = serde_json::from_str(&config)
            .map_err(|e| Error::format(dir.join(CONFIG_FILE), e.to_string()))?;
        let side = (config.n_positions as f64).sqrt().round() as usize;
        (side * side == config.n_positions).then_some((side, side))
    } else {
        declared
    };
    let (height, width) = size.ok_or_else(|| {
        Error::format(
            dir,
            "cannot tell the image size (no card.json, config.json or declared size)",
        )
    })?;
    Ok(Tokenizer {
        palette,
        height,
        width,
    })
}

#[cfg(not(target_arch = "wasm32"))]
impl ModelCard {
    /// Reads `card.json` in `dir` as it is now, or `absent()` when there is none (a plain HF
    /// checkpoint). Commands that add a record to a card read it just before saving, so a record
    /// another command wrote meanwhile is kept.
    pub fn read_or(dir: &std::path::Path, absent: impl FnOnce() -> Self) -> Result<Self> {
        let path = dir.join(CARD_FILE);
        if !path.exists() {
            return Ok(absent());
        }
        serde_json::from_slice(&crate::error::read_file(&path)?)
            .map_err(|e| Error::format(path, e.to_string()))
    }

    /// Writes `card.json` in `dir`, replacing it atomically (export, probe and fine-tune results).
    pub fn save(&self, dir: &std::path::Path) -> Result<()> {
        let card = serde_json::to_string_pretty(self).expect("plain data serialises");
        crate::error::write_file_atomic(&dir.join(CARD_FILE), card.as_bytes())
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl<B: Backend> StoredModel<B> {
    /// Writes the model directory (created if needed); each file is replaced atomically.
    pub fn save_dir(&self, dir: &std::path::Path, precision: WeightPrecision) -> Result<()> {
        use crate::error::write_file_atomic;
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let weights = weights_to_safetensors(&self.model, precision)?;
        write_file_atomic(&dir.join(WEIGHTS_FILE), &weights)?;
        write_file_atomic(
            &dir.join(CONFIG_FILE),
            HfConfig::write(&self.config, &self.labels).as_bytes(),
        )?;
        let preprocessor = self
            .palette
            .to_preprocessor_json(self.card.image_height, self.card.image_width);
        write_file_atomic(&dir.join(PREPROCESSOR_FILE), preprocessor.as_bytes())?;
        self.card.save(dir)
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
fn check_parameter_count(config: &ImageGptConfig, tensors: &SafeTensors) -> Result<()> {
    let held: u64 = tensors
        .iter()
        .filter(|(name, _)| !is_known_buffer(name) && *name != "score.weight")
        // safetensors has checked every shape against its byte range, so the product fits.
        .map(|(_, view)| view.shape().iter().product::<usize>() as u64)
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

fn load_weights<B: Backend>(
    config: &ImageGptConfig,
    tensors: &SafeTensors,
    device: &B::Device,
) -> std::result::Result<ImageGpt<B>, String> {
    // Placeholders, never computed: every parameter is replaced before first use.
    let mut model = config.skeleton::<B>(device);
    if let Ok(score) = tensors.tensor("score.weight") {
        let n_labels = score.shape().first().copied().unwrap_or(0);
        model.score = Some(crate::placeholder::linear(
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
        let values = to_f32(view.dtype(), view.data()).map_err(|e| format!("`{name}`: {e}"))?;
        let shape = view.shape().to_vec();
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
    let mut stored: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
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
        let bytes = match precision {
            WeightPrecision::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            WeightPrecision::F16 => values
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect(),
        };
        stored.push((name, shape, bytes));
    }
    let dtype = match precision {
        WeightPrecision::F32 => Dtype::F32,
        WeightPrecision::F16 => Dtype::F16,
    };
    let views = stored.iter().map(|(name, shape, bytes)| {
        let view = safetensors::tensor::TensorView::new(dtype, shape.clone(), bytes)
            .expect("byte count matches shape");
        (name.clone(), view)
    });
    let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::invalid(format!("cannot serialise weights: {e}")))
}
