//! `igpt atlas`: a layer's feature atlas (see `igpt::inspect::atlas`), written beside the model as
//! atlas.json and atlas.png (the sprite of the images it names) for the page.

use std::path::PathBuf;

use anyhow::Context;
use burn::tensor::backend::Backend;
use clap::Args;
use igpt::data::DataSpec;
use igpt::inspect::atlas::{self, Atlas, AtlasOptions};
use igpt::pixels::raster::tile;
use igpt::store;
use serde::Serialize;

use crate::backend::{BackendJob, DeviceKind};
use crate::{progress, tokenize_all};

/// Sprite columns: the page finds image i at column i % 16, row i / 16.
const SPRITE_COLUMNS: usize = 16;

#[derive(Args)]
pub struct AtlasArgs {
    /// Model directory; atlas.json and atlas.png are written into it.
    #[arg(long)]
    model: PathBuf,
    /// The images to scan (a dataset spec; its test split is the usual choice).
    #[arg(long)]
    data: DataSpec,
    /// The residual stream to map: 0 the embeddings, l the output of block l. Default: the middle.
    #[arg(long)]
    layer: Option<usize>,
    /// Scan only the first N images.
    #[arg(long, default_value_t = 500)]
    limit: usize,
    /// Principal directions of the layer (each gives two units: its two ends).
    #[arg(long, default_value_t = 8)]
    directions: usize,
    /// MLP neurons of the block that writes the layer, the most variable ones.
    #[arg(long, default_value_t = 256)]
    neurons: usize,
    /// Images per unit.
    #[arg(long, default_value_t = 8)]
    top: usize,
    /// Images the principal directions are fitted on (the first ones).
    #[arg(long, default_value_t = 64)]
    fit_images: usize,
    /// Images per forward pass.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    #[arg(long, value_enum, default_value_t)]
    pub device: DeviceKind,
}

/// atlas.json: the atlas, where its images come from, and how the sprite lays them out.
#[derive(Serialize)]
struct AtlasFile<'a> {
    /// Where the images come from: the atlas's `images` are indices into it.
    data: String,
    sprite: Sprite,
    #[serde(flatten)]
    atlas: &'a Atlas,
}

#[derive(Serialize)]
struct Sprite {
    file: &'static str,
    columns: usize,
    tile_width: usize,
    tile_height: usize,
}

impl BackendJob for AtlasArgs {
    type Output = ();

    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<()> {
        let stored = store::load_dir::<B>(&self.model, &device)?;
        let tokenizer = stored.tokenizer();
        let sequences = tokenize_all(&self.data, &tokenizer, Some(self.limit))?;
        let options = AtlasOptions {
            layer: self.layer.unwrap_or(stored.model.n_layer().div_ceil(2)),
            directions: self.directions,
            neurons: self.neurons,
            top: self.top,
            fit_images: self.fit_images,
            batch: self.batch,
        };
        let bar = progress(sequences.len(), "scanning images for the atlas");
        let atlas = atlas::build(&stored.model, &sequences, &options, |done, _| {
            bar.set_position(done as u64)
        })?;
        bar.finish_and_clear();
        let tiles = atlas
            .images
            .iter()
            .map(|&i| tokenizer.detokenize(&sequences[i]))
            .collect::<igpt::Result<Vec<_>>>()?;
        let sprite = tile(&tiles, SPRITE_COLUMNS, 0)?;
        let file = AtlasFile {
            data: self.data.to_string(),
            sprite: Sprite {
                file: "atlas.png",
                columns: SPRITE_COLUMNS,
                tile_width: tokenizer.width,
                tile_height: tokenizer.height,
            },
            atlas: &atlas,
        };
        let png = self.model.join("atlas.png");
        std::fs::write(&png, sprite.to_png()?)
            .with_context(|| format!("cannot write {}", png.display()))?;
        let json = self.model.join("atlas.json");
        std::fs::write(&json, serde_json::to_string(&file)? + "\n")
            .with_context(|| format!("cannot write {}", json.display()))?;
        let neurons = atlas
            .units
            .iter()
            .filter(|u| u.kind == atlas::UnitKind::Neuron);
        println!(
            "wrote {} and {}: layer {}, {} units ({} MLP neurons) over {} images of {}; {} images in the sprite",
            json.display(),
            png.display(),
            atlas.layer,
            atlas.units.len(),
            neurons.count(),
            atlas.scanned,
            self.data,
            atlas.images.len()
        );
        Ok(())
    }
}
