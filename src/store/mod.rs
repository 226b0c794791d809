//! A model on disk: HF's directory layout (`model.safetensors`, `config.json`, `preprocessor_config.json`)
//! plus our `card.json`. One name map serves loading and saving, natively and in the browser.

mod card;
mod hf;
pub mod q6;

pub use card::{
    Baselines, BaselinesRecord, CARD_FILE, CheckRecord, ConcatProbe, FinetuneRecord,
    FinetunedRecord, LayerResult, ModelCard, ProbeReport, QuantizedRecord, StartedFrom,
    TrainingRecord,
};
#[cfg(not(target_arch = "wasm32"))]
pub(crate) use hf::weights_to_safetensors;
pub use hf::{CONFIG_FILE, PREPROCESSOR_FILE, WEIGHTS_FILE, WeightPrecision, with_stable_ids};

use burn::tensor::backend::Backend;
use safetensors::SafeTensors;

use crate::error::{Error, Result};
use crate::model::{ImageGpt, ImageGptConfig};
use crate::pixels::palette::{Palette, Tokenizer};
use hf::{HfConfig, check_parameter_count, load_weights};

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

impl ModelFiles {
    /// Parses and checks the files, then builds the model on `device`.
    pub fn load<B: Backend>(&self, device: &B::Device) -> Result<StoredModel<B>> {
        let hf = read_hf_config(&self.config)?;
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
        Self::read_dir_with(dir, WEIGHTS_FILE)
    }

    /// Reads a model directory's files, the weights from `weights_file` (e.g. the light form,
    /// [`q6::Q6_WEIGHTS_FILE`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_dir_with(dir: &std::path::Path, weights_file: &str) -> Result<Self> {
        use crate::error::read_file;
        let text = |name: &str| -> Result<String> {
            let path = dir.join(name);
            String::from_utf8(read_file(&path)?).map_err(|_| Error::format(path, "not UTF-8 text"))
        };
        let card_path = dir.join(CARD_FILE);
        Ok(Self {
            weights: read_file(&dir.join(weights_file))?,
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

fn read_hf_config(text: &str) -> Result<HfConfig> {
    serde_json::from_str(text).map_err(|e| Error::format(CONFIG_FILE, e.to_string()))
}

/// The model's shape from the text of its `config.json` (HF's, or ours), checked as loading checks
/// it: what the page reads before it downloads any weight.
pub fn parse_config(text: &str) -> Result<ImageGptConfig> {
    read_hf_config(text)?
        .to_config()
        .map_err(|e| Error::format(CONFIG_FILE, e))
}

/// Loads a model directory (ours or a plain HF checkpoint). Errors name the file at fault.
#[cfg(not(target_arch = "wasm32"))]
pub fn load_dir<B: Backend>(dir: &std::path::Path, device: &B::Device) -> Result<StoredModel<B>> {
    load_dir_with(dir, WEIGHTS_FILE, device)
}

/// Loads a model directory with its weights from `weights_file` (e.g. [`q6::Q6_WEIGHTS_FILE`]).
#[cfg(not(target_arch = "wasm32"))]
pub fn load_dir_with<B: Backend>(
    dir: &std::path::Path,
    weights_file: &str,
    device: &B::Device,
) -> Result<StoredModel<B>> {
    ModelFiles::read_dir_with(dir, weights_file)?
        .load(device)
        .map_err(|e| match e {
            // The loader names the weights by their usual name: name the file actually read.
            Error::Format { path, reason } if path.as_os_str() == WEIGHTS_FILE => Error::Format {
                path: dir.join(weights_file),
                reason,
            },
            Error::Format { path, reason } => Error::Format {
                path: dir.join(path),
                reason,
            },
            other => other,
        })
}

/// A model of `config`'s shape with random weights drawn from `seed`, the same on every thread.
///
/// Burn draws a parameter on its first use, from the backend's one seeded generator per process: a
/// model seeded on one thread while another draws got some of the other's numbers (two trainings
/// on threads of one process then disagreed with their twins in 12 of 80 tries). Here the seeding
/// and every draw happen at once, under a lock, in the order training's stable ids give them.
pub fn seeded_init<B: Backend>(
    config: &ImageGptConfig,
    seed: u64,
    device: &B::Device,
) -> ImageGpt<B> {
    static SEEDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _alone = SEEDING.lock().unwrap_or_else(|e| e.into_inner());
    B::seed(device, seed);
    with_stable_ids(config.init(device))
}

impl<B: Backend> StoredModel<B> {
    /// A new model of the `preset` shape with random weights (seeded by `seed`) for the images
    /// `tokenizer` makes: what `igpt init` writes and `igpt train --preset` starts from.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn fresh(
        preset: &str,
        tokenizer: Tokenizer,
        objective: crate::model::objective::Objective,
        seed: u64,
        device: &B::Device,
    ) -> Result<Self> {
        let n_positions = tokenizer.height * tokenizer.width;
        let config = ImageGptConfig::preset(preset, tokenizer.palette.len(), n_positions)?
            .with_objective(objective);
        let model = seeded_init(&config, seed, device);
        let mut card = ModelCard::for_images(&tokenizer);
        card.objective = (!objective.is_causal()).then_some(objective);
        Ok(StoredModel {
            labels: Vec::new(),
            model,
            config,
            card,
            palette: tokenizer.palette,
        })
    }

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
impl<B: Backend> StoredModel<B> {
    /// Writes only the weights, in `precision`, to `path` (atomically): e.g. the light form beside
    /// the full file.
    pub fn save_weights(&self, path: &std::path::Path, precision: WeightPrecision) -> Result<()> {
        let weights = weights_to_safetensors(&self.model, precision)?;
        crate::error::write_file_atomic(path, &weights)
    }

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
