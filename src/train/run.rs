//! A run folder: `train.json` (the settings), `log.csv` (one row per logged step) and `checkpoint/` (a
//! model directory plus the optimizer's moments and where the run stands), which `--resume` reads once.

use std::path::{Path, PathBuf};

use burn::optim::Optimizer;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use super::config::TrainConfig;
use super::step::{Optim, adam};
use crate::error::{Error, Result, read_file, write_file_atomic};
use crate::store::{self, StoredModel, WeightPrecision};

const OPTIMIZER_FILE: &str = "optimizer.mpk";
const STATE_FILE: &str = "state.json";
const CONFIG_FILE: &str = "train.json";
const LOG_FILE: &str = "log.csv";
/// The folder of a run that holds its milestone models, one `step-NNNNNN` folder each.
const MILESTONES_DIR: &str = "milestones";
const LOG_HEADER: &str =
    "step,lr,loss,bits_per_token,grad_norm,tokens_per_second,val_bits_per_token,seconds\n";

/// Where a run stands; saved in each checkpoint.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct RunState {
    /// Steps completed.
    pub step: usize,
    /// Training seconds so far, across resumes.
    pub seconds: f64,
    pub last_loss: Option<f64>,
    pub last_val_bits: Option<f64>,
    /// The backend and device of the latest training session, e.g. `flex Cpu`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The best evaluation so far as (score, step), and how many evaluations since have not beaten
    /// it: early stopping and the kept best weights go on from them after a resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best: Option<(f64, usize)>,
    #[serde(default)]
    pub stale: usize,
    /// The step this run resumed at without the optimizer's moments (a checkpoint committed without
    /// `optimizer.mpk`): Adam started afresh there, so the learning rate ramps back up from it over
    /// the warmup's length (see [`crate::train::TrainConfig::learning_rate_after`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewarm_from: Option<usize>,
}

/// The checkpoint folder of a run: a model directory like any other, plus the optimizer and state.
pub fn checkpoint_dir(run: &Path) -> PathBuf {
    run.join("checkpoint")
}

/// Where a run that keeps its best weights (fine-tuning) keeps the best evaluation's model.
pub fn best_dir(run: &Path) -> PathBuf {
    run.join("best")
}

/// Where [`save_milestone`] keeps the model of step `step`.
pub(crate) fn milestone_dir(run: &Path, step: usize) -> PathBuf {
    run.join(MILESTONES_DIR).join(format!("step-{step:06}"))
}

/// A run's milestones, oldest first: each model directory with the state saved beside it.
pub fn milestones(run: &Path) -> Result<Vec<(PathBuf, RunState)>> {
    let folder = run.join(MILESTONES_DIR);
    let entries = std::fs::read_dir(&folder).map_err(|e| Error::io(&folder, e))?;
    let mut found = Vec::new();
    for entry in entries {
        let dir = entry.map_err(|e| Error::io(&folder, e))?.path();
        // `step-NNNNNN`; a `.new` folder is a milestone a kill interrupted.
        let named = dir.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
            n.strip_prefix("step-")
                .is_some_and(|s| s.bytes().all(|b| b.is_ascii_digit()))
        });
        if named && dir.is_dir() {
            let state: RunState = read_json(&dir.join(STATE_FILE))?;
            found.push((dir, state));
        }
    }
    found.sort_by_key(|(_, state)| state.step);
    Ok(found)
}

/// When `dir` is one of a run's milestones (`RUN/milestones/step-N`): the run folder and the state
/// saved with the milestone.
pub fn milestone_of(dir: &Path) -> Option<(PathBuf, RunState)> {
    let folder = dir.parent()?;
    if folder.file_name()? != MILESTONES_DIR {
        return None;
    }
    let state = read_json(&dir.join(STATE_FILE)).ok()?;
    Some((folder.parent()?.to_path_buf(), state))
}

/// Keeps a copy of the model at this step (a model directory plus the run's state, no optimizer),
/// written beside its final place and renamed into it, so a kill leaves no half milestone.
pub(crate) fn save_milestone<B: AutodiffBackend>(
    run: &Path,
    stored: &StoredModel<B>,
    state: &RunState,
) -> Result<()> {
    save_whole(&milestone_dir(run, state.step), stored, state)
}

/// Keeps the best evaluation's model (with the state of its step) in [`best_dir`], replacing the
/// previous best whole.
pub(crate) fn save_best<B: AutodiffBackend>(
    run: &Path,
    stored: &StoredModel<B>,
    state: &RunState,
) -> Result<()> {
    save_whole(&best_dir(run), stored, state)
}

