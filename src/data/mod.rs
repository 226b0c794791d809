//! Datasets of labelled images, named by a spec such as `fashion-mnist:test` or `cifar:DIR:train`.

pub mod augment;
mod cifar;
mod emoji;
mod folder;
mod idx;
pub mod shards;
pub mod stream;

pub use emoji::{NOTO_COLOR_EMOJI, square_on_white};
pub use folder::{FolderFiles, list as folder_files};

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::pixels::raster::Raster;

/// Where Debian's `dataset-fashion-mnist` package puts the files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Images with integer labels; `classes[label]` names a label when the dataset says how.
pub struct Dataset {
    pub images: Vec<Raster>,
    pub labels: Vec<usize>,
    pub classes: Vec<String>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.images.len()
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// Keeps only the first `n` examples.
    pub fn truncate(&mut self, n: usize) {
        self.images.truncate(n);
        self.labels.truncate(n);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

impl FromStr for Split {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "train" => Ok(Split::Train),
            "test" => Ok(Split::Test),
            other => Err(Error::invalid(format!(
                "unknown split {other:?} (use train or test)"
            ))),
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Test => "test",
        })
    }
}

/// Which dataset to read. Parsed from `KIND[:DIR][:SPLIT]`:
/// `fashion-mnist:test` (Debian's files), `fashion-mnist:DIR:train`, `idx:DIR:train` (any MNIST-family
/// IDX files), `cifar:DIR:test` (CIFAR-10 or CIFAR-100 binary batches), `folder:DIR` (one sub-folder
/// per class), `shards:DIR` (tar shards of images, the WebDataset layout, which training streams).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataSpec {
    Idx {
        dir: PathBuf,
        split: Split,
        fashion: bool,
    },
    Cifar {
        dir: PathBuf,
        split: Split,
    },
    Folder {
        dir: PathBuf,
    },
    /// Tar shards of images (see `shards.rs`): `igpt train` streams them instead of loading them.
    Shards {
        dir: PathBuf,
    },
    /// A colour bitmap font's glyphs (see `emoji.rs`).
    Emoji {
        font: PathBuf,
        split: Split,
    },
}

impl FromStr for DataSpec {
    type Err = Error;
    fn from_str(spec: &str) -> Result<Self> {
        let usage = || {
            Error::invalid(format!(
                "bad dataset spec {spec:?}: use fashion-mnist:SPLIT, fashion-mnist:DIR:SPLIT, idx:DIR:SPLIT, \
                 cifar:DIR:SPLIT, emoji:SPLIT, emoji:FONT:SPLIT, folder:DIR or shards:DIR (SPLIT is train or test)"
            ))
        };
        let (kind, rest) = spec.split_once(':').ok_or_else(usage)?;
        // The split is the last field, so directories may contain ':'.
        let dir_and_split = || -> Result<(PathBuf, Split)> {
            let (dir, split) = rest.rsplit_once(':').ok_or_else(usage)?;
            if dir.is_empty() {
                return Err(usage());
            }
            Ok((PathBuf::from(dir), split.parse()?))
        };
        match kind {
            "fashion-mnist" if !rest.contains(':') => Ok(DataSpec::Idx {
                dir: PathBuf::from(FASHION_MNIST_DIR),
                split: rest.parse()?,
                fashion: true,
            }),
            "fashion-mnist" | "idx" | "mnist" => {
                let (dir, split) = dir_and_split()?;
                Ok(DataSpec::Idx {
                    dir,
                    split,
                    fashion: kind == "fashion-mnist",
                })
            }
            "emoji" if !rest.contains(':') => Ok(DataSpec::Emoji {
                font: PathBuf::from(NOTO_COLOR_EMOJI),
                split: rest.parse()?,
            }),
            "emoji" => {
                let (font, split) = dir_and_split()?;
                Ok(DataSpec::Emoji { font, split })
            }
            "cifar" => {
                let (dir, split) = dir_and_split()?;
                Ok(DataSpec::Cifar { dir, split })
            }
            "folder" if !rest.is_empty() => Ok(DataSpec::Folder {
                dir: PathBuf::from(rest),
            }),
            "shards" if !rest.is_empty() => Ok(DataSpec::Shards {
                dir: PathBuf::from(rest),
            }),
            _ => Err(usage()),
        }
    }
}

