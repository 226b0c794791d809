//! `igpt baselines`: the bits/token a model must beat on a dataset, from simple models fitted on its
//! training split (see `igpt::analysis::baselines`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use igpt::ModelCard;
use igpt::analysis::baselines::{Baselines, baselines};
use igpt::data::{DataSpec, Split};
use igpt::store::{self, BaselinesRecord};

use crate::tokenize_all;

#[derive(Args)]
pub struct BaselinesArgs {
    /// Images to score, e.g. fashion-mnist:test.
    #[arg(long)]
    data: DataSpec,
    /// Images to fit on (default: the training split of --data's dataset).
    #[arg(long)]
    train: Option<DataSpec>,
    /// Palette (or model) directory whose colours and image size define the tokens.
    #[arg(long)]
    palette: PathBuf,
    /// Use only the first N images of each split.
    #[arg(long)]
    limit: Option<usize>,
    /// Print {"uniform", "global_unigram", "per_position", "context3", "context_strength"} as JSON.
    #[arg(long)]
    json: bool,
    /// Also store them in this model directory's card (its `baselines` entry), next to its own score.
    #[arg(long, value_name = "MODEL_DIR")]
    record: Option<PathBuf>,
}

/// The card's `baselines` entry: the numbers and the splits they come from.
pub(crate) fn card_entry(
    bits: Baselines,
    train: &DataSpec,
    test: &DataSpec,
    test_images: usize,
) -> BaselinesRecord {
    BaselinesRecord {
        bits,
        train_data: train.to_string(),
        test_data: test.to_string(),
        test_images,
    }
}

pub fn run(args: BaselinesArgs) -> anyhow::Result<()> {
    let train_spec = match &args.train {
        Some(spec) => spec.clone(),
        None => args.data.with_split(Split::Train).with_context(|| {
            format!("{} has no training split: give one with --train", args.data)
        })?,
    };
    let tokenizer = store::read_tokenizer(&args.palette)?;
    let train = tokenize_all(&train_spec, &tokenizer, args.limit)?;
    let test = tokenize_all(&args.data, &tokenizer, args.limit)?;
    let b = baselines(&train, &test, tokenizer.width, tokenizer.palette.len())?;
    let (train_images, test_images) = (train.len(), test.len());
    if let Some(dir) = &args.record {
        let mut card = ModelCard::read_or(dir, || ModelCard::for_images(&tokenizer))?;
        card.baselines = Some(card_entry(b.clone(), &train_spec, &args.data, test_images));
        card.save(dir)?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&b)?);
        return Ok(());
    }
    println!(
        "{} ({} images), fitted on {} ({} images), {} colours at {}x{}:",
        args.data,
        test_images,
        train_spec,
        train_images,
        tokenizer.palette.len(),
        tokenizer.height,
        tokenizer.width
    );
    for (name, bits) in [
        ("uniform", b.uniform),
        ("global unigram (add-0.5)", b.global_unigram),
        ("per-position unigram (add-0.5)", b.per_position),
        (
            &format!("3-neighbour context (a = {})", b.context_strength),
            b.context3,
        ),
    ] {
        println!("  {name:<34}{bits:>8.4} bits/token");
    }
    Ok(())
}
