//! `igpt probe-curve`: a training run's probes against its generative quality (the paper's Figure 3):
//! for each milestone that `igpt probe --record` measured, its held-out bits/token, its best layer and
//! that layer's test accuracy, as a table and a chart. Exported models count as milestones too, so
//! the curve can be drawn again from the models a campaign shipped once its run folders are gone.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use igpt::ModelCard;
use igpt::train::run;

use crate::chart::{self, ProbedMilestone};
use crate::history;

#[derive(Args)]
pub struct ProbeCurveArgs {
    /// A training run folder; its milestones (RUN/milestones/step-*) probed with
    /// `igpt probe --model RUN/milestones/step-N --record`. Give it again for a run that continued
    /// from another (`train --model RUN/milestones/step-N`): steps count from the first model.
    #[arg(long, required_unless_present = "model")]
    run: Vec<PathBuf>,
    /// An exported model (`igpt export`) probed with `igpt probe --model DIR --record`: a point at its
    /// card's total steps and the run's validation figure when it was exported. Repeatable, and
    /// combines with `--run`.
    #[arg(long, value_name = "DIR")]
    model: Vec<PathBuf>,
    /// Write an SVG chart: best-layer accuracy against held-out bits/token, and each milestone's
    /// accuracy by layer.
    #[arg(long, value_name = "FILE.svg")]
    chart: Option<PathBuf>,
    /// The chart's title; default: the runs' and models' folder names.
    #[arg(long, requires = "chart")]
    title: Option<String>,
    /// Print one JSON line instead of the table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: ProbeCurveArgs) -> anyhow::Result<()> {
    let mut probed = Vec::new();
    let mut unprobed = Vec::new();
    for folder in &args.run {
        let before = match history::steps_before(folder)? {
            Some(steps) => steps as usize,
            None => {
                eprintln!(
                    "{}'s starting model has no known history: its steps count from its own start",
                    folder.display()
                );
                0
            }
        };
        for (dir, state) in run::milestones(folder)? {
            let step = before + state.step;
            let card = ModelCard::read_or(&dir, ModelCard::default)?;
            match (card.probe, state.last_val_bits) {
                (Some(probe), Some(val_bits)) => probed.push(ProbedMilestone {
                    step,
                    val_bits,
                    probe,
                }),
                _ => unprobed.push(step),
            }
        }
    }
    for dir in &args.model {
        probed.push(exported_point(dir)?);
    }
    let sources = names(args.run.iter().chain(&args.model));
    if probed.is_empty() {
        let first = args.run[0].display();
        bail!(
            "no milestone of {sources} has a recorded probe: run `igpt probe --model {first}/milestones/step-N --record` first"
        );
    }
    probed.sort_by_key(|m| m.step);
    if let Some(pair) = probed.windows(2).find(|pair| pair[0].step == pair[1].step) {
        bail!(
            "two of the points are step {}: give each model or run once",
            pair[0].step
        );
    }
    unprobed.sort_unstable();
    let protocol = |m: &ProbedMilestone| {
        let p = &m.probe;
        (
            p.train_images,
            p.test_images,
            p.train_data.clone(),
            p.test_data.clone(),
        )
    };
    if probed.iter().any(|m| protocol(m) != protocol(&probed[0])) {
        bail!("the milestones were probed on different images: probe them all with the same flags");
    }
    if args.json {
        println!("{}", serde_json::to_string(&probed)?);
    } else {
        print_table(&probed);
        if !unprobed.is_empty() {
            let steps: Vec<String> = unprobed.iter().map(usize::to_string).collect();
            println!(
                "not probed (or no held-out bits): steps {}",
                steps.join(", ")
            );
        }
    }
    if let Some(path) = &args.chart {
        chart::probe_curve_svg(path, args.title.as_deref().unwrap_or(&sources), &probed)?;
    }
    Ok(())
}

/// An exported model's point: its probe, its steps over the whole history and the validation
/// figure its run had reached, all from its card.
fn exported_point(dir: &Path) -> anyhow::Result<ProbedMilestone> {
    let shown = dir.display();
    if !dir.join(igpt::store::CARD_FILE).exists() {
        bail!("{shown} holds no card.json: give a model folder that `igpt export` wrote");
    }
    let card = ModelCard::read_or(dir, ModelCard::default)?;
    let Some(probe) = card.probe else {
        bail!("{shown} has no recorded probe: run `igpt probe --model {shown} --record` first");
    };
    let training = card.training.with_context(|| {
        format!("{shown}'s card has no training record: it was not exported by `igpt export`")
    })?;
    let Some((steps, _)) = training.totals() else {
        bail!(
            "{shown}'s training history is not all known (e.g. it started from a HuggingFace checkpoint), so it has no step to chart at"
        );
    };
    let val_bits = training.val_bits_per_token.with_context(|| {
        format!("{shown}'s card has no validation figure: its run validated on nothing (train with --holdout N or --val SPEC)")
    })?;
    Ok(ProbedMilestone {
        step: steps as usize,
        val_bits,
        probe,
    })
}

/// The runs' and models' folder names, as the chart's title and the messages say them: `run-a + run-b`.
fn names<'a>(folders: impl Iterator<Item = &'a PathBuf>) -> String {
    let name = |folder: &PathBuf| {
        folder.file_name().map_or_else(
            || folder.display().to_string(),
            |n| n.to_string_lossy().into(),
        )
    };
    folders.map(name).collect::<Vec<_>>().join(" + ")
}

fn print_table(probed: &[ProbedMilestone]) {
    let first = &probed[0].probe;
    println!(
        "linear probes of each milestone: {} training images of {}, {} test images of {}",
        first.train_images, first.train_data, first.test_images, first.test_data
    );
    println!("  step  held-out bits  best layer (held-out)  its test acc  raw pixels");
    for m in probed {
        println!(
            "{:>6}  {:>13.4}  {:>21}  {:>11.2}%  {:>9.2}%",
            m.step,
            m.val_bits,
            m.probe.best_layer,
            100.0 * m.probe.best_accuracy,
            100.0 * m.probe.raw_pixels
        );
    }
}
