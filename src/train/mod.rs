//! Training: Adam (β = 0.9, 0.95, no weight decay), linear warmup then cosine decay to 0, global-norm
//! gradient clipping, periodic validation, and atomic checkpoints that resume exactly. One loop
//! (`run_loop`) serves pretraining and fine-tuning; its step has two halves (`step`: gradients, then
//! clip + Adam), between which a data-parallel step (`parallel`, `--devices`) all-reduces.

pub mod batches;
pub mod config;
pub mod finetune;
#[cfg(feature = "collective")]
pub mod nodes;
#[cfg(feature = "collective")]
pub mod parallel;
pub mod run;
pub mod run_loop;
pub mod step;

pub use batches::{Batches, TrainData};
pub use config::{Nodes, TrainConfig, schedule};
pub use run_loop::{Event, Judge, Outcome, Scorer, Start, train};
