//! `igpt inspect`: what the model makes of one image (see `igpt::inspect`): how surprising each pixel
//! is, what it expected at one pixel, where that pixel looked, what each layer already knew (the
//! logit lens) and which parts of the model wrote its colour's logit (direct logit attribution). The
//! web page's inspector shows the same numbers. For a BERT model it shows each pixel's surprise when
//! hidden.

use std::path::PathBuf;

use anyhow::Context;
use burn::tensor::backend::Backend;
use clap::Args;
use igpt::analysis::explain::Explanation;
use igpt::inspect::ablation::{self, Ablated, AblationReport};
use igpt::inspect::ablation_means::{AblationMeans, MEANS_FILE};
use igpt::inspect::intervention::Change;
use igpt::inspect::masked::masked_surprise;
use igpt::inspect::patching::{self, PatchReport, Region};
use igpt::inspect::{Inspected, Report, diverging, heat};
use igpt::inspect::{floats, intervention};
use igpt::pixels::raster::tile;
use igpt::store::{self, StoredModel, WEIGHTS_FILE};
use igpt::{Raster, Tokenizer};

use crate::backend::{BackendJob, DeviceKind};
use crate::image_source::ImageSource;

#[derive(Args)]
pub struct InspectArgs {
    /// Model directory.
    #[arg(long)]
    model: PathBuf,
    /// The weights file in the model directory: e.g. model.q6.safetensors, the light form the page
    /// downloads (`igpt quantize`).
    #[arg(long, default_value = WEIGHTS_FILE)]
    weights: String,
    /// The image (resized to the model's size and quantised to its palette).
    #[command(flatten)]
    source: ImageSource,
    /// The pixel to look at, ROW,COL counted from 0 at the top left. Default: the centre.
    #[arg(long, value_parser = parse_pixel)]
    pixel: Option<[usize; 2]>,
    /// Print one JSON line: bits_per_pixel, mean_bits, pixel, top, actual, attention, lens (the logit
    /// lens at the pixel, per layer), lens_bits_per_pixel (per layer), attribution (the true
    /// colour's logit at the pixel and its parts) and rollout (attention rollout from the pixel).
    #[arg(long)]
    json: bool,
    /// Also write a PNG panel: the image, its surprise map, the pixel's attention in each layer and
    /// its attention rollout; below, the logit lens's surprise map of each layer (one scale for all).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Also run the image with one part silenced (zero ablation): `head:LAYER.HEAD`,
    /// `attention:LAYER` or `mlp:LAYER` (from 0). Prints what it costs; --json adds `ablation`.
    #[arg(long, value_name = "PART")]
    ablate: Option<Ablated>,
    /// With --ablate: replace the part's output by its mean over a dataset instead of zero (mean
    /// ablation; the means come from `igpt ablation-means`, in the model directory).
    #[arg(long, requires = "ablate")]
    mean: bool,
    /// Also run the image with a region of its hidden states taken from this image's run
    /// (activation patching, at --patch-layer over --patch-region). Prints what it changes; --json
    /// adds `patching`.
    #[arg(long, value_name = "IMAGE", requires_all = ["patch_layer", "patch_region"])]
    patch_from: Option<PathBuf>,
    /// The layer of the stream patched: 0 the embeddings, 1 the first block's output, and so on.
    #[arg(long, value_name = "LAYER", requires = "patch_from")]
    patch_layer: Option<usize>,
    /// The pixels patched, TOP,LEFT,BOTTOM,RIGHT (corners included, from 0); a pixel's hidden state
    /// is the one that predicts it.
    #[arg(long, value_name = "REGION", requires = "patch_from")]
    patch_region: Option<Region>,
    /// Size of one image pixel in the panel.
    #[arg(long, default_value_t = 4)]
    scale: usize,
    #[arg(long, value_enum, default_value_t)]
    pub device: DeviceKind,
}

fn parse_pixel(text: &str) -> Result<[usize; 2], String> {
    let parsed = text
        .split_once(',')
        .and_then(|(r, c)| Some([r.trim().parse().ok()?, c.trim().parse().ok()?]));
    parsed.ok_or_else(|| "expected ROW,COL, two whole numbers such as 14,14".into())
}

