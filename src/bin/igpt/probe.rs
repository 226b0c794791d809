//! `igpt probe`: how well each layer's features classify, by linear probes, beside two baselines run
//! through the same protocol (raw pixels, and the same architecture with random weights).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use burn::tensor::backend::Backend;
use clap::Args;
use igpt::analysis::features::{self, FeatureCache, Features};
use igpt::analysis::probe::{
    ConcatProbe, Labelled, ProbeConfig, ProbeReport, ProbeResult, concat_window, fingerprint,
    layer_result, probe, raw_pixels,
};
use igpt::data::DataSpec;
use igpt::store;
use igpt::{ImageGpt, ModelCard};
use rayon::prelude::*;

use crate::backend::{BackendJob, DeviceKind};
use crate::chart;
use crate::{LabelledSplits, progress, tokenize_images};

#[derive(Args)]
pub struct ProbeArgs {
    /// Model directory.
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    data: LabelledSplits,
    /// Layers to probe: `all`, or a list such as `0,3,8` (0 = the embeddings, l = block l's output).
    #[arg(long, default_value = "all")]
    layers: String,
    /// BERT models: average each image's features over K seeded masks (hiding pixels as in
    /// training; the paper found this helps BERT's probes). Without it no pixel is hidden.
    #[arg(long, value_name = "K")]
    masks: Option<usize>,
    /// Images per forward pass when computing features.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Where computed features and fitted probes are kept, keyed by the weights and the tokens fed
    /// (features) or by the features, labels and settings (probes): a second probe of the same model
    /// and data reads them instead of running the model, and every model of one shape shares its
    /// random-init twin's and the raw pixels' probes.
    #[arg(long, default_value_os_t = default_cache())]
    cache: PathBuf,
    /// Print one JSON line instead of the table.
    #[arg(long)]
    json: bool,
    /// Also probe N consecutive layers' features end to end, centred on the best layer (chosen on
    /// the held-out slice), with the random-weights twin's same layers beside it: the paper's
    /// iGPT-XL ImageNet probe read five layers.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(2..))]
    concat: Option<u16>,
    /// Write an SVG chart of test accuracy by layer, the baselines drawn as lines.
    #[arg(long, value_name = "FILE.svg")]
    chart: Option<PathBuf>,
    /// Also store the results in the model's card.json (and the chart beside it as probe.svg).
    #[arg(long)]
    record: bool,
    #[arg(long, value_enum, default_value_t)]
    pub device: DeviceKind,
}

fn default_cache() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    std::env::var_os("XDG_CACHE_HOME")
        .map_or_else(|| home.join(".cache"), PathBuf::from)
        .join("igpt/features")
}