impl DataSpec {
    /// The same dataset's other split (`None` for a folder or shards, which have no splits).
    pub fn with_split(&self, split: Split) -> Option<Self> {
        match self {
            DataSpec::Idx { dir, fashion, .. } => Some(DataSpec::Idx {
                dir: dir.clone(),
                split,
                fashion: *fashion,
            }),
            DataSpec::Cifar { dir, .. } => Some(DataSpec::Cifar {
                dir: dir.clone(),
                split,
            }),
            DataSpec::Emoji { font, .. } => Some(DataSpec::Emoji {
                font: font.clone(),
                split,
            }),
            DataSpec::Folder { .. } | DataSpec::Shards { .. } => None,
        }
    }

    /// Reads the whole split into memory.
    pub fn load(&self) -> Result<Dataset> {
        let dataset = match self {
            DataSpec::Idx {
                dir,
                split,
                fashion,
            } => {
                let mut data = idx::load(dir, *split)?;
                if *fashion {
                    data.classes = FASHION_MNIST_CLASSES.map(String::from).to_vec();
                }
                data
            }
            DataSpec::Cifar { dir, split } => cifar::load(dir, *split)?,
            DataSpec::Folder { dir } => folder::load(dir)?,
            DataSpec::Shards { dir } => shards::load(dir)?,
            DataSpec::Emoji { font, split } => emoji::load(font, *split)?,
        };
        if dataset.is_empty() {
            return Err(Error::invalid(format!("dataset {self} has no images")));
        }
        Ok(dataset)
    }
}

impl fmt::Display for DataSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSpec::Idx {
                dir,
                split,
                fashion: true,
            } if dir == Path::new(FASHION_MNIST_DIR) => write!(f, "fashion-mnist:{split}"),
            DataSpec::Idx {
                dir,
                split,
                fashion,
            } => {
                let kind = if *fashion { "fashion-mnist" } else { "idx" };
                write!(f, "{kind}:{}:{split}", dir.display())
            }
            DataSpec::Cifar { dir, split } => write!(f, "cifar:{}:{split}", dir.display()),
            DataSpec::Folder { dir } => write!(f, "folder:{}", dir.display()),
            DataSpec::Shards { dir } => write!(f, "shards:{}", dir.display()),
            DataSpec::Emoji { font, split } if font == Path::new(NOTO_COLOR_EMOJI) => {
                write!(f, "emoji:{split}")
            }
            DataSpec::Emoji { font, split } => write!(f, "emoji:{}:{split}", font.display()),
        }
    }
}

/// The most bytes a gzipped dataset file may expand to (Fashion-MNIST's training images are 47 MB):
/// a "gzip bomb" stops here with an error instead of exhausting memory.
pub(crate) const MAX_GUNZIPPED_BYTES: u64 = 1 << 30;

/// Reads a file, transparently un-gzipping it when it starts with the gzip magic bytes. Every member's
/// CRC and length trailer is checked, and bytes after the last member are an error, not ignored.
fn read_maybe_gzipped(path: &Path) -> Result<Vec<u8>> {
    let bytes = crate::error::read_file(path)?;
    gunzip_if_gzipped(bytes, MAX_GUNZIPPED_BYTES).map_err(|reason| Error::format(path, reason))
}

/// `bytes` un-gzipped when they start with the gzip magic (all members), else returned as they are.
fn gunzip_if_gzipped(bytes: Vec<u8>, limit: u64) -> std::result::Result<Vec<u8>, String> {
    use std::io::Read;
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(bytes);
    }
    let mut out = Vec::new();
    // MultiGzDecoder reads member after member (a plain GzDecoder stops after the first and would
    // silently ignore the rest); anything after the last member that is not a gzip header is an error.
    flate2::bufread::MultiGzDecoder::new(&bytes[..])
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("corrupt gzip data: {e}"))?;
    if out.len() as u64 > limit {
        return Err(format!(
            "gzip data expands to more than {limit} bytes, the limit for a dataset file"
        ));
    }
    Ok(out)
}

