//! A model card's account of how the model was trained, including what it started from: a
//! fine-tuned model's card carries its parent's record, so the whole history (steps, time,
//! settings of every stage) stays with the weights.
//!
//! The parent's record is copied into the run when training starts (`started_from.json`), not
//! looked up at export: by then the parent may have moved, trained on or been re-exported.

use std::path::Path;

use anyhow::Context;
use igpt::store;
use igpt::train::TrainConfig;
use igpt::train::run;
use serde_json::{Value, json};

const PARENT_FILE: &str = "started_from.json";

/// Saves in `run` how the starting model `dir` was trained, as far as it is known: the run record
/// of a run's checkpoint directory, or the record in an exported model's card; `{}` otherwise
/// (e.g. a HuggingFace checkpoint).
pub fn save_parent(run: &Path, dir: &Path) -> anyhow::Result<()> {
    let record = parent_record(dir).unwrap_or_else(|| json!({}));
    let path = run.join(PARENT_FILE);
    std::fs::create_dir_all(run)
        .and_then(|()| std::fs::write(&path, serde_json::to_string_pretty(&record)?))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The record of the run in `run` (trained with `config`): steps, seconds, device and settings,
/// then — when it started from another model — that model's record under `started_from`; and
/// `total_steps`/`total_seconds` over the whole history when all of it is known.
pub fn run_record(run: &Path, config: &TrainConfig) -> anyhow::Result<Value> {
    let state = run::read_state(run)?;
    let mut record = json!({
        "steps": state.step,
        "seconds": state.seconds,
        "device": state.device,
        "config": config,
    });
    let mut totals = Some((state.step as u64, state.seconds));
    if let Some(init) = &config.init {
        let path = run.join(PARENT_FILE);
        let mut parent: Value = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?,
            Err(_) => json!({}), // a run from before parents were recorded
        };
        totals = totals
            .zip(parent_totals(&parent))
            .map(|((s, t), (ps, pt))| (s + ps, t + pt));
        parent["model"] = init.clone().into();
        record["started_from"] = parent;
    }
    if let Some((steps, seconds)) = totals {
        record["total_steps"] = steps.into();
        record["total_seconds"] = seconds.into();
    }
    Ok(record)
}

/// How the model in `dir` was trained: its run's record when `dir` is a run's checkpoint (checked
/// first: a checkpoint's card may carry an older model's record), else its card's.
fn parent_record(dir: &Path) -> Option<Value> {
    if let Some(run) = dir.parent().filter(|run| run::checkpoint_dir(run) == dir) {
        return run::read_config(run)
            .ok()
            .and_then(|config| run_record(run, &config).ok());
    }
    let card = std::fs::read_to_string(dir.join(store::CARD_FILE)).ok()?;
    serde_json::from_str::<Value>(&card)
        .ok()?
        .get("training")
        .cloned()
}

/// A record's steps and seconds over its whole history, when known.
fn parent_totals(record: &Value) -> Option<(u64, f64)> {
    let get = |total: &str, own: &str| record.get(total).or_else(|| record.get(own)).cloned();
    let known_whole = record.get("started_from").is_none() || record.get("total_steps").is_some();
    let steps = get("total_steps", "steps")?.as_u64()?;
    let seconds = get("total_seconds", "seconds")?.as_f64()?;
    known_whole.then_some((steps, seconds))
}
