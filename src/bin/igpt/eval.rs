//! `igpt eval`: mean negative log-likelihood of token sequences or of a dataset split (for a BERT
//! model, of the pixels it is shown hidden, under seeded masks).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use burn::tensor::backend::Backend;
use clap::Args;
use igpt::data::DataSpec;
use igpt::eval::{Nll, masked_nll};
use igpt::store::{self, CheckRecord, ModelCard, WEIGHTS_FILE};

use crate::backend::{BackendJob, DeviceKind};
use crate::{load_data, progress, tokenize_images};

#[derive(Args)]
pub struct EvalArgs {
    /// Model directory.
    #[arg(long)]
    model: PathBuf,
    /// The weights file in the model directory: e.g. model.q6.safetensors, the light form the page
    /// downloads (`igpt quantize`). --record pins only the full weights' figure.
    #[arg(long, default_value = WEIGHTS_FILE)]
    weights: String,
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
    /// BERT models: score each image under this many seeded masks (mask k of image i is the same in
    /// every evaluation), hiding each pixel with the model's training probability.
    #[arg(long, default_value_t = 1, value_name = "K")]
    masks: usize,
    /// Print {"nll_nats", "bits_per_token", "count", "tokens"} (and "masks" for BERT) as JSON.
    #[arg(long)]
    json: bool,
    /// Pin the figure in the model's card as its quick check (`check`: data, images, bits/token),
    /// which tests/shipped_model.rs repeats to 1e-4 on every shipped model.
    #[arg(long, requires_all = ["data", "limit"])]
    record: bool,
    #[arg(long, value_enum, default_value_t)]
    pub device: DeviceKind,
}

impl BackendJob for EvalArgs {
    type Output = ();

    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<()> {
        if self.record && self.weights != WEIGHTS_FILE {
            bail!("--record pins the full weights' figure; the light form's is igpt quantize's");
        }
        let stored = store::load_dir_with::<B>(&self.model, &self.weights, &device)?;
        let mut sequences = match (&self.ids, &self.data) {
            (Some(path), _) => read_ids(path)?,
            (None, Some(spec)) => {
                let data = load_data(spec, self.limit)?;
                tokenize_images(&data.images, &stored.tokenizer(), "tokenizing")
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
        if self.masks != 1 && stored.model.objective().is_causal() {
            bail!("--masks is for BERT models; this one is autoregressive");
        }
        if self.record && self.masks != 1 {
            bail!("--record pins the figure under one mask, the one tests repeat");
        }
        let nll = masked_nll(&stored.model, &sequences, self.batch, self.masks, |n| {
            bar.inc(n as u64)
        })?;
        bar.finish_and_clear();
        if let (true, Some(spec)) = (self.record, &self.data) {
            let mut card = ModelCard::read_or(&self.model, || stored.card.clone())?;
            card.check = Some(CheckRecord {
                data: spec.to_string(),
                images: nll.count,
                bits_per_token: nll.bits_per_token,
            });
            card.save(&self.model)?;
        }
        print_nll(&nll, self.json)
    }
}

fn read_ids(path: &Path) -> anyhow::Result<Vec<Vec<u16>>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    igpt::pixels::tokens::parse_ids(&text).with_context(|| path.display().to_string())
}

fn print_nll(nll: &Nll, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(nll)?);
    } else {
        let scored = match nll.masks {
            Some(k) => format!("{} hidden tokens under {k} masks", nll.tokens),
            None => format!("{} tokens", nll.tokens),
        };
        println!(
            "{:.6} nats/token, {:.6} bits/token over {} sequences ({scored})",
            nll.nll_nats, nll.bits_per_token, nll.count
        );
    }
    Ok(())
}
