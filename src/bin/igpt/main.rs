//! `igpt`: the command line. `main` parses, dispatches to a subcommand module, and prints errors.

mod ablation_means;
mod atlas;
mod backend;
mod baselines;
mod bench;
mod chart;
mod eval;
mod examples;
mod finetune;
mod heap;
mod history;
mod image_source;
mod inpaint;
mod inspect;
mod prepare;
mod probe;
mod probe_compare;
mod probe_curve;
mod quantize;
mod sample;
mod shard;
mod signals;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use igpt::data::DataSpec;
use indicatif::{ProgressBar, ProgressStyle};

use backend::run_on;

/// Image GPT (Chen et al. 2020) in Rust: palettes, tokenizing, evaluation, sampling and completion.
///
/// A model is a directory in HuggingFace's layout (model.safetensors, config.json,
/// preprocessor_config.json) plus card.json; real HF ImageGPT checkpoints load unchanged.
/// Datasets are named by a spec: fashion-mnist:SPLIT (Debian's dataset-fashion-mnist),
/// fashion-mnist:DIR:SPLIT, idx:DIR:SPLIT, cifar:DIR:SPLIT, emoji:SPLIT (Debian's Noto Color Emoji),
/// emoji:FONT:SPLIT or folder:DIR, with SPLIT train or test.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fit a k-means colour palette on a dataset's pixels and save it as preprocessor_config.json.
    Palette(prepare::PaletteArgs),
    /// Print the palette token ids of images, as a model reads them.
    Tokenize(prepare::TokenizeArgs),
    /// Write a randomly initialised model directory for a palette and a preset size.
    Init(prepare::InitArgs),
    /// Mean negative log-likelihood (nats and bits per token) of token sequences or a dataset split.
    Eval(eval::EvalArgs),
    /// Draw new images from a model and write them as a PNG grid.
    Sample(sample::SampleArgs),
    /// Complete the top rows of an image several ways: original, given part, completions in a PNG.
    Complete(sample::CompleteArgs),
    /// Fill a region of an image several ways with a BERT model: original, hole, fills in a PNG.
    Inpaint(inpaint::InpaintArgs),
    /// Pack a dataset into tar shards, which `train --data shards:DIR` streams without loading it.
    Shard(shard::ShardArgs),
    /// Train a model (autodiff on the chosen device), with checkpoints that --resume continues.
    Train(train::TrainArgs),
    /// Write a trained run's model directory, with test bits/token measured into its card.
    Export(train::ExportArgs),
    /// Bits/token of simple models (uniform, unigrams, a 3-neighbour context model) a model must beat.
    Baselines(baselines::BaselinesArgs),
    /// What the model makes of one image: surprise per pixel, expected colours and attention at a pixel.
    Inspect(inspect::InspectArgs),
    /// The mean write of every head, attention and MLP over a dataset, saved for mean ablation.
    AblationMeans(ablation_means::AblationMeansArgs),
    /// A layer's feature atlas: the images and pixels that excite its top directions and MLP neurons.
    Atlas(atlas::AtlasArgs),
    /// Linear probes on every layer's features, beside raw-pixel and random-weights baselines.
    Probe(probe::ProbeArgs),
    /// Probes along training (a run's milestones, exported models) against their held-out bits.
    ProbeCurve(probe_curve::ProbeCurveArgs),
    /// Several models' probes side by side, by layer (table and chart).
    ProbeCompare(probe_compare::ProbeCompareArgs),
    /// Write a model's light weights (block-wise 6-bit) beside the full ones and score them into its card.
    Quantize(quantize::QuantizeArgs),
    /// Fine-tune a model to classify (joint generative + classification loss); it still generates.
    Finetune(finetune::FinetuneArgs),
    /// Label image files with a fine-tuned model.
    Classify(finetune::ClassifyArgs),
    /// Write a few images of a dataset as PNGs for the web page's completion menu (www/examples).
    Examples(examples::ExamplesArgs),
    /// Measure training and sampling throughput.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> ExitCode {
    heap::keep_freed_memory();
    signals::die_quietly_on_closed_pipe();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Palette(args) => prepare::palette(args),
        Command::Tokenize(args) => prepare::tokenize(args),
        Command::Init(args) => run_on(args.device, args),
        Command::Eval(args) => run_on(args.device, args),
        Command::Sample(args) => run_on(args.sampling.device, args),
        Command::Complete(args) => run_on(args.sampling.device, args),
        Command::Inpaint(args) => run_on(args.sampling.device, args),
        Command::Shard(args) => shard::run(args),
        Command::Train(args) => run_on(args.device, args),
        Command::Export(args) => run_on(args.device, args),
        Command::Baselines(args) => baselines::run(args),
        Command::Examples(args) => examples::run(args),
        Command::Inspect(args) => run_on(args.device, args),
        Command::AblationMeans(args) => run_on(args.device, args),
        Command::Atlas(args) => run_on(args.device, args),
        Command::Probe(args) => run_on(args.device, args),
        Command::ProbeCurve(args) => probe_curve::run(args),
        Command::ProbeCompare(args) => probe_compare::run(args),
        Command::Quantize(args) => run_on(args.device, args),
        Command::Finetune(args) => run_on(args.device, args),
        Command::Classify(args) => run_on(args.device, args),
        Command::Bench(bench::BenchCommand::Train(args)) => run_on(args.shape.device, args),
        Command::Bench(bench::BenchCommand::Sample(args)) => run_on(args.shape.device, args),
        Command::Bench(bench::BenchCommand::Attention(args)) => run_on(args.device, args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let (h, w) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("`{s}` is not HEIGHTxWIDTH"))?;
    let parse = |v: &str| v.trim().parse::<usize>().ok().filter(|&n| n > 0);
    match (parse(h), parse(w)) {
        (Some(h), Some(w)) => Ok((h, w)),
        _ => Err(format!("`{s}` is not HEIGHTxWIDTH with positive numbers")),
    }
}