/// Writes a model directory and its state beside `dir` and renames it into place.
fn save_whole<B: AutodiffBackend>(
    dir: &Path,
    stored: &StoredModel<B>,
    state: &RunState,
) -> Result<()> {
    let fresh = dir.with_extension("new");
    let _ = std::fs::remove_dir_all(&fresh);
    stored.save_dir(&fresh, WeightPrecision::F32)?;
    let state_json = serde_json::to_string_pretty(state).expect("plain data serialises");
    write_file_atomic(&fresh.join(STATE_FILE), state_json.as_bytes())?;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&fresh, dir).map_err(|e| Error::io(dir, e))
}

/// The best evaluation's model that [`save_best`] kept, checked to be that of `step`.
pub(crate) fn load_best<B: AutodiffBackend>(
    run: &Path,
    step: usize,
    device: &B::Device,
) -> Result<StoredModel<B>> {
    let dir = best_dir(run);
    let state: RunState = read_json(&dir.join(STATE_FILE))?;
    if state.step != step {
        return Err(Error::format(
            &dir,
            format!(
                "holds step {}, not the best evaluation's step {step}",
                state.step
            ),
        ));
    }
    store::load_dir(&dir, device)
}

/// Where [`Checkpoint::save`] moves the previous checkpoint for the moment between its renames.
fn old_checkpoint_dir(run: &Path) -> PathBuf {
    run.join("checkpoint.old")
}

/// Reads a run's saved settings.
pub fn read_config(run: &Path) -> Result<TrainConfig> {
    read_json(&run.join(CONFIG_FILE))
}

/// Reads the state saved with a run's checkpoint.
pub fn read_state(run: &Path) -> Result<RunState> {
    read_json(&checkpoint_dir(run).join(STATE_FILE))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    serde_json::from_slice(&read_file(path)?).map_err(|e| Error::format(path, e.to_string()))
}

/// Starts a run folder: its settings and an empty log.
pub fn create(run: &Path, config: &TrainConfig) -> Result<()> {
    std::fs::create_dir_all(run).map_err(|e| Error::io(run, e))?;
    let config_json = serde_json::to_string_pretty(config).expect("plain data serialises");
    write_file_atomic(&run.join(CONFIG_FILE), config_json.as_bytes())?;
    write_file_atomic(&run.join(LOG_FILE), LOG_HEADER.as_bytes())
}

/// Everything a run needs to continue exactly where its last checkpoint left it.
pub struct Checkpoint<B: AutodiffBackend> {
    pub stored: StoredModel<B>,
    pub optimizer: Optim<B>,
    pub state: RunState,
}

impl<B: AutodiffBackend> Checkpoint<B> {
    /// Reads a run's checkpoint, and drops log rows written after it (steps a stopped session
    /// took but did not save, which the resumed run takes again).
    ///
    /// A checkpoint without its optimizer file (a milestone committed to git without the moments,
    /// twice the weights' size, so that a run outlives the machine it ran on) resumes with Adam
    /// started afresh and the learning rate ramped back up ([`RunState::rewarm_from`]): the same
    /// weights and schedule, not the exact continuation.
    pub fn load(run: &Path, device: &B::Device) -> Result<Self> {
        recover(run)?;
        let dir = checkpoint_dir(run);
        let stored = store::load_dir::<B>(&dir, device)?;
        let mut state = read_state(run)?;
        let optimizer_path = dir.join(OPTIMIZER_FILE);
        let optimizer = if optimizer_path.exists() {
            let record = NamedMpkBytesRecorder::<FullPrecisionSettings>::default()
                .load(read_file(&optimizer_path)?, device)
                .map_err(|e| Error::format(&optimizer_path, e.to_string()))?;
            adam().load_record(record)
        } else {
            state.rewarm_from = Some(state.step);
            adam()
        };
        truncate_log(run, state.step)?;
        Ok(Self {
            stored,
            optimizer,
            state,
        })
    }

    /// Whether this checkpoint lacked the optimizer's moments, so the run goes on with fresh ones.
    pub fn fresh_moments(&self) -> bool {
        self.state.rewarm_from == Some(self.state.step)
    }