impl BackendJob for ProbeArgs {
    type Output = ();

    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<()> {
        let stored = store::load_dir::<B>(&self.model, &device)?;
        let depth = stored.model.n_layer() + 1;
        let layers = parse_layers(&self.layers, depth)?;
        let tokenizer = stored.tokenizer();
        let (train, test) = self.data.load()?;
        if train.len() < 20 || test.is_empty() {
            bail!(
                "a probe needs at least 20 training images and one test image (got {} and {})",
                train.len(),
                test.len()
            );
        }
        let masks = self.masks.unwrap_or(0);
        if self.masks == Some(0) {
            bail!("--masks takes 1 or more");
        }
        if masks > 0 && stored.model.objective().is_causal() {
            bail!("--masks is for BERT models; this one is autoregressive");
        }
        let cache = FeatureCache::new(&self.cache);
        let describe = |spec: &DataSpec, limit: Option<usize>| match masks {
            0 => format!("{spec} limit {limit:?}"),
            k => format!("{spec} limit {limit:?} masks {k}"),
        };
        let keys = [
            describe(&self.data.train, self.data.train_limit),
            describe(&self.data.test, self.data.test_limit),
        ];
        let ids = [
            tokenize_images(&train.images, &tokenizer, "tokenizing train"),
            tokenize_images(&test.images, &tokenizer, "tokenizing test"),
        ];
        let features = |model: &ImageGpt<B>, name: &str| -> anyhow::Result<[Features; 2]> {
            let paths = cache.paths(model, &[(&keys[0], &ids[0]), (&keys[1], &ids[1])])?;
            let [train, test] = [0, 1].map(|i| {
                let what = format!("features of {} ({name})", keys[i]);
                cached_features(model, &paths[i], &ids[i], (self.batch, masks), &what)
            });
            Ok([train?, test?])
        };
        let trained = features(&stored.model, "trained")?;
        // The same architecture, randomly initialised (seeded, so its features cache too).
        B::seed(&device, 0);
        let random_model = stored.config.init::<B>(&device);
        let random = features(&random_model, "random init")?;
        let pixels = [
            raw_pixels(&train, &tokenizer),
            raw_pixels(&test, &tokenizer),
        ];

        // Every probe is independent: fit them on all cores.
        let mut tasks: Vec<(&[Features; 2], usize)> = Vec::new();
        tasks.extend(layers.iter().map(|&l| (&trained, l)));
        tasks.extend(layers.iter().map(|&l| (&random, l)));
        tasks.push((&pixels, 0));
        let bar = progress(tasks.len(), "fitting probes");
        let config = ProbeConfig::default();
        let kept = self.cache.join("probes");
        let results = tasks
            .par_iter()
            .map(|&(set, l)| {
                let r = cached_probe(
                    Labelled::new(&set[0].layers[l], &train.labels, set[0].width)?,
                    Labelled::new(&set[1].layers[l], &test.labels, set[1].width)?,
                    &config,
                    &kept,
                );
                bar.inc(1);
                Ok(layer_result(l, r?))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        bar.finish_and_clear();
        let (model_layers, rest) = results.split_at(layers.len());
        let (random_layers, pixels) = rest.split_at(layers.len());
        let mut report = ProbeReport::new(
            model_layers,
            random_layers,
            pixels[0],
            (&self.data.train.to_string(), train.len()),
            (&self.data.test.to_string(), test.len()),
        );
        report.masks = self.masks;
        if let Some(size) = self.concat {
            let window = concat_window(report.best_layer, size.into(), depth);
            eprintln!("fitting the probe of layers {window:?} concatenated, and its random twin's");
            let fit = |set: &[Features; 2]| {
                cached_probe(
                    Labelled::new(
                        &set[0].concatenated(&window),
                        &train.labels,
                        set[0].width * window.len(),
                    )?,
                    Labelled::new(
                        &set[1].concatenated(&window),
                        &test.labels,
                        set[1].width * window.len(),
                    )?,
                    &config,
                    &kept,
                )
            };
            let (model, twin) = rayon::join(|| fit(&trained), || fit(&random));
            let (model, twin) = (model?, twin?);
            report.concat = Some(ConcatProbe {
                layers: window,
                accuracy: model.accuracy,
                val_accuracy: model.val_accuracy,
                l2: model.l2,
                random_init_accuracy: twin.accuracy,
            });
        }
        if self.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            print_table(&report);
        }
        let title = stored
            .card
            .name
            .clone()
            .unwrap_or_else(|| self.model.display().to_string());
        if let Some(path) = &self.chart {
            chart::probe_svg(path, &title, &report)?;
        }
        if self.record {
            chart::probe_svg(&self.model.join("probe.svg"), &title, &report)?;
            let mut card = ModelCard::read_or(&self.model, || stored.card.clone())?;
            card.probe = Some(report);
            card.save(&self.model)?;
        }
        Ok(())
    }
}

/// `all` or a comma-separated list of layers below `depth`.
fn parse_layers(text: &str, depth: usize) -> anyhow::Result<Vec<usize>> {
    if text == "all" {
        return Ok((0..depth).collect());
    }
    let mut layers = Vec::new();
    for part in text.split(',') {
        let layer: usize = part.trim().parse().with_context(|| {
            format!("--layers takes `all` or numbers such as 0,3 (got `{part}`)")
        })?;
        if layer >= depth {
            bail!(
                "layer {layer} does not exist: this model has layers 0 (embeddings) to {}",
                depth - 1
            );
        }
        if !layers.contains(&layer) {
            layers.push(layer);
        }
    }
    Ok(layers)
}

/// A model's features of the images `ids`, from the cache file `path` when this model has seen
/// them before, else computed and saved there.
fn cached_features<B: Backend>(
    model: &ImageGpt<B>,
    path: &Path,
    ids: &[Vec<u16>],
    (batch, masks): (usize, usize),
    what: &str,
) -> anyhow::Result<Features> {
    if let Some(features) = FeatureCache::read(path).filter(|f| f.count == ids.len()) {
        eprintln!("{what}: read from {}", path.display());
        return Ok(features);
    }
    let bar = progress(ids.len(), what);
    let began = Instant::now();
    let features = features::extract_masked(model, ids, batch, masks, |n| bar.inc(n as u64))?;
    bar.finish_and_clear();
    let seconds = began.elapsed().as_secs_f64();
    eprintln!(
        "{what}: {} images in {seconds:.1}s, {:.1} images/s",
        ids.len(),
        ids.len() as f64 / seconds
    );
    FeatureCache::write(path, &features)?;
    Ok(features)
}

/// A probe's result, read from `dir` when the same features, labels and settings were fitted before
/// (each milestone of a run has the same random-init twin and the same raw pixels), else fitted and
/// kept there.
fn cached_probe(
    train: Labelled,
    test: Labelled,
    config: &ProbeConfig,
    dir: &Path,
) -> anyhow::Result<ProbeResult> {
    let path = dir.join(format!("{}.json", fingerprint(train, test, config)));
    let kept = std::fs::read(&path).ok();
    if let Some(result) = kept.and_then(|bytes| serde_json::from_slice(&bytes).ok()) {
        return Ok(result);
    }
    let result = probe(train, test, config)?;
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&path, serde_json::to_vec(&result)?))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(result)
}

fn print_table(report: &ProbeReport) {
    println!(
        "linear probes: {} training images of {} (10% held out to choose L2), {} test images of {}",
        report.train_images, report.train_data, report.test_images, report.test_data
    );
    println!("layer  test acc  held-out acc  L2      random-init test acc");
    for (l, r) in report.layers.iter().zip(&report.random_init_layers) {
        let mark = if l.layer == report.best_layer {
            "  <- best (held-out)"
        } else {
            ""
        };
        println!(
            "{:>5}  {:>7.2}%  {:>11.2}%  {:<6.0e}  {:>7.2}%{mark}",
            l.layer,
            100.0 * l.accuracy,
            100.0 * l.val_accuracy,
            l.l2,
            100.0 * r.accuracy
        );
    }
    println!(
        "best layer {}: {:.2}% | raw pixels {:.2}% | random init (best layer) {:.2}%",
        report.best_layer,
        100.0 * report.best_accuracy,
        100.0 * report.raw_pixels,
        100.0 * report.random_init_best
    );
    if let Some(c) = &report.concat {
        let (first, last) = (c.layers[0], c.layers[c.layers.len() - 1]);
        println!(
            "layers {first}-{last} concatenated: {:.2}% (held-out {:.2}%, L2 {:.0e}) | random init, same layers {:.2}%",
            100.0 * c.accuracy,
            100.0 * c.val_accuracy,
            c.l2,
            100.0 * c.random_init_accuracy
        );
    }
}