impl BackendJob for InspectArgs {
    type Output = ();

    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<()> {
        let stored = store::load_dir_with::<B>(&self.model, &self.weights, &device)?;
        let tokenizer = stored.tokenizer();
        let image = self.source.load(tokenizer.palette.channels())?;
        let ids = tokenizer.tokenize(&image);
        if !stored.model.objective().is_causal() {
            return self.masked(&stored, &ids);
        }
        let (inspected, label) = Inspected::labelled(&stored.model, &ids, tokenizer.width)?;
        let pixel = self
            .pixel
            .unwrap_or([tokenizer.height / 2, tokenizer.width / 2]);
        let report = inspected.report(pixel)?;
        let ablation = match self.ablate {
            Some(part) => {
                let means = if self.mean {
                    Some(AblationMeans::read(&self.model)?.with_context(|| {
                        format!(
                            "{} has no {MEANS_FILE}: run igpt ablation-means --model {} --data SPEC first",
                            self.model.display(),
                            self.model.display()
                        )
                    })?)
                } else {
                    None
                };
                let silenced = ablation::silenced(&stored.model, part, means.as_ref())?;
                let bits = floats(intervention::bits_per_pixel(&silenced, &ids, None).into_data())?;
                Some(AblationReport::new(
                    part,
                    self.mean,
                    bits,
                    &report.bits_per_pixel,
                ))
            }
            None => None,
        };
        let patching = match (&self.patch_from, self.patch_layer, self.patch_region) {
            (Some(path), Some(layer), Some(region)) => {
                let source =
                    tokenizer.tokenize(&igpt::Raster::open(path, tokenizer.palette.channels())?);
                let patch =
                    patching::patch_from(&stored.model, &source, layer, region, tokenizer.width)?;
                let bits = intervention::bits_per_pixel(&stored.model, &ids, Some(&patch));
                Some(PatchReport::new(
                    layer,
                    region,
                    floats(bits.into_data())?,
                    &report.bits_per_pixel,
                    tokenizer.width,
                ))
            }
            _ => None,
        };
        if self.json {
            let mut line = serde_json::to_value(&report)?;
            if let Some(ablation) = &ablation {
                line["ablation"] = serde_json::to_value(ablation)?;
            }
            if let Some(patching) = &patching {
                line["patching"] = serde_json::to_value(patching)?;
            }
            if let Some(label) = &label {
                line["label"] = label.to_json(&stored.labels)?;
            }
            println!("{line}");
        } else {
            describe(&self, &stored, &report)?;
            if let Some(label) = &label {
                describe_label(label, &stored.labels, tokenizer.width);
            }
            if let Some(ablation) = &ablation {
                let words = format!("without {} ({} ablation)", ablation.part, ablation.mode);
                describe_change(&words, &ablation.change, tokenizer.width);
            }
            if let (Some(patching), Some(path)) = (&patching, &self.patch_from) {
                let words = format!(
                    "with {} of {} patched in at layer {}",
                    patching.region,
                    path.display(),
                    patching.layer
                );
                describe_change(&words, &patching.change, tokenizer.width);
                println!(
                    "  outside the region: {:+.4} bits per pixel on average",
                    patching.mean_delta_outside
                );
            }
        }
        if let Some(path) = &self.output {
            let scale = self.scale.clamp(1, 64);
            let panel = panel(&inspected, &tokenizer, &report, label.as_ref(), scale)?;
            std::fs::write(path, panel.to_png()?)
                .with_context(|| format!("cannot write {}", path.display()))?;
            if !self.json {
                println!("wrote {}", path.display());
            }
        }
        Ok(())
    }
}

impl InspectArgs {
    /// A BERT model's inspection: each pixel's surprise when hidden ([`masked_surprise`]), in words
    /// or JSON, and a panel of the image and its surprise map.
    fn masked<B: Backend>(&self, stored: &StoredModel<B>, ids: &[u16]) -> anyhow::Result<()> {
        if self.ablate.is_some() || self.patch_from.is_some() || self.pixel.is_some() {
            anyhow::bail!(
                "for a BERT model, inspect shows each pixel's surprise when hidden; --pixel, --ablate and --patch-from are for autoregressive models"
            );
        }
        let tokenizer = stored.tokenizer();
        let surprise = masked_surprise(&stored.model, ids, tokenizer.width, 0)?;
        if self.json {
            println!("{}", serde_json::to_string(&surprise)?);
        } else {
            println!(
                "{}: {:.4} bits per pixel on average when hidden, over its {} pixels, each hidden once in {} passes ({})",
                self.source.describe(),
                surprise.mean_bits,
                surprise.bits_per_pixel.len(),
                surprise.passes,
                self.model.display()
            );
        }
        if let Some(path) = &self.output {
            let (w, h) = (tokenizer.width, tokenizer.height);
            let bits = &surprise.bits_per_pixel;
            let max_bits = bits.iter().copied().fold(1e-6, f32::max);
            let panels: Vec<Raster> = [
                tokenizer.detokenize(ids)?.with_channels(3),
                heatmap(w, h, |i| Some(bits[i] / max_bits)),
            ]
            .iter()
            .map(|p| p.upscaled(self.scale.clamp(1, 64)))
            .collect();
            let panel = tile(&panels, 2, self.scale.clamp(1, 64))?;
            std::fs::write(path, panel.to_png()?)
                .with_context(|| format!("cannot write {}", path.display()))?;
            if !self.json {
                println!("wrote {}", path.display());
            }
        }
        Ok(())
    }
}

