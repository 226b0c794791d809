//! `igpt probe-compare`: several models' probes side by side (the AR-vs-BERT study): test accuracy by
//! layer for each, with its random-weights twin's best and the raw pixels, as a table and a chart.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use igpt::analysis::probe::ProbeReport;

use crate::chart;

#[derive(Args)]
pub struct ProbeCompareArgs {
    /// Probe reports to compare, each `LABEL=FILE` where FILE is the line `igpt probe --json` printed
    /// (for example `AR=ar.json "BERT, 4 masks"=bert4.json`).
    #[arg(required = true, value_name = "LABEL=FILE")]
    reports: Vec<String>,
    /// Write an SVG chart of every report's test accuracy by layer, raw pixels as a line.
    #[arg(long, value_name = "FILE.svg")]
    chart: Option<PathBuf>,
    /// The chart's title.
    #[arg(long, default_value = "Probes compared")]
    title: String,
}

pub fn run(args: ProbeCompareArgs) -> anyhow::Result<()> {
    let mut reports = Vec::new();
    for spec in &args.reports {
        let Some((label, file)) = spec.split_once('=') else {
            bail!("`{spec}`: give each report as LABEL=FILE");
        };
        let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?;
        let report: ProbeReport = serde_json::from_str(text.trim())
            .with_context(|| format!("{file} is not a report of `igpt probe --json`"))?;
        reports.push((label.to_string(), report));
    }
    let protocol = |r: &ProbeReport| {
        (
            r.train_images,
            r.test_images,
            r.train_data.clone(),
            r.test_data.clone(),
        )
    };
    if let Some((label, _)) = reports
        .iter()
        .find(|(_, r)| protocol(r) != protocol(&reports[0].1))
    {
        bail!(
            "{label} was probed on other images than {}: probe them all with the same flags",
            reports[0].0
        );
    }
    print_table(&reports);
    if let Some(path) = &args.chart {
        chart::probe_compare_svg(path, &args.title, &reports)?;
    }
    Ok(())
}

/// A Markdown table: one row per layer, one column per report, then each one's best layer (chosen on
/// held-out train), its random twin's best and the raw pixels.
fn print_table(reports: &[(String, ProbeReport)]) {
    let first = &reports[0].1;
    println!(
        "linear probes: {} training images of {}, {} test images of {}; test accuracy (%)\n",
        first.train_images, first.train_data, first.test_images, first.test_data
    );
    let labels: Vec<&str> = reports.iter().map(|(l, _)| l.as_str()).collect();
    println!("| layer | {} |", labels.join(" | "));
    println!("|---|{}", "---|".repeat(labels.len()));
    let last = reports
        .iter()
        .flat_map(|(_, r)| r.layers.iter().map(|l| l.layer))
        .max()
        .unwrap_or(0);
    let cell = |r: &ProbeReport, layer: usize| {
        r.layers
            .iter()
            .find(|l| l.layer == layer)
            .map_or("–".into(), |l| format!("{:.2}", 100.0 * l.accuracy))
    };
    for layer in 0..=last {
        let name = if layer == 0 {
            "0 (embeddings)".to_string()
        } else {
            layer.to_string()
        };
        let cells: Vec<String> = reports.iter().map(|(_, r)| cell(r, layer)).collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
    let row = |name: &str, f: &dyn Fn(&ProbeReport) -> String| {
        let cells: Vec<String> = reports.iter().map(|(_, r)| f(r)).collect();
        println!("| {name} | {} |", cells.join(" | "));
    };
    row("best (layer, chosen on held-out)", &|r| {
        format!("{:.2} ({})", 100.0 * r.best_accuracy, r.best_layer)
    });
    row("random weights, best", &|r| {
        format!("{:.2}", 100.0 * r.random_init_best)
    });
    row("raw pixels", &|r| format!("{:.2}", 100.0 * r.raw_pixels));
}
