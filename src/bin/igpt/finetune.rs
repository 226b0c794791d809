//! `igpt finetune` (a classification head, the whole network trained on L_gen + L_clf) and
//! `igpt classify` (a fine-tuned model's labels for image files).

use std::ops::ControlFlow;
use std::path::PathBuf;

use anyhow::{Context, bail};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use clap::Args;
use igpt::Precision;
use igpt::Raster;
use igpt::analysis::{classify, explain};
use igpt::store::{self, StoredModel, WeightPrecision};
use igpt::train::Start;
use igpt::train::finetune::{self, FinetuneConfig, FinetuneEvent, RunSettings};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::backend::{BackendJob, DeviceKind};
use crate::{LabelledSplits, log_line, progress, tokenize_images};

#[derive(Args)]
pub struct FinetuneArgs {
    /// The pretrained model directory to start from.
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    data: LabelledSplits,
    /// Output model directory: generates like the original, and classifies.
    #[arg(short, long)]
    output: PathBuf,
    /// A run folder: each held-out check also writes a checkpoint and the best weights so far
    /// (`best/`), so a fine-tuning longer than one sitting can stop and go on with --resume.
    #[arg(long, value_name = "DIR")]
    run: Option<PathBuf>,
    /// Continue the fine-tuning in --run from its checkpoint (the same model, data and settings).
    #[arg(long, requires = "run")]
    resume: bool,
    /// The share of the training images held out to choose when to stop (between 0 and 1).
    #[arg(long, default_value_t = 0.1, value_parser = parse_share)]
    val_fraction: f64,
    /// Steps at most.
    #[arg(long, default_value_t = 2000)]
    steps: usize,
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Peak learning rate (Adam; warmup, then cosine decay over --steps).
    #[arg(long, default_value_t = 2e-4)]
    lr: f64,
    #[arg(long, default_value_t = 50)]
    warmup: usize,
    #[arg(long, default_value_t = 1.0)]
    grad_clip: f64,
    /// Steps between accuracy checks on the held-out images.
    #[arg(long, default_value_t = 100)]
    eval_every: usize,
    /// Stop after this many checks without a better held-out accuracy.
    #[arg(long, default_value_t = 5)]
    patience: usize,
    /// Store the weights as f16 (half the size; the card's numbers are measured on what is written).
    #[arg(long)]
    f16: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also store the result (test accuracy, bits/token and how it was fine-tuned) in the card of the
    /// model it started from, under `finetuned`, as `igpt probe --record` stores its probes.
    #[arg(long)]
    record: bool,
    /// Matrix products in bf16 or f16 while fitting (mixed precision, as `igpt train --precision`).
    #[arg(long, value_enum, default_value_t)]
    precision: Precision,
    /// Random horizontal flips of the training images (label-preserving for clothes and photos).
    #[arg(long)]
    flip: bool,
    /// Random shifts of up to N pixels each way (the image padded by repeating its edge).
    #[arg(long, default_value_t = 0, value_name = "N")]
    crop: usize,
    /// The baseline the paper compares with: the same architecture with fresh random weights (seeded
    /// by --seed), trained on the classification loss alone with the same steps and data.
    #[arg(long, conflicts_with = "record")]
    from_scratch: bool,
    #[arg(long, value_enum, default_value_t)]
    pub device: DeviceKind,
    /// Data parallelism, as `igpt train --devices`: split each batch across these devices of
    /// --device's kind, one replica each, their gradients summed before one optimiser step. The same
    /// fine-tuning up to f32 rounding, and a run may resume on another count. On this 2-core CPU,
    /// `--device flex --devices 0,1` is faster than one device (README, Representations).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    devices: Vec<u16>,
}

