//! The model card (`card.json`): what we know about a model beyond its weights.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[cfg(not(target_arch = "wasm32"))]
use crate::error::{Error, Result};

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
