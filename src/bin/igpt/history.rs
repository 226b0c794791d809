//! A model card's account of how the model was trained, including what it started from: a
//! fine-tuned model's card carries its parent's record, so the whole history (steps, time,
//! settings of every stage) stays with the weights.
//!
//! The parent's record is copied into the run when training starts (`started_from.json`), not
//! looked up at export: by then the parent may have moved, trained on or been re-exported.

use std::path::Path;

use anyhow::Context;
use igpt::store::{ModelCard, StartedFrom, TrainingRecord};
use igpt::train::TrainConfig;
use igpt::train::run;

const PARENT_FILE: &str = "started_from.json";

/// Saves in `run` how the starting model `dir` was trained, as far as it is known: the run record
/// of a run's checkpoint directory, or the record in an exported model's card; `null` otherwise
/// (e.g. a HuggingFace checkpoint).
pub fn save_parent(run: &Path, dir: &Path) -> anyhow::Result<()> {
    let record = parent_record(dir);
    let path = run.join(PARENT_FILE);
    std::fs::create_dir_all(run)
        .and_then(|()| std::fs::write(&path, serde_json::to_string_pretty(&record)?))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The record of the run in `run` (trained with `config`): steps, seconds, device and settings,
/// then — when it started from another model — that model's record under `started_from`; and
/// `total_steps`/`total_seconds` over the whole history when all of it is known.
pub fn run_record(run: &Path, config: &TrainConfig) -> anyhow::Result<TrainingRecord> {
    let state = run::read_state(run)?;
    let mut record = TrainingRecord {
        steps: state.step as u64,
        seconds: state.seconds,
        device: state.device,
        config: serde_json::to_value(config)?,
        started_from: None,
        total_steps: None,
        total_seconds: None,
        parameters: None,
        weights: None,
    };
    let mut totals = Some((record.steps, record.seconds));
    if let Some(init) = &config.init {
        let path = run.join(PARENT_FILE);
        // Absent in a run from before parents were recorded; `null` or `{}` for an unknown parent.
        let parent: Option<TrainingRecord> = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok());
        totals = totals
            .zip(parent.as_ref().and_then(TrainingRecord::totals))
            .map(|((s, t), (ps, pt))| (s + ps, t + pt));
        record.started_from = Some(StartedFrom {
            model: init.clone(),
            record: parent.map(Box::new),
        });
    }
    if let Some((steps, seconds)) = totals {
        record.total_steps = Some(steps);
        record.total_seconds = Some(seconds);
    }
    Ok(record)
}

/// How the model in `dir` was trained: its run's record when `dir` is a run's checkpoint (checked
/// first: a checkpoint's card may carry an older model's record), else its card's.
fn parent_record(dir: &Path) -> Option<TrainingRecord> {
    if let Some(run) = dir.parent().filter(|run| run::checkpoint_dir(run) == dir) {
        return run::read_config(run)
            .ok()
            .and_then(|config| run_record(run, &config).ok());
    }
    ModelCard::read_or(dir, ModelCard::default).ok()?.training
}