#[derive(Args)]
pub struct ClassifyArgs {
    /// A fine-tuned model directory (from `igpt finetune`).
    #[arg(long)]
    model: PathBuf,
    /// Image files (PNG, JPEG, GIF, BMP, WebP); resized to the model's image size.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Probabilities shown per image.
    #[arg(long, default_value_t = 3)]
    top: usize,
    /// Print one JSON line per image: {"image", "label", "top": [{"label", "probability"}...]}.
    #[arg(long)]
    json: bool,
    /// With --json, add which pixels moved the label: "explanation": {"logits", "probabilities",
    /// "class", "pixel_shares" (each pixel's share of the label's logit above the mean class's, raster
    /// order; they sum with "start_share" to that gap), "start_share"}. The page's inspector draws it.
    #[arg(long, requires = "json")]
    explain: bool,
    #[arg(long, value_enum, default_value_t)]
    pub device: DeviceKind,
}

impl BackendJob for FinetuneArgs {
    type Output = ();

    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<()> {
        let pretrained: StoredModel<Autodiff<B>> = store::load_dir(&self.model, &device)?;
        let loaded_card = pretrained.card.clone();
        let tokenizer = pretrained.tokenizer();
        let (train, test) = self.data.load()?;
        if test.is_empty() {
            bail!("fine-tuning needs test images to score the result on");
        }
        let labels = finetune::class_names(&train.labels, &train.classes)?;
        let n_classes = labels.len();
        let ids = tokenize_images(&train.images, &tokenizer, "tokenizing train");
        let ((fit_ids, fit_labels), (val_ids, val_labels)) =
            finetune::hold_out(&ids, &train.labels, self.val_fraction, self.seed)?;
        let config = FinetuneConfig {
            batch: self.batch,
            steps: self.steps,
            lr: self.lr,
            warmup: self.warmup,
            grad_clip: self.grad_clip,
            eval_every: self.eval_every,
            patience: self.patience,
            seed: self.seed,
            precision: self.precision,
            flip: self.flip,
            crop: self.crop,
            classification_only: self.from_scratch,
            devices: self.devices.clone(),
        };
        let settings = RunSettings::new(
            &self.model,
            (&self.data.train.to_string(), self.data.train_limit),
            self.val_fraction,
            &config,
        );
        let run = (self.run.as_deref(), self.resume);
        let start = finetune::start(pretrained, labels, &settings, run, &device)?;
        let first_step = match &start {
            Start::Resume(checkpoint) => {
                let state = &checkpoint.state;
                let best = state.best.map_or(String::new(), |(accuracy, step)| {
                    format!(", best held-out {:.2}% at step {step}", 100.0 * accuracy)
                });
                eprintln!(
                    "resuming the fine-tuning at step {} of {}{best}{}",
                    state.step,
                    config.steps,
                    fresh_moments_note(checkpoint.fresh_moments(), config.warmup)
                );
                state.step
            }
            Start::Model(_) => 0,
        };
        eprintln!(
            "fine-tuning {} on {} images ({} held out) of {}, {} classes, up to {} steps of {}",
            self.model.display(),
            fit_ids.len(),
            val_ids.len(),
            self.data.train,
            n_classes,
            config.steps,
            config.batch
        );
        let bar = ProgressBar::new(config.steps as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed_precise}]")
                .expect("valid template"),
        );
        bar.set_position(first_step as u64);
        let mut note = String::new();
        let done = finetune::finetune(
            start,
            self.run.as_deref(),
            (&fit_ids, &fit_labels),
            (&val_ids, &val_labels),
            &config,
            |event| {
                match event {
                    FinetuneEvent::Step {
                        step,
                        generative,
                        classification,
                    } => {
                        bar.set_position(step as u64);
                        bar.set_message(format!(
                            "L_gen {:.3} bits/token, L_clf {classification:.3}{note}",
                            generative / std::f64::consts::LN_2
                        ));
                    }
                    FinetuneEvent::Validation {
                        step,
                        accuracy,
                        best,
                    } => {
                        let mark = if best { " (best)" } else { "" };
                        note = format!(" | held-out {:.2}%{mark}", 100.0 * accuracy);
                        log_line(
                            &bar,
                            &format!(
                                "step {step}: held-out accuracy {:.2}%{mark}",
                                100.0 * accuracy
                            ),
                        );
                    }
                    FinetuneEvent::Checkpoint { .. } => {}
                }
                ControlFlow::Continue(())
            },
        )?;
        bar.finish();

        let weights = if self.f16 {
            WeightPrecision::F16
        } else {
            WeightPrecision::F32
        };
        let test_ids = tokenize_images(&test.images, &tokenizer, "tokenizing test");
        let bar = progress(test_ids.len(), "scoring test");
        let scores =
            done.save_and_score(&self.output, weights, (&test_ids, &test.labels), |n| {
                bar.inc(n as u64)
            })?;
        bar.finish_and_clear();
        let outcome = finetune::Outcome {
            record: done.record(&settings, weights),
            scores,
            test_data: &self.data.test.to_string(),
        };
        let parent = self.record.then_some((self.model.as_path(), loaded_card));
        outcome.save_cards(done.stored.card, &self.output, parent)?;
        println!(
            "wrote {}: test accuracy {:.2}% and {:.4} bits/token on {} images of {} (best held-out {:.2}% at step {} of {}, {:.0}s)",
            self.output.display(),
            100.0 * scores.accuracy,
            scores.bits_per_token,
            scores.count,
            self.data.test,
            100.0 * done.best_val_accuracy,
            done.best_step,
            done.steps,
            done.seconds
        );
        Ok(())
    }
}