/// The report in words.
fn describe<B: Backend>(
    args: &InspectArgs,
    stored: &StoredModel<B>,
    report: &Report,
) -> anyhow::Result<()> {
    let tokenizer = stored.tokenizer();
    let colour = |id: u16| -> anyhow::Result<String> {
        let rgb = tokenizer.palette.detokenize(&[id], 1, 1)?.with_channels(3);
        Ok(format!(
            "#{:02x}{:02x}{:02x}",
            rgb.pixels[0], rgb.pixels[1], rgb.pixels[2]
        ))
    };
    let [row, col] = report.pixel;
    println!(
        "{}: {:.4} bits per pixel on average over its {} pixels ({})",
        args.source.describe(),
        report.mean_bits,
        report.bits_per_pixel.len(),
        args.model.display()
    );
    let actual = report.actual;
    println!(
        "pixel {row},{col}: {:.3} bits; its colour {} (id {}) had p = {:.4}, rank {}",
        report.bits_per_pixel[row * tokenizer.width + col],
        colour(actual.id)?,
        actual.id,
        actual.p,
        actual.rank
    );
    let top: Vec<String> = report
        .top
        .iter()
        .map(|c| Ok(format!("{} {:.4}", colour(c.id)?, c.p)))
        .collect::<anyhow::Result<_>>()?;
    println!("  likeliest: {}", top.join(", "));
    for (layer, heads) in report.attention.iter().enumerate() {
        let mean = mean_over_heads(heads);
        let (strongest, weight) = mean
            .iter()
            .enumerate()
            .skip(1)
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or((0, 0.0), |(i, &w)| (i - 1, w));
        println!(
            "  layer {layer}: start token {:.3}; strongest earlier pixel {},{} ({weight:.3}), mean over {} heads",
            mean[0],
            strongest / tokenizer.width,
            strongest % tokenizer.width,
            heads.len()
        );
    }
    println!("  logit lens (each layer's states read by the final norm and head; 0 = embeddings):");
    for lens in &report.lens {
        let bits = &report.lens_bits_per_pixel[lens.layer];
        let mean = bits.iter().map(|&b| f64::from(b)).sum::<f64>() / bits.len() as f64;
        println!(
            "  layer {}: {mean:.4} bits per pixel; here its colour p = {:.4}, rank {}; likeliest {} {:.4}",
            lens.layer,
            lens.actual.p,
            lens.actual.rank,
            colour(lens.top[0].id)?,
            lens.top[0].p
        );
    }
    let rollout = &report.rollout;
    let mut earlier: Vec<(usize, f32)> = rollout.iter().copied().enumerate().skip(1).collect();
    earlier.sort_by(|a, b| b.1.total_cmp(&a.1));
    let strongest: Vec<String> = earlier
        .iter()
        .take(3)
        .map(|&(i, w)| {
            format!(
                "{},{} ({w:.3})",
                (i - 1) / tokenizer.width,
                (i - 1) % tokenizer.width
            )
        })
        .collect();
    println!(
        "  attention rollout: start token {:.3}; most from pixels {}",
        rollout[0],
        strongest.join(", ")
    );
    let attribution = &report.attribution;
    let sum: f32 = attribution.parts.iter().map(|p| p.logit).sum();
    let mut parts: Vec<_> = attribution.parts.iter().collect();
    parts.sort_by(|a, b| b.logit.abs().total_cmp(&a.logit.abs()));
    let largest: Vec<String> = parts
        .iter()
        .take(6)
        .map(|p| format!("{} {:+.3}", p.name, p.logit))
        .collect();
    println!(
        "  its colour's logit {:.3} (the parts sum to {sum:.3}); largest parts: {}",
        attribution.logit,
        largest.join(", ")
    );
    Ok(())
}

/// A fine-tuned model's label of the image, and the pixels that pushed it most either way.
fn describe_label(label: &Explanation, names: &[String], width: usize) {
    let name = |i: usize| {
        names
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("class {i}"))
    };
    let top: Vec<String> = label
        .top(3)
        .iter()
        .map(|&(i, p)| format!("{} {:.1}%", name(i), 100.0 * p))
        .collect();
    println!("  labelled {} ({})", name(label.class), top.join(", "));
    let by_share = |a: &(usize, &f32), b: &(usize, &f32)| a.1.total_cmp(b.1);
    let shares = label.pixel_shares.iter().enumerate();
    let at = |i: usize| format!("{},{}", i / width, i % width);
    if let Some((most, toward)) = shares.clone().max_by(by_share) {
        print!(
            "  pixel {} pushed it most ({toward:+.3} of its logit above the mean class's)",
            at(most)
        );
        match shares.min_by(by_share) {
            Some((least, &away)) if away < 0.0 => {
                println!(", pixel {} most against it ({away:+.3})", at(least))
            }
            _ => println!("; none pulled it away"),
        }
    }
}

