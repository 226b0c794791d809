//! `igpt`: build palettes, tokenize, evaluate and initialise Image GPT models from the command line.

mod backend;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use burn::tensor::backend::Backend;
use clap::{Args, Parser, Subcommand};
use igpt::data::DataSpec;
use igpt::eval::{Nll, sequence_nll};
use igpt::palette::FitOptions;
use igpt::store::{self, ModelCard, StoredModel, WeightPrecision};
use igpt::{ImageGptConfig, Palette, Raster};
use indicatif::{ProgressBar, ProgressStyle};

use backend::{BackendJob, DeviceKind, run_on};

/// Image GPT (Chen et al. 2020) in Rust: palettes, tokenizing, evaluation and model directories.
///
/// A model is a directory in HuggingFace's layout (model.safetensors, config.json,
/// preprocessor_config.json) plus card.json; real HF ImageGPT checkpoints load unchanged.
/// Datasets are named by a spec: fashion-mnist:SPLIT (Debian's dataset-fashion-mnist),
/// fashion-mnist:DIR:SPLIT, idx:DIR:SPLIT, cifar:DIR:SPLIT or folder:DIR, with SPLIT train or test.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fit a k-means colour palette on a dataset's pixels and save it as preprocessor_config.json.
    Palette(PaletteArgs),
    /// Print the palette token ids of images, as a model reads them.
    Tokenize(TokenizeArgs),
    /// Mean negative log-likelihood (nats and bits per token) of token sequences or a dataset split.
    Eval(EvalArgs),
    /// Write a randomly initialised model directory for a palette and a preset size.
    Init(InitArgs),
}

#[derive(Args)]
struct PaletteArgs {
    /// Dataset spec, e.g. fashion-mnist:train.
    #[arg(long)]
    data: DataSpec,
    /// Number of colours K.
    #[arg(short = 'k', long, default_value_t = 16)]
    colors: usize,
    /// 1 (grey) or 3 (RGB); default: the dataset's own.
    #[arg(long)]
    channels: Option<usize>,
    /// Image size the palette is for, as HEIGHTxWIDTH; default: the dataset's first image.
    #[arg(long, value_parser = parse_size)]
    size: Option<(usize, usize)>,
    /// Pixels sampled (with replacement) to fit on.
    #[arg(long, default_value_t = 200_000)]
    sample: usize,
    /// Random seed: the same seed and data give the same palette.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Use only the first N images.
    #[arg(long)]
    limit: Option<usize>,
    /// Output directory.
    #[arg(short, long)]
    output: PathBuf,
}

#[derive(Args)]
struct TokenizeArgs {
    /// Model or palette directory.
    #[arg(long)]
    model: PathBuf,
    /// Image files (PNG, JPEG, GIF, BMP, WebP); resized to the model's size when needed.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Print one JSON array of id arrays instead of a line per image.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct EvalArgs {
    /// Model directory.
    #[arg(long)]
    model: PathBuf,
    /// JSON file holding an array of token-id arrays (without SOS).
    #[arg(long, conflicts_with = "data", required_unless_present = "data")]
    ids: Option<PathBuf>,
    /// Dataset spec to tokenize and score, e.g. fashion-mnist:test.
    #[arg(long)]
    data: Option<DataSpec>,
    /// Score only the first N sequences.
    #[arg(long)]
    limit: Option<usize>,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Print {"nll_nats", "bits_per_token", "count", "tokens"} as JSON.
    #[arg(long)]
    json: bool,
    #[arg(long, value_enum, default_value_t)]
    device: DeviceKind,
}

#[derive(Args)]
struct InitArgs {
    /// Model size: tiny, small (256 wide, 8 layers), igpt-s (512×24), igpt-m, igpt-l.
    #[arg(long, default_value = "small")]
    preset: String,
    /// Palette directory (from `igpt palette`) or a model directory to take the palette from.
    #[arg(long)]
    palette: PathBuf,
    /// Seed for the random weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Store the weights as f16 (half the size; the model still computes in f32).
    #[arg(long)]
    f16: bool,
    /// Output directory.
    #[arg(short, long)]
    output: PathBuf,
    #[arg(long, value_enum, default_value_t)]
    device: DeviceKind,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Palette(args) => palette(args),
        Command::Tokenize(args) => tokenize(args),
        Command::Eval(args) => {
            let device = args.device;
            run_on(device, args)
        }
        Command::Init(args) => {
            let device = args.device;
            run_on(device, args)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let (h, w) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("`{s}` is not HEIGHTxWIDTH"))?;
    let parse = |v: &str| v.trim().parse::<usize>().ok().filter(|&n| n > 0);
    match (parse(h), parse(w)) {
        (Some(h), Some(w)) => Ok((h, w)),
        _ => Err(format!("`{s}` is not HEIGHTxWIDTH with positive numbers")),
    }
}

