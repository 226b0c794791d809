//! `igpt shard`: pack a dataset into tar shards, which `igpt train --data shards:DIR` streams.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use igpt::data::{DataSpec, shards};

use crate::{load_data, progress};

#[derive(Args)]
pub struct ShardArgs {
    /// Images to pack, e.g. folder:DIR or cifar:DIR:train.
    #[arg(long)]
    data: DataSpec,
    /// Folder to write `shard-000000.tar`, `shard-000001.tar`, ... into.
    #[arg(short, long)]
    output: PathBuf,
    /// Images per shard.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    per_shard: usize,
    /// Pack only the first N images.
    #[arg(long)]
    limit: Option<usize>,
}

pub fn run(args: ShardArgs) -> anyhow::Result<()> {
    if args.per_shard == 0 {
        bail!("--per-shard must be at least 1");
    }
    if args.output.join("shard-000000.tar").exists() {
        bail!(
            "{} already holds shards: choose another --output",
            args.output.display()
        );
    }
    let data = load_data(&args.data, args.limit)?;
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("cannot create {}", args.output.display()))?;
    // A dataset without classes (a folder of images) gets no `.cls` files.
    let labelled = data.classes.len() > 1 || data.classes.iter().any(|c| !c.is_empty());
    let bar = progress(data.len().div_ceil(args.per_shard), "writing shards");
    for (i, images) in data.images.chunks(args.per_shard).enumerate() {
        let first = i * args.per_shard;
        let labels = labelled.then(|| &data.labels[first..first + images.len()]);
        let path = args.output.join(format!("shard-{i:06}.tar"));
        shards::write(&path, first, images, labels)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    eprintln!(
        "wrote {} images of {} in {} shards to {}{}",
        data.len(),
        args.data,
        data.len().div_ceil(args.per_shard),
        args.output.display(),
        if labelled { ", with labels" } else { "" }
    );
    Ok(())
}
