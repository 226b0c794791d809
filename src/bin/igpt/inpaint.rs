//! `igpt inpaint`: fill a region of an image several ways with a BERT model (see `igpt::inpaint`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use burn::tensor::backend::Backend;
use clap::{Args, ValueEnum};
use igpt::Raster;
use igpt::inpaint::{FillOrder, inpaint};
use igpt::store::{self, WEIGHTS_FILE};
use indicatif::{ProgressBar, ProgressStyle};

use crate::backend::BackendJob;
use crate::image_source::ImageSource;
use crate::sample::{SamplingArgs, write_grid};

/// `--order`'s values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Order {
    Random,
    Confident,
}

#[derive(Args)]
pub struct InpaintArgs {
    /// Model directory (a BERT model: `igpt train --objective bert`).
    #[arg(long)]
    model: PathBuf,
    /// The weights file in the model directory: e.g. model.q6.safetensors, the light form the page
    /// downloads (`igpt quantize`).
    #[arg(long, default_value = WEIGHTS_FILE)]
    weights: String,
    /// The image to fill.
    #[command(flatten)]
    source: ImageSource,
    /// The region to fill: a rectangle X,Y,WIDTH,HEIGHT in the model's pixels (0,0 is the top
    /// left), or a mask image (resized to the model's size; its bright pixels are filled).
    #[arg(long, value_name = "RECT|MASK.png")]
    mask: String,
    /// Which hidden pixel each pass fills: one at random (ancestral sampling in a random order), or
    /// the one whose likeliest colour is most probable (biased towards the commonest colour: on
    /// Fashion-MNIST, the black background).
    #[arg(long, value_enum, default_value_t = Order::Random)]
    order: Order,
    /// Number of fills, drawn as one batch.
    #[arg(short = 'n', long, default_value_t = 8)]
    count: usize,
    /// Also print one JSON line: the seed, the hole's pixels (raster indices) and every fill's token
    /// ids.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

impl BackendJob for InpaintArgs {
    type Output = ();

    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<()> {
        if self.count == 0 {
            bail!("-n must be at least 1");
        }
        let stored = store::load_dir_with::<B>(&self.model, &self.weights, &device)?;
        let tokenizer = stored.tokenizer();
        let (width, height) = (tokenizer.width, tokenizer.height);
        let hole = parse_mask(&self.mask, width, height)?;
        let original = self.source.load(tokenizer.palette.channels())?;
        let ids = tokenizer.tokenize(&original);
        let seed = self.sampling.seed();
        let size = hole.iter().filter(|&&h| h).count();
        let bar = ProgressBar::new(size as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "filling {bar:40} {pos}/{len} pixels [{elapsed_precise} < {eta_precise}]",
            )
            .expect("valid template"),
        );
        let began = Instant::now();
        let fills = inpaint(
            &stored.model,
            &ids,
            &hole,
            self.count,
            (self.sampling.config(), seed),
            match self.order {
                Order::Random => FillOrder::Random,
                Order::Confident => FillOrder::Confident,
            },
            |fill| bar.set_position(fill.filled() as u64),
        )?;
        bar.finish_and_clear();
        if self.json {
            let holes: Vec<usize> = (0..hole.len()).filter(|&p| hole[p]).collect();
            let line = serde_json::json!({ "seed": seed, "hole": holes, "fills": fills });
            println!("{line}");
        }
        eprintln!(
            "filled {size} pixels of {} images in {:.2}s (one pass per pixel)",
            self.count,
            began.elapsed().as_secs_f64()
        );
        // As `complete` draws it: what the model reads, the part it is given, then its fills.
        let shown = tokenizer.detokenize(&ids)?;
        let mut figure = vec![shown.clone(), with_hole(&shown, &hole)];
        for fill in &fills {
            figure.push(tokenizer.detokenize(fill)?);
        }
        write_grid(&figure, figure.len(), &self.sampling, seed)
    }
}

/// The pixels to fill of a `width` × `height` image: from `X,Y,W,H` or a mask image file.
fn parse_mask(text: &str, width: usize, height: usize) -> anyhow::Result<Vec<bool>> {
    let numbers: Option<Vec<usize>> = text.split(',').map(|p| p.trim().parse().ok()).collect();
    if let Some(rect) = numbers.filter(|n| n.len() == 4) {
        let (x, y, w, h) = (rect[0], rect[1], rect[2], rect[3]);
        if w == 0 || h == 0 || x + w > width || y + h > height {
            bail!(
                "the rectangle {x},{y},{w},{h} must be non-empty and lie inside the {width}x{height} image"
            );
        }
        return Ok((0..width * height)
            .map(|p| (x..x + w).contains(&(p % width)) && (y..y + h).contains(&(p / width)))
            .collect());
    }
    let path = PathBuf::from(text);
    if !path.exists() {
        bail!("--mask takes X,Y,WIDTH,HEIGHT or a mask image file; {text} is neither");
    }
    let mask = Raster::open(&path, 1)
        .with_context(|| format!("reading the mask {text}"))?
        .resized(width, height);
    Ok(mask.pixels.iter().map(|&v| v > 127).collect())
}

/// The image with its hole painted mid-grey.
fn with_hole(image: &Raster, hole: &[bool]) -> Raster {
    let mut shown = image.clone();
    let c = shown.channels;
    for (pixel, _) in hole.iter().enumerate().filter(|(_, h)| **h) {
        shown.pixels[pixel * c..(pixel + 1) * c].fill(128);
    }
    shown
}