fn progress(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{what} {{bar:40}} {{pos}}/{{len}} [{{elapsed_precise}} < {{eta_precise}}]"
        ))
        .expect("valid template"),
    );
    bar
}

fn load_data(spec: &DataSpec, limit: Option<usize>) -> anyhow::Result<igpt::data::Dataset> {
    let mut data = spec.load()?;
    if let Some(n) = limit {
        data.truncate(n);
    }
    Ok(data)
}

fn palette(args: PaletteArgs) -> anyhow::Result<()> {
    if args.colors == 0 || args.colors > u16::MAX as usize {
        bail!("-k must be between 1 and 65535");
    }
    if args.channels.is_some_and(|c| c != 1 && c != 3) {
        bail!("--channels must be 1 or 3");
    }
    let data = load_data(&args.data, args.limit)?;
    let first = &data.images[0];
    let channels = args.channels.unwrap_or(first.channels);
    let (height, width) = args.size.unwrap_or((first.height, first.width));
    let options = FitOptions {
        sample: args.sample,
        seed: args.seed,
        ..Default::default()
    };
    let palette = Palette::fit(&data.images, args.colors, channels, &options)?;
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("cannot create {}", args.output.display()))?;
    let path = args.output.join(store::PREPROCESSOR_FILE);
    std::fs::write(&path, palette.to_preprocessor_json(height, width))
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "fitted {} colours ({channels} channel{}) on {} pixels of {} images from {}; wrote {}",
        palette.len(),
        if channels == 1 { "" } else { "s" },
        options.sample.max(args.colors),
        data.len(),
        args.data,
        path.display()
    );
    Ok(())
}

fn tokenize(args: TokenizeArgs) -> anyhow::Result<()> {
    let tokenizer = store::read_tokenizer(&args.model)?;
    let mut all = Vec::new();
    for path in &args.images {
        let image = Raster::open(path, tokenizer.palette.channels())?;
        let ids = tokenizer.tokenize(&image);
        if !args.json {
            let text: Vec<String> = ids.iter().map(u16::to_string).collect();
            println!("{}: {}", path.display(), text.join(" "));
        }
        all.push(ids);
    }
    if args.json {
        println!("{}", serde_json::to_string(&all)?);
    }
    Ok(())
}

impl BackendJob for EvalArgs {
    type Output = ();

    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<()> {
        let stored = store::load_dir::<B>(&self.model, &device)?;
        let mut sequences = match (&self.ids, &self.data) {
            (Some(path), _) => read_ids(path)?,
            (None, Some(spec)) => {
                let data = load_data(spec, self.limit)?;
                let tokenizer = stored.tokenizer();
                data.images
                    .iter()
                    .map(|im| tokenizer.tokenize(im))
                    .collect()
            }
            (None, None) => bail!("give --ids FILE or --data SPEC"),
        };
        if let Some(n) = self.limit {
            sequences.truncate(n);
        }
        let bar = progress(sequences.len(), "eval");
        if self.json {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        let nll = sequence_nll(&stored.model, &sequences, self.batch, |n| bar.inc(n as u64))?;
        bar.finish_and_clear();
        print_nll(&nll, self.json)
    }
}

fn read_ids(path: &Path) -> anyhow::Result<Vec<Vec<u16>>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: expected a JSON array of arrays of token ids (0..65535)",
            path.display()
        )
    })
}

fn print_nll(nll: &Nll, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(nll)?);
    } else {
        println!(
            "{:.6} nats/token, {:.6} bits/token over {} sequences ({} tokens)",
            nll.nll_nats, nll.bits_per_token, nll.count, nll.tokens
        );
    }
    Ok(())
}

impl BackendJob for InitArgs {
    type Output = ();

    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<()> {
        let args = self;
        let tokenizer = store::read_tokenizer(&args.palette)?;
        let n_positions = tokenizer.height * tokenizer.width;
        let config = ImageGptConfig::preset(&args.preset, tokenizer.palette.len(), n_positions)?;
        B::seed(&device, args.seed);
        let card = ModelCard {
            name: Some(format!("{}-init", args.preset)),
            image_height: tokenizer.height,
            image_width: tokenizer.width,
            channels: tokenizer.palette.channels(),
            ..Default::default()
        };
        let stored = StoredModel::<B> {
            model: config.init(&device),
            config: config.clone(),
            palette: tokenizer.palette,
            card,
        };
        let precision = if args.f16 {
            WeightPrecision::F16
        } else {
            WeightPrecision::F32
        };
        stored.save_dir(&args.output, precision)?;
        println!(
            "wrote {} ({} preset, {:.2}M parameters, {}x{} images, {} colours)",
            args.output.display(),
            args.preset,
            config.num_params() as f64 / 1e6,
            tokenizer.height,
            tokenizer.width,
            config.n_colors
        );
        Ok(())
    }
}
