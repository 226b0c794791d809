//! `igpt ablation-means`: what each head, attention and MLP writes on average over a dataset, saved
//! beside the model for mean ablation (`igpt inspect --ablate PART --mean`, and the page).

use std::path::PathBuf;

use burn::tensor::backend::Backend;
use clap::Args;
use igpt::data::DataSpec;
use igpt::inspect::ablation_means::{AblationMeans, MEANS_FILE};
use igpt::store;

use crate::backend::{BackendJob, DeviceKind};
use crate::{progress, tokenize_all};

#[derive(Args)]
pub struct AblationMeansArgs {
    /// Model directory; the means are written into it as ablation-means.json.
    #[arg(long)]
    model: PathBuf,
    /// The images to average over (a dataset spec; its training split is the usual choice).
    #[arg(long)]
    data: DataSpec,
    /// Use only the first N images.
    #[arg(long, default_value_t = 1000)]
    limit: usize,
    /// Images per forward pass.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    #[arg(long, value_enum, default_value_t)]
    pub device: DeviceKind,
}

impl BackendJob for AblationMeansArgs {
    type Output = ();

    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<()> {
        let stored = store::load_dir::<B>(&self.model, &device)?;
        let sequences = tokenize_all(&self.data, &stored.tokenizer(), Some(self.limit))?;
        let bar = progress(sequences.len(), "measuring the parts' mean writes");
        let means = AblationMeans::measure(
            &stored.model,
            &sequences,
            self.batch,
            &self.data.to_string(),
            |n| bar.inc(n as u64),
        )?;
        bar.finish_and_clear();
        means.save(&self.model)?;
        println!(
            "wrote {}: the mean writes of every head, attention and MLP over {} images of {}",
            self.model.join(MEANS_FILE).display(),
            means.images,
            means.data
        );
        Ok(())
    }
}
