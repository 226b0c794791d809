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
use igpt::train::run::{self, RunState};

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
    record_at(run, config, run::read_state(run)?)
}

/// The record of the run in `run` as it stood at `state` (its checkpoint's or a milestone's).
fn record_at(run: &Path, config: &TrainConfig, state: RunState) -> anyhow::Result<TrainingRecord> {
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
        val_bits_per_token: state.last_val_bits,
    };
    let mut totals = Some((record.steps, record.seconds));
    if let Some(init) = &config.init {
        let parent = saved_parent(run);
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

/// The record of the model `run` started from, as `save_parent` kept it. Absent in a run from before
/// parents were recorded; `null` or `{}` for an unknown parent.
fn saved_parent(run: &Path) -> Option<TrainingRecord> {
    std::fs::read_to_string(run.join(PARENT_FILE))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
}

/// How many steps the model that `run` started from had taken, over its whole history: 0 for a run
/// from scratch, `None` when the history is not known (e.g. a HuggingFace checkpoint). Adding it to
/// a step of the run gives the step counted from the first model.
pub fn steps_before(run: &Path) -> anyhow::Result<Option<u64>> {
    let config = run::read_config(run)?;
    if config.init.is_none() {
        return Ok(Some(0));
    }
    Ok(saved_parent(run)
        .as_ref()
        .and_then(TrainingRecord::totals)
        .map(|(steps, _)| steps))
}

/// How the model in `dir` was trained: its run's record when `dir` is a run's checkpoint (checked
/// first: a checkpoint's card may carry an older model's record) or one of its milestones (whose
/// card has no record), else its card's.
fn parent_record(dir: &Path) -> Option<TrainingRecord> {
    if let Some(run) = dir.parent().filter(|run| run::checkpoint_dir(run) == dir) {
        return run::read_config(run)
            .ok()
            .and_then(|config| run_record(run, &config).ok());
    }
    if let Some((run, state)) = run::milestone_of(dir) {
        return run::read_config(&run)
            .ok()
            .and_then(|config| record_at(&run, &config, state).ok());
    }
    ModelCard::read_or(dir, ModelCard::default).ok()?.training
}
