//! A model card's account of how the model was trained, including what it started from: a
//! fine-tuned model's card carries its parent's record, so the whole history (steps, time,
//! settings of every stage) stays with the weights.

use std::path::Path;

use igpt::store;
use igpt::train;
use serde_json::{Value, json};

/// The record of the run in `run`: steps, seconds, device and settings, then — when the run
/// started from another model — that model's record under `started_from`, and the totals.
pub fn run_record(run: &Path) -> anyhow::Result<Value> {
    let config = train::read_config(run)?;
    let state = train::read_state(run)?;
    let mut record = json!({
        "steps": state.step,
        "seconds": state.seconds,
        "device": state.device,
        "config": config,
    });
    let (mut total_steps, mut total_seconds) = (state.step as f64, state.seconds);
    if let Some(init) = &config.init {
        // The parent's record when it can still be read; its path alone otherwise.
        let mut parent = parent_record(Path::new(init)).unwrap_or_else(|| json!({}));
        total_steps += total(&parent, "steps");
        total_seconds += total(&parent, "seconds");
        parent["model"] = init.clone().into();
        record["started_from"] = parent;
    }
    record["total_steps"] = total_steps.into();
    record["total_seconds"] = total_seconds.into();
    Ok(record)
}

/// How the starting model `dir` was trained: the record in its card (an exported model), or its
/// run's record (the checkpoint directory of a run).
fn parent_record(dir: &Path) -> Option<Value> {
    let card = std::fs::read_to_string(dir.join(store::CARD_FILE)).ok();
    let training = card
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .and_then(|card| card.get("training").cloned());
    if training.is_some() {
        return training;
    }
    let run = dir.parent()?;
    if train::checkpoint_dir(run) == dir {
        run_record(run).ok()
    } else {
        None
    }
}

/// A record's total steps or seconds (older cards hold only their own).
fn total(record: &Value, what: &str) -> f64 {
    record
        .get(format!("total_{what}"))
        .or_else(|| record.get(what))
        .and_then(Value::as_f64)
        .unwrap_or(0.0)
}