impl BackendJob for ClassifyArgs {
    type Output = ();

    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<()> {
        let stored = store::load_dir::<B>(&self.model, &device)?;
        if stored.labels.is_empty() {
            bail!(
                "{} has no classification head: fine-tune it first with `igpt finetune`",
                self.model.display()
            );
        }
        let tokenizer = stored.tokenizer();
        let ids = self
            .images
            .iter()
            .map(|path| {
                let image = Raster::open(path, tokenizer.channels())
                    .with_context(|| format!("cannot read the image {}", path.display()))?;
                Ok(tokenizer.tokenize(&image))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        // With --explain each image's one forward pass gives its probabilities too.
        let (probabilities, explained): (Vec<Vec<f32>>, Vec<explain::Explanation>) = if self.explain
        {
            let explained: Vec<explain::Explanation> = ids
                .iter()
                .map(|ids| explain::Explanation::new(&stored.model, ids, tokenizer.width))
                .collect::<igpt::Result<_>>()?;
            let probabilities = explained.iter().map(|e| e.probabilities.clone()).collect();
            (probabilities, explained)
        } else {
            let probabilities = classify::class_probabilities(&stored.model, &ids, 16)?;
            (probabilities, Vec::new())
        };
        let mut explained = explained.into_iter();
        for (path, p) in self.images.iter().zip(probabilities) {
            let ranked = explain::ranked(&p, self.top);
            let name = |i: usize| stored.labels[i].clone();
            if self.json {
                let top: Vec<_> = ranked
                    .iter()
                    .map(|&(i, p)| json!({"label": name(i), "probability": p}))
                    .collect();
                let mut line = json!({"image": path.display().to_string(), "label": name(ranked[0].0), "top": top});
                if let Some(explanation) = explained.next() {
                    line["explanation"] = serde_json::to_value(explanation)?;
                }
                println!("{line}");
            } else {
                let top: Vec<String> = ranked
                    .iter()
                    .map(|&(i, p)| format!("{} {:.1}%", name(i), 100.0 * p))
                    .collect();
                println!(
                    "{}: {} ({})",
                    path.display(),
                    name(ranked[0].0),
                    top.join(", ")
                );
            }
        }
        Ok(())
    }
}

/// A share strictly between 0 and 1 (`--val-fraction`).
fn parse_share(text: &str) -> Result<f64, String> {
    let share: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if share > 0.0 && share < 1.0 {
        Ok(share)
    } else {
        Err(format!("{share} is not between 0 and 1"))
    }
}

/// What a resume says when its checkpoint came without the optimizer's moments (a committed
/// milestone): Adam starts afresh and the learning rate ramps back up.
pub fn fresh_moments_note(fresh: bool, warmup: usize) -> String {
    if fresh {
        format!(
            " (the checkpoint has no optimizer moments: Adam starts afresh and the learning rate ramps back up over {warmup} steps)"
        )
    } else {
        String::new()
    }
}
