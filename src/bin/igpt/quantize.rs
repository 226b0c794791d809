//! `igpt quantize`: the light form of a model's weights (`model.q6.safetensors`, block-wise 6-bit,
//! see `igpt::store::q6`) written beside the full file, then scored on the card's own test and check
//! images, so the card says what the smaller download costs.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use burn::tensor::backend::Backend;
use clap::Args;
use flate2::Compression;
use flate2::write::GzEncoder;
use igpt::data::DataSpec;
use igpt::eval::sequence_nll;
use igpt::store::q6::Q6_WEIGHTS_FILE;
use igpt::store::{self, ModelCard, QuantizedRecord, StoredModel, WEIGHTS_FILE, WeightPrecision};

use crate::backend::{BackendJob, DeviceKind};
use crate::{progress, tokenize_all};

#[derive(Args)]
pub struct QuantizeArgs {
    /// Model directory: model.q6.safetensors is written into it, and its card records the scores.
    #[arg(long)]
    model: PathBuf,
    /// Images per forward pass while scoring.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    #[arg(long, value_enum, default_value_t)]
    pub device: DeviceKind,
}

impl BackendJob for QuantizeArgs {
    type Output = ();

    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<()> {
        let full = store::load_dir::<B>(&self.model, &device)?;
        let card = full.card.clone();
        let (Some(test), Some(check)) = (&card.test_data, &card.check) else {
            bail!(
                "{}'s card has no test data or check figure to score the light form on (igpt export, igpt eval --record)",
                self.model.display()
            );
        };
        let light_path = self.model.join(Q6_WEIGHTS_FILE);
        full.save_weights(&light_path, WeightPrecision::Q6)?;
        let light = store::load_dir_with::<B>(&self.model, Q6_WEIGHTS_FILE, &device)?;
        let test_bits = bits(&light, &test.parse()?, None, self.batch)?;
        let check_bits = bits(&light, &check.data.parse()?, Some(check.images), self.batch)?;
        let (bytes, gzip_bytes) = sizes(&light_path)?;
        let (full_bytes, full_gzip_bytes) = sizes(&self.model.join(WEIGHTS_FILE))?;
        let record = QuantizedRecord {
            file: Q6_WEIGHTS_FILE.into(),
            format: WeightPrecision::Q6.name().into(),
            bytes,
            gzip_bytes,
            full_bytes,
            full_gzip_bytes,
            test_bits_per_token: test_bits,
            check_bits_per_token: check_bits,
        };
        let mut saved = ModelCard::read_or(&self.model, || card.clone())?;
        saved.quantized = Some(record);
        saved.save(&self.model)?;
        let full_test = card.metrics.get("test_bits_per_token").copied();
        println!(
            "wrote {}: {bytes} bytes ({gzip_bytes} gzipped) against {full_bytes} ({full_gzip_bytes}): {:.1}% of the gzipped download",
            light_path.display(),
            100.0 * gzip_bytes as f64 / full_gzip_bytes as f64
        );
        println!(
            "test bits/token on all of {test}: {test_bits:.6}{}; check on {} images of {}: {check_bits:.6} (full {:.6})",
            full_test.map_or(String::new(), |f| format!(
                " (full {f:.6}, {:+.6})",
                test_bits - f
            )),
            check.images,
            check.data,
            check.bits_per_token
        );
        Ok(())
    }
}

/// Bits/token of `stored` on the first `limit` images of `spec` (all when `None`).
fn bits<B: Backend>(
    stored: &StoredModel<B>,
    spec: &DataSpec,
    limit: Option<usize>,
    batch: usize,
) -> anyhow::Result<f64> {
    let sequences = tokenize_all(spec, &stored.tokenizer(), limit)?;
    let bar = progress(
        sequences.len(),
        &format!("scoring the light form on {spec}"),
    );
    let nll = sequence_nll(&stored.model, &sequences, batch, |n| bar.inc(n as u64))?;
    bar.finish_and_clear();
    Ok(nll.bits_per_token)
}

/// A file's bytes, raw and gzipped (level 9, as a host would serve it).
fn sizes(path: &Path) -> anyhow::Result<(u64, u64)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut gzip = GzEncoder::new(Vec::new(), Compression::best());
    gzip.write_all(&bytes)?;
    Ok((bytes.len() as u64, gzip.finish()?.len() as u64))
}
