//! `igpt sample` and `igpt complete`: draw images from a model and write them as an upscaled PNG grid.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use burn::tensor::backend::Backend;
use clap::Args;
use igpt::model::Workload;
use igpt::pixels::raster::tile;
use igpt::sample::{SamplingConfig, generate};
use igpt::store::{self, StoredModel};
use igpt::{Raster, Tokenizer};
use indicatif::{ProgressBar, ProgressStyle};

use crate::backend::{BackendJob, DeviceKind};
use crate::image_source::ImageSource;

/// How tokens are drawn, shared by `sample` and `complete`.
#[derive(Args)]
pub struct SamplingArgs {
    /// Softmax temperature; 0 is greedy.
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// Draw only from the K most likely colours.
    #[arg(long)]
    top_k: Option<usize>,
    /// Draw only from the most likely colours whose probability adds up to P.
    #[arg(long)]
    top_p: Option<f32>,
    /// Random seed: the same seed and model give the same images on every device (where their logits
    /// pick the same colours). Default: a fresh one, printed.
    #[arg(long)]
    seed: Option<u64>,
    /// Pixel size of one image pixel in the output PNG.
    #[arg(long, default_value_t = 4)]
    scale: usize,
    /// Output PNG.
    #[arg(short, long)]
    output: PathBuf,
    #[arg(long, value_enum, default_value_t)]
    pub device: DeviceKind,
}

impl SamplingArgs {
    pub(crate) fn config(&self) -> SamplingConfig {
        SamplingConfig {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
        }
    }

    pub(crate) fn seed(&self) -> u64 {
        self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        })
    }
}

#[derive(Args)]
pub struct SampleArgs {
    /// Model directory.
    #[arg(long)]
    model: PathBuf,
    /// Number of images, drawn as one batch.
    #[arg(short = 'n', long, default_value_t = 16)]
    count: usize,
    /// Images per grid row; default: a square-ish grid.
    #[arg(long)]
    columns: Option<usize>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

#[derive(Args)]
pub struct CompleteArgs {
    /// Model directory.
    #[arg(long)]
    model: PathBuf,
    /// The image to complete.
    #[command(flatten)]
    source: ImageSource,
    /// Image rows given to the model (from the top); default: half the image.
    #[arg(long)]
    rows: Option<usize>,
    /// Number of completions, drawn as one batch.
    #[arg(short = 'n', long, default_value_t = 8)]
    count: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

impl BackendJob for SampleArgs {
    type Output = ();

    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<()> {
        let stored = load_for_sampling::<B>(&self.model, self.count, &device)?;
        let seed = self.sampling.seed();
        let images = draw(&stored, vec![vec![]; self.count], &self.sampling, seed)?;
        let columns = self
            .columns
            .unwrap_or_else(|| (self.count as f64).sqrt().ceil() as usize);
        write_grid(&images, columns, &self.sampling, seed)
    }
}

impl BackendJob for CompleteArgs {
    type Output = ();

    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<()> {
        let stored = load_for_sampling::<B>(&self.model, self.count, &device)?;
        let tokenizer = stored.tokenizer();
        let channels = tokenizer.palette.channels();
        let original = self.source.load(channels)?;
        let rows = self.rows.unwrap_or(tokenizer.height / 2);
        if rows == 0 || rows >= tokenizer.height {
            bail!("--rows must be between 1 and {}", tokenizer.height - 1);
        }
        let ids = tokenizer.tokenize(&original);
        let prefix = ids[..rows * tokenizer.width].to_vec();
        let seed = self.sampling.seed();
        let completions = draw(
            &stored,
            vec![prefix.clone(); self.count],
            &self.sampling,
            seed,
        )?;
        // The figure of the paper: what the model sees, the part it is given, then its completions.
        let mut figure = vec![
            tokenizer.detokenize(&ids)?,
            given_part(&tokenizer, &prefix)?,
        ];
        figure.extend(completions);
        write_grid(&figure, figure.len(), &self.sampling, seed)
    }
}

/// The model in `dir`, once `count` images are known to fit one sampling batch (checked before the
/// prefixes, one per image, are allocated).
fn load_for_sampling<B: Backend>(
    dir: &Path,
    count: usize,
    device: &B::Device,
) -> anyhow::Result<StoredModel<B>> {
    if count == 0 {
        bail!("-n must be at least 1");
    }
    let stored = store::load_dir::<B>(dir, device)?;
    stored.model.check_batch(count, Workload::Sampling)?;
    Ok(stored)
}

/// Generates with a progress bar (read back once per image row) and returns the images.
fn draw<B: Backend>(
    stored: &StoredModel<B>,
    prefixes: Vec<Vec<u16>>,
    sampling: &SamplingArgs,
    seed: u64,
) -> anyhow::Result<Vec<Raster>> {
    let tokenizer = stored.tokenizer();
    let (batch, start) = (prefixes.len(), prefixes[0].len());
    let bar = ProgressBar::new((tokenizer.height * tokenizer.width - start) as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "sampling {bar:40} {pos}/{len} tokens {msg} [{elapsed_precise} < {eta_precise}]",
        )
        .expect("valid template"),
    );
    let began = Instant::now();
    let sequences = generate(
        &stored.model,
        prefixes,
        sampling.config(),
        seed,
        tokenizer.width,
        |seqs, _| {
            let done = seqs[0].len() - start;
            bar.set_position(done as u64);
            let rate = (done * batch) as f64 / began.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("({rate:.0} tokens/s over {batch} images)"));
        },
    )?;
    bar.finish_and_clear();
    let seconds = began.elapsed().as_secs_f64();
    let drawn = (sequences[0].len() - start) * batch;
    eprintln!(
        "drew {drawn} tokens in {seconds:.2}s ({:.0} tokens/s, {:.1} steps/s)",
        drawn as f64 / seconds,
        (drawn / batch) as f64 / seconds
    );
    sequences
        .iter()
        .map(|ids| tokenizer.detokenize(ids).map_err(Into::into))
        .collect()
}

/// The given rows of an image, the rest painted mid-grey.
fn given_part(tokenizer: &Tokenizer, prefix: &[u16]) -> anyhow::Result<Raster> {
    let total = tokenizer.height * tokenizer.width;
    let padded: Vec<u16> = prefix
        .iter()
        .copied()
        .chain(std::iter::repeat_n(0, total - prefix.len()))
        .collect();
    let mut image = tokenizer.detokenize(&padded)?;
    let c = image.channels;
    image.pixels[prefix.len() * c..].fill(128);
    Ok(image)
}

pub(crate) fn write_grid(
    images: &[Raster],
    columns: usize,
    sampling: &SamplingArgs,
    seed: u64,
) -> anyhow::Result<()> {
    let scale = sampling.scale.max(1);
    let upscaled: Vec<Raster> = images.iter().map(|im| im.upscaled(scale)).collect();
    let grid = tile(&upscaled, columns, scale)?;
    write_png(&sampling.output, &grid)?;
    println!(
        "wrote {} ({} images, seed {seed})",
        sampling.output.display(),
        images.len()
    );
    Ok(())
}

fn write_png(path: &Path, image: &Raster) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(path, image.to_png()?)
        .with_context(|| format!("cannot write {}", path.display()))
}
