//! Preparing models: fit a palette, tokenize images, initialise a model directory.

use anyhow::{Context, bail};
use burn::tensor::backend::Backend;
use clap::Args;
use igpt::data::DataSpec;
use igpt::model::objective::Objective;
use igpt::pixels::palette::FitOptions;
use igpt::store::{self, StoredModel, WeightPrecision};
use igpt::{Palette, Raster, Tokenizer};
use std::path::PathBuf;

use crate::backend::{BackendJob, DeviceKind};
use crate::{load_data, parse_size};

#[derive(Args)]
pub struct PaletteArgs {
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
pub struct TokenizeArgs {
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
pub struct InitArgs {
    /// Model size: tiny, small (256 wide, 8 layers), igpt-s (512×24), igpt-m, igpt-l, or an explicit
    /// WIDTHxLAYERSxHEADS such as 128x2x1.
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
    pub device: DeviceKind,
}

pub fn palette(args: PaletteArgs) -> anyhow::Result<()> {
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
    let began = std::time::Instant::now();
    let palette = Palette::fit(&data.images, args.colors, channels, &options)?;
    let seconds = began.elapsed().as_secs_f64();
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
    let tokenizer = Tokenizer {
        palette,
        height,
        width,
    };
    println!(
        "{seconds:.1} s; quantisation error (RMSE, 0-255) on the first {} images: {:.2}",
        data.len().min(RMSE_IMAGES),
        quantisation_rmse(&tokenizer, &data.images[..data.len().min(RMSE_IMAGES)])?
    );
    Ok(())
}

/// Images the palette's quantisation error is measured on (enough for a stable figure, quickly).
const RMSE_IMAGES: usize = 1000;

/// Root-mean-square difference, in 0-255 units, between images (at the palette's size) and their
/// quantised versions.
fn quantisation_rmse(tokenizer: &Tokenizer, images: &[Raster]) -> anyhow::Result<f64> {
    let (mut sum, mut n) = (0f64, 0usize);
    for image in images {
        let image = image
            .with_channels(tokenizer.channels())
            .resized(tokenizer.width, tokenizer.height);
        let quantised = tokenizer.detokenize(&tokenizer.tokenize(&image))?;
        for (&a, &b) in image.pixels.iter().zip(&quantised.pixels) {
            sum += (a as f64 - b as f64).powi(2);
            n += 1;
        }
    }
    Ok((sum / n as f64).sqrt())
}

pub fn tokenize(args: TokenizeArgs) -> anyhow::Result<()> {
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

impl BackendJob for InitArgs {
    type Output = ();

    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<()> {
        let args = self;
        let tokenizer = store::read_tokenizer(&args.palette)?;
        let mut stored = StoredModel::<B>::fresh(
            &args.preset,
            tokenizer,
            Objective::Autoregressive,
            args.seed,
            &device,
        )?;
        stored.card.name = Some(format!("{}-init", args.preset));
        let (config, tokenizer) = (&stored.config, stored.tokenizer());
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