pub(crate) fn progress(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{what} {{bar:40}} {{pos}}/{{len}} [{{elapsed_precise}} < {{eta_precise}}]"
        ))
        .expect("valid template"),
    );
    bar
}

/// A line that stays: above the progress bar on a terminal, or on its own when the bar is hidden
/// (stderr is a log file), so a run in the background still says how its checks went.
pub(crate) fn log_line(bar: &ProgressBar, line: &str) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

/// Token ids of every image, with a progress bar.
pub(crate) fn tokenize_images(
    images: &[igpt::Raster],
    tokenizer: &igpt::Tokenizer,
    what: &str,
) -> Vec<Vec<u16>> {
    let bar = progress(images.len(), what);
    let ids = images
        .iter()
        .map(|im| {
            bar.inc(1);
            tokenizer.tokenize(im)
        })
        .collect();
    bar.finish_and_clear();
    ids
}

/// Loads a dataset (its first `limit` images) and tokenizes it with a progress bar.
pub(crate) fn tokenize_all(
    spec: &DataSpec,
    tokenizer: &igpt::Tokenizer,
    limit: Option<usize>,
) -> anyhow::Result<Vec<Vec<u16>>> {
    let data = load_data(spec, limit)?;
    Ok(tokenize_images(
        &data.images,
        tokenizer,
        &format!("tokenizing {spec}"),
    ))
}

/// The labelled images `probe` and `finetune` fit on and are scored on.
#[derive(clap::Args)]
pub(crate) struct LabelledSplits {
    /// Labelled images to fit on; a held-out share of them chooses settings and when to stop.
    #[arg(long, default_value = "fashion-mnist:train")]
    pub train: DataSpec,
    /// Labelled images scored once at the end (never used to choose anything).
    #[arg(long, default_value = "fashion-mnist:test")]
    pub test: DataSpec,
    /// Use only the first N training images (before the held-out split).
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Use only the first M test images.
    #[arg(long)]
    pub test_limit: Option<usize>,
}

impl LabelledSplits {
    pub fn load(&self) -> anyhow::Result<(igpt::data::Dataset, igpt::data::Dataset)> {
        Ok((
            load_data(&self.train, self.train_limit)?,
            load_data(&self.test, self.test_limit)?,
        ))
    }
}

pub(crate) fn load_data(
    spec: &DataSpec,
    limit: Option<usize>,
) -> anyhow::Result<igpt::data::Dataset> {
    let mut data = spec.load()?;
    if let Some(n) = limit {
        data.truncate(n);
    }
    Ok(data)
}
