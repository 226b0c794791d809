//! `igpt probe-curve`: a training run's probes against its generative quality (the paper's Figure 3):
//! for each milestone that `igpt probe --record` measured, its held-out bits/token, its best layer and
//! that layer's test accuracy, as a table and a chart.

use std::path::PathBuf;

use anyhow::bail;
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
    #[arg(long, required = true)]
    run: Vec<PathBuf>,
    /// Write an SVG chart: best-layer accuracy against held-out bits/token, and each milestone's
    /// accuracy by layer.
    #[arg(long, value_name = "FILE.svg")]
    chart: Option<PathBuf>,
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
    if probed.is_empty() {
        let first = args.run[0].display();
        bail!(
            "no milestone of {} has a recorded probe: run `igpt probe --model {first}/milestones/step-N --record` first",
            names(&args.run)
        );
    }
    probed.sort_by_key(|m| m.step);
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
        chart::probe_curve_svg(path, &names(&args.run), &probed)?;
    }
    Ok(())
}

/// The runs' folder names, as the chart's title and the messages say them: `run-a + run-b`.
fn names(runs: &[PathBuf]) -> String {
    let name = |run: &PathBuf| {
        run.file_name()
            .map_or_else(|| run.display().to_string(), |n| n.to_string_lossy().into())
    };
    runs.iter().map(name).collect::<Vec<_>>().join(" + ")
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
