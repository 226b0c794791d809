//! `igpt shard`: pack a dataset into tar shards, which `igpt train --data shards:DIR` streams.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use igpt::data::shards::{self, Sample};
use igpt::data::{DataSpec, FolderFiles, folder_files};

use crate::{load_data, progress};

#[derive(Args)]
pub struct ShardArgs {
    /// Images to pack, e.g. folder:DIR (its files go in as they are, one at a time, so a folder of
    /// any size packs) or cifar:DIR:train (read whole, written as PNGs).
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
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("cannot create {}", args.output.display()))?;
    let (count, labelled) = match &args.data {
        DataSpec::Folder { dir } => pack_folder(dir, &args)?,
        spec => pack_loaded(spec, &args)?,
    };
    eprintln!(
        "wrote {count} images of {} in {} shards to {}{}",
        args.data,
        count.div_ceil(args.per_shard),
        args.output.display(),
        if labelled { ", with labels" } else { "" }
    );
    Ok(())
}

/// A folder's image files go into the shards as they are (no decoding, one file in memory at a
/// time), so a folder larger than memory packs too.
fn pack_folder(dir: &Path, args: &ShardArgs) -> anyhow::Result<(usize, bool)> {
    let FolderFiles { mut files, classes } = folder_files(dir)?;
    files.truncate(args.limit.unwrap_or(usize::MAX));
    let labelled = classes.len() > 1 || classes.iter().any(|c| !c.is_empty());
    let bar = progress(files.len(), "writing shards");
    for (i, chunk) in files.chunks(args.per_shard).enumerate() {
        let samples = chunk.iter().map(|(path, label)| {
            bar.inc(1);
            Ok(Sample {
                image: igpt::error::read_file(path)?,
                extension: shards::image_extension(path).unwrap_or("png"),
                label: labelled.then_some(*label),
            })
        });
        shards::write_samples(&shard_path(args, i), i * args.per_shard, samples)?;
    }
    bar.finish_and_clear();
    Ok((files.len(), labelled))
}

/// Any other dataset is read whole (they all fit in memory) and written as PNGs.
fn pack_loaded(spec: &DataSpec, args: &ShardArgs) -> anyhow::Result<(usize, bool)> {
    let data = load_data(spec, args.limit)?;
    let labelled = data.classes.len() > 1 || data.classes.iter().any(|c| !c.is_empty());
    let bar = progress(data.len().div_ceil(args.per_shard), "writing shards");
    for (i, images) in data.images.chunks(args.per_shard).enumerate() {
        let first = i * args.per_shard;
        let labels = labelled.then(|| &data.labels[first..first + images.len()]);
        shards::write(&shard_path(args, i), first, images, labels)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok((data.len(), labelled))
}

fn shard_path(args: &ShardArgs, index: usize) -> PathBuf {
    args.output.join(format!("shard-{index:06}.tar"))
}
