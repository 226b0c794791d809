//! Which image a command works on: a file, or one image of a dataset (`complete`, `inspect`).

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use igpt::Raster;
use igpt::data::DataSpec;

#[derive(Args)]
pub struct ImageSource {
    /// Image file (PNG, JPEG, …), resized to the model's size.
    #[arg(required_unless_present = "data", conflicts_with = "data")]
    image: Option<PathBuf>,
    /// Or a dataset spec, e.g. fashion-mnist:test, with --index.
    #[arg(long)]
    data: Option<DataSpec>,
    /// Which image of --data.
    #[arg(long, default_value_t = 0)]
    index: usize,
}

impl ImageSource {
    /// The image, with `channels` channels (1 grey, 3 RGB).
    pub fn load(&self, channels: usize) -> anyhow::Result<Raster> {
        match (&self.image, &self.data) {
            (Some(path), _) => Ok(Raster::open(path, channels)?),
            (None, Some(spec)) => {
                let data = spec.load()?;
                let Some(image) = data.images.get(self.index) else {
                    bail!(
                        "--index {} is past the {} images of {spec}",
                        self.index,
                        data.len()
                    );
                };
                Ok(image.with_channels(channels))
            }
            (None, None) => bail!("give an IMAGE or --data SPEC"),
        }
    }

    /// What the image is, for messages: its path, or `SPEC #INDEX`.
    pub fn describe(&self) -> String {
        match (&self.image, &self.data) {
            (Some(path), _) => path.display().to_string(),
            (None, Some(spec)) => format!("{spec} #{}", self.index),
            (None, None) => "no image".into(),
        }
    }
}