/// What an intervention (`words`: an ablation, a patch) changed, in words.
fn describe_change(words: &str, change: &Change, width: usize) {
    let (worst, delta) = change
        .delta_bits
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or((0, 0.0), |(i, &d)| (i, d));
    println!(
        "{words}: {:+.4} bits per pixel on average; pixel {},{} lost most ({delta:+.3} bits)",
        change.mean_delta,
        worst / width,
        worst % width
    );
}

fn mean_over_heads(heads: &[Vec<f32>]) -> Vec<f32> {
    let mut mean = vec![0.0; heads.first().map_or(0, Vec::len)];
    for head in heads {
        for (m, w) in mean.iter_mut().zip(head) {
            *m += w / heads.len() as f32;
        }
    }
    mean
}

/// The image as the model sees it, its surprise map, then the selected pixel's mean attention in
/// each layer (positions after it, which it cannot see, in dark grey), side by side; a fine-tuned
/// model's label then adds which pixels moved it and what reading each did, as the page draws them
/// (red toward the label, blue away). The selected pixel is outlined in each.
fn panel(
    inspected: &Inspected,
    tokenizer: &Tokenizer,
    report: &Report,
    label: Option<&Explanation>,
    scale: usize,
) -> anyhow::Result<Raster> {
    let (w, h) = (tokenizer.width, tokenizer.height);
    let seen = tokenizer.detokenize(&inspected.ids)?.with_channels(3);
    let max_bits = report.bits_per_pixel.iter().copied().fold(1e-6, f32::max);
    let surprise = heatmap(w, h, |i| Some(report.bits_per_pixel[i] / max_bits));
    let selected = report.pixel[0] * w + report.pixel[1];
    let mut panels = vec![seen, surprise];
    for heads in &report.attention {
        let mean = mean_over_heads(heads);
        // Key position j > 0 holds pixel j - 1; the square root keeps weak weights visible.
        let peak = mean[1..].iter().copied().fold(1e-9, f32::max);
        panels.push(heatmap(w, h, |i| {
            (i < selected).then(|| (mean[i + 1] / peak).sqrt())
        }));
    }
    // The rollout, drawn as attention is: position i + 1 holds pixel i.
    let flow = &report.rollout;
    let peak = flow[1..].iter().copied().fold(1e-9, f32::max);
    panels.push(heatmap(w, h, |i| {
        (i < selected).then(|| (flow[i + 1] / peak).sqrt())
    }));
    if let Some(label) = label {
        for values in [label.pixel_shares.clone(), label.share_changes()] {
            // Each scaled by its largest magnitude, as the page scales them.
            let peak = values.iter().fold(1e-9f32, |m, v| m.max(v.abs()));
            let pixels = values.iter().flat_map(|v| diverging(v / peak)).collect();
            panels.push(Raster::new(w, h, 3, pixels)?);
        }
    }
    let columns = panels.len();
    // The next row: the logit lens's surprise in every layer, on one scale.
    let lens = &report.lens_bits_per_pixel;
    let lens_max = lens.iter().flatten().copied().fold(1e-6, f32::max);
    panels.extend(
        lens.iter()
            .map(|bits| heatmap(w, h, |i| Some(bits[i] / lens_max))),
    );
    let panels: Vec<Raster> = panels
        .into_iter()
        .map(|p| outline(p.upscaled(scale), report.pixel, scale))
        .collect();
    Ok(tile(&panels, columns, scale)?)
}

/// A `w`×`h` RGB image coloured by `value(pixel)` in 0..=1 (black → purple → orange → pale yellow);
/// `None` is dark grey.
fn heatmap(w: usize, h: usize, value: impl Fn(usize) -> Option<f32>) -> Raster {
    let mut pixels = Vec::with_capacity(w * h * 3);
    for i in 0..w * h {
        pixels.extend(value(i).map_or([48, 48, 48], heat));
    }
    Raster::new(w, h, 3, pixels).expect("w*h*3 bytes")
}

/// Draws a one-pixel cyan square around image pixel `[row, col]` of an image upscaled by `scale`.
fn outline(mut image: Raster, [row, col]: [usize; 2], scale: usize) -> Raster {
    let (x0, y0) = (col * scale, row * scale);
    let (x1, y1) = (x0 + scale - 1, y0 + scale - 1);
    for y in y0..=y1 {
        for x in x0..=x1 {
            if x == x0 || x == x1 || y == y0 || y == y1 {
                let at = (y * image.width + x) * 3;
                image.pixels[at..at + 3].copy_from_slice(&[0, 255, 255]);
            }
        }
    }
    image
}