    /// Writes `checkpoint.new/` completely, then swaps it in for `checkpoint/`: a crash at any point
    /// leaves one whole checkpoint (the old one, in `checkpoint.old/` at worst, which [`recover`] puts
    /// back). A failed write (disk full, read-only) removes the partial copy and keeps the old one.
    pub fn save(
        run: &Path,
        stored: &StoredModel<B>,
        optimizer: &Optim<B>,
        state: &RunState,
    ) -> Result<()> {
        let (current, fresh, old) = (
            checkpoint_dir(run),
            run.join("checkpoint.new"),
            old_checkpoint_dir(run),
        );
        let _ = std::fs::remove_dir_all(&fresh);
        let written = (|| {
            stored.save_dir(&fresh, WeightPrecision::F32)?;
            fault_injection_pause();
            let optimizer_bytes = NamedMpkBytesRecorder::<FullPrecisionSettings>::default()
                .record(optimizer.to_record(), ())
                .map_err(|e| Error::invalid(format!("cannot serialise the optimizer: {e}")))?;
            write_file_atomic(&fresh.join(OPTIMIZER_FILE), &optimizer_bytes)?;
            let state_json = serde_json::to_string_pretty(state).expect("plain data serialises");
            write_file_atomic(&fresh.join(STATE_FILE), state_json.as_bytes())
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_dir_all(&fresh);
            let kept = if current.exists() {
                format!("the previous checkpoint in {} is kept", current.display())
            } else {
                "no checkpoint was saved yet".into()
            };
            return Err(Error::invalid(format!(
                "cannot write the step {} checkpoint ({e}); {kept}",
                state.step
            )));
        }
        let _ = std::fs::remove_dir_all(&old);
        if current.exists() {
            std::fs::rename(&current, &old).map_err(|e| Error::io(&current, e))?;
            fault_injection_pause();
        }
        std::fs::rename(&fresh, &current).map_err(|e| Error::io(&fresh, e))?;
        let _ = std::fs::remove_dir_all(&old);
        Ok(())
    }
}

/// Whether the run has a checkpoint to resume from (possibly only as `checkpoint.old/`).
pub fn has_checkpoint(run: &Path) -> bool {
    checkpoint_dir(run).exists() || old_checkpoint_dir(run).exists()
}

/// Puts `checkpoint.old/` back when a crash came between [`Checkpoint::save`]'s two renames, the one
/// moment no `checkpoint/` exists. A half-written `checkpoint.new/` is never used.
pub(crate) fn recover(run: &Path) -> Result<()> {
    let (current, old) = (checkpoint_dir(run), old_checkpoint_dir(run));
    if !current.exists() && old.exists() {
        std::fs::rename(&old, &current).map_err(|e| Error::io(&old, e))?;
    }
    Ok(())
}

/// Fault injection for the kill -9 tests (`tests/faults.rs`): with `IGPT_FAULT_CHECKPOINT_PAUSE_MS`
/// set, a checkpoint write pauses half-written and again between its renames, so a test can kill
/// the process at exactly those moments. Unset (always, outside those tests), it does nothing.
fn fault_injection_pause() {
    if let Some(ms) = std::env::var("IGPT_FAULT_CHECKPOINT_PAUSE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// One row of `log.csv`.
pub struct LogRow {
    pub step: usize,
    pub lr: f64,
    /// Mean training loss of the step (nats per token).
    pub loss: f64,
    pub grad_norm: f64,
    pub tokens_per_second: f64,
    pub val_bits_per_token: Option<f64>,
    /// Training seconds so far.
    pub seconds: f64,
}

pub(crate) fn append_log(run: &Path, row: &LogRow) -> Result<()> {
    use std::io::Write;
    let path = run.join(LOG_FILE);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    let val = row
        .val_bits_per_token
        .map_or(String::new(), |v| format!("{v:.6}"));
    writeln!(
        file,
        "{},{:.6e},{:.6},{:.6},{:.4},{:.0},{val},{:.1}",
        row.step,
        row.lr,
        row.loss,
        row.loss / std::f64::consts::LN_2,
        row.grad_norm,
        row.tokens_per_second,
        row.seconds
    )
    .map_err(|e| Error::io(&path, e))
}

/// Keeps the log's header and its rows up to `step`.
fn truncate_log(run: &Path, step: usize) -> Result<()> {
    let path = run.join(LOG_FILE);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return write_file_atomic(&path, LOG_HEADER.as_bytes());
    };
    let kept: String = text
        .lines()
        .enumerate()
        .filter(|(i, line)| {
            *i == 0
                || line
                    .split(',')
                    .next()
                    .and_then(|s| s.parse::<usize>().ok())
                    .is_some_and(|s| s <= step)
        })
        .map(|(_, line)| format!("{line}\n"))
        .collect();
    if kept.len() == text.len() {
        return Ok(());
    }
    write_file_atomic(&path, kept.as_bytes())
}