/// Label names `0`, `1`, … up to the largest label seen.
fn numbered_classes(labels: &[usize]) -> Vec<String> {
    let n = labels.iter().max().map_or(0, |m| m + 1);
    (0..n).map(|i| i.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real gzip file (Fashion-MNIST's test labels), cut, corrupted or extended in every way the
    /// trailer or the member structure can be: each is an error.
    #[test]
    fn gzip_truncation_corruption_and_trailing_bytes_are_errors() {
        let path = Path::new(FASHION_MNIST_DIR).join("t10k-labels-idx1-ubyte.gz");
        let gz = std::fs::read(&path).expect("dataset-fashion-mnist is installed");
        let whole = gunzip_if_gzipped(gz.clone(), MAX_GUNZIPPED_BYTES).unwrap();
        assert_eq!(whole.len(), 8 + 10_000);
        for cut in (2..gz.len()).step_by(97).chain(gz.len() - 9..gz.len()) {
            let err = gunzip_if_gzipped(gz[..cut].to_vec(), MAX_GUNZIPPED_BYTES);
            assert!(
                err.is_err(),
                "cut to {cut} of {} bytes was accepted",
                gz.len()
            );
        }
        let n = gz.len();
        for (at, what) in [(n - 8, "CRC"), (n - 4, "length"), (n / 2, "data")] {
            let mut bad = gz.clone();
            bad[at] ^= 0x01;
            let err = gunzip_if_gzipped(bad, MAX_GUNZIPPED_BYTES).unwrap_err();
            assert!(err.contains("corrupt gzip"), "{what}: {err}");
        }
        let mut trailing = gz.clone();
        trailing.extend_from_slice(b"trailing bytes");
        assert!(gunzip_if_gzipped(trailing, MAX_GUNZIPPED_BYTES).is_err());
        // Two members are read as one stream (so an IDX file then fails its length check).
        let twice = [gz.clone(), gz.clone()].concat();
        assert_eq!(
            gunzip_if_gzipped(twice, MAX_GUNZIPPED_BYTES).unwrap().len(),
            2 * whole.len()
        );
        let err = gunzip_if_gzipped(gz, 1000).unwrap_err();
        assert!(err.contains("more than 1000 bytes"), "{err}");
    }

    #[test]
    fn parses_specs() {
        assert_eq!(
            "fashion-mnist:test".parse::<DataSpec>().unwrap(),
            DataSpec::Idx {
                dir: FASHION_MNIST_DIR.into(),
                split: Split::Test,
                fashion: true
            }
        );
        assert_eq!(
            "idx:/data/mnist:train".parse::<DataSpec>().unwrap(),
            DataSpec::Idx {
                dir: "/data/mnist".into(),
                split: Split::Train,
                fashion: false
            }
        );
        assert_eq!(
            "cifar:c:/x:test".parse::<DataSpec>().unwrap(),
            DataSpec::Cifar {
                dir: "c:/x".into(),
                split: Split::Test
            }
        );
        assert_eq!(
            "folder:imgs".parse::<DataSpec>().unwrap(),
            DataSpec::Folder { dir: "imgs".into() }
        );
        for bad in [
            "",
            "fashion-mnist",
            "fashion-mnist:valid",
            "cifar:dir",
            "nope:x:train",
            "folder:",
        ] {
            assert!(bad.parse::<DataSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn spec_display_round_trips() {
        for s in [
            "fashion-mnist:train",
            "idx:/d:test",
            "cifar:/c:train",
            "folder:/f",
            "shards:/s",
        ] {
            assert_eq!(s.parse::<DataSpec>().unwrap().to_string(), s);
        }
    }
}
