//! Datasets of labelled images, named by a spec such as `fashion-mnist:test` or `cifar:DIR:train`.

mod cifar;
mod folder;
mod idx;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::raster::Raster;

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
                "unknown split `{other}` (use train or test)"
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
/// per class).
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
}

impl FromStr for DataSpec {
    type Err = Error;
    fn from_str(spec: &str) -> Result<Self> {
        let usage = || {
            Error::invalid(format!(
                "bad dataset spec `{spec}`: use fashion-mnist:SPLIT, fashion-mnist:DIR:SPLIT, idx:DIR:SPLIT, \
                 cifar:DIR:SPLIT or folder:DIR (SPLIT is train or test)"
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
            "cifar" => {
                let (dir, split) = dir_and_split()?;
                Ok(DataSpec::Cifar { dir, split })
            }
            "folder" if !rest.is_empty() => Ok(DataSpec::Folder {
                dir: PathBuf::from(rest),
            }),
            _ => Err(usage()),
        }
    }
}

impl DataSpec {
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
        }
    }
}

/// Reads a file, transparently un-gzipping it when it starts with the gzip magic bytes.
fn read_maybe_gzipped(path: &Path) -> Result<Vec<u8>> {
    let bytes = crate::error::read_file(path)?;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut out)
            .map_err(|e| Error::format(path, format!("corrupt gzip data: {e}")))?;
        Ok(out)
    } else {
        Ok(bytes)
    }
}

/// Label names `0`, `1`, … up to the largest label seen.
fn numbered_classes(labels: &[usize]) -> Vec<String> {
    let n = labels.iter().max().map_or(0, |m| m + 1);
    (0..n).map(|i| i.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        ] {
            assert_eq!(s.parse::<DataSpec>().unwrap().to_string(), s);
        }
    }
}
