//! CIFAR-10 / CIFAR-100 binary batches: records of label byte(s) then 32×32 R, G and B planes.

use std::path::{Path, PathBuf};

use super::{Dataset, Split, numbered_classes};
use crate::error::{Error, Result};
use crate::pixels::raster::Raster;

const SIDE: usize = 32;
const PLANE: usize = SIDE * SIDE;

/// The two layouts: CIFAR-10 has one label byte per record, CIFAR-100 a coarse and a fine one.
struct Layout {
    files: Vec<&'static str>,
    label_bytes: usize,
    names_file: &'static str,
}

pub(super) fn load(dir: &Path, split: Split) -> Result<Dataset> {
    // Accept the folder the archive unpacks to as well as its parent.
    let dir = [
        dir.join("cifar-10-batches-bin"),
        dir.join("cifar-100-binary"),
    ]
    .into_iter()
    .find(|d| d.is_dir())
    .unwrap_or_else(|| dir.to_path_buf());
    let cifar10 = Layout {
        files: match split {
            Split::Train => vec![
                "data_batch_1.bin",
                "data_batch_2.bin",
                "data_batch_3.bin",
                "data_batch_4.bin",
                "data_batch_5.bin",
            ],
            Split::Test => vec!["test_batch.bin"],
        },
        label_bytes: 1,
        names_file: "batches.meta.txt",
    };
    let cifar100 = Layout {
        files: vec![match split {
            Split::Train => "train.bin",
            Split::Test => "test.bin",
        }],
        label_bytes: 2,
        names_file: "fine_label_names.txt",
    };
    let layout = if dir.join(cifar100.files[0]).exists() {
        cifar100
    } else {
        cifar10
    };
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for name in &layout.files {
        let path = dir.join(name);
        let bytes = crate::error::read_file(&path)?;
        read_records(&path, &bytes, layout.label_bytes, &mut images, &mut labels)?;
    }
    let classes =
        class_names(&dir.join(layout.names_file)).unwrap_or_else(|| numbered_classes(&labels));
    Ok(Dataset {
        images,
        labels,
        classes,
    })
}

fn read_records(
    path: &PathBuf,
    bytes: &[u8],
    label_bytes: usize,
    images: &mut Vec<Raster>,
    labels: &mut Vec<usize>,
) -> Result<()> {
    let record = label_bytes + 3 * PLANE;
    if bytes.is_empty() || !bytes.len().is_multiple_of(record) {
        return Err(Error::format(
            path,
            format!(
                "truncated: {} bytes is not a whole number of {record}-byte CIFAR records",
                bytes.len()
            ),
        ));
    }
    for rec in bytes.chunks_exact(record) {
        // The fine label is the last label byte (CIFAR-100) or the only one (CIFAR-10).
        labels.push(rec[label_bytes - 1] as usize);
        let planes = &rec[label_bytes..];
        let pixels = (0..PLANE)
            .flat_map(|i| [planes[i], planes[PLANE + i], planes[2 * PLANE + i]])
            .collect();
        images.push(Raster::new(SIDE, SIDE, 3, pixels)?);
    }
    Ok(())
}

/// One class name per line, when the dataset ships the file.
fn class_names(path: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(path).ok()?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    (!names.is_empty()).then_some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(label: &[u8], fill: impl Fn(usize) -> u8) -> Vec<u8> {
        let mut r = label.to_vec();
        r.extend((0..3 * PLANE).map(fill));
        r
    }

    #[test]
    fn reads_cifar10_planes_as_rgb() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = record(&[3], |i| (i / PLANE) as u8 * 100); // R=0, G=100, B=200
        bytes.extend(record(&[9], |_| 7));
        std::fs::write(dir.path().join("test_batch.bin"), &bytes).unwrap();
        std::fs::write(dir.path().join("batches.meta.txt"), "a\nb\nc\nd\n").unwrap();
        let data = load(dir.path(), Split::Test).unwrap();
        assert_eq!(data.labels, vec![3, 9]);
        assert_eq!(&data.images[0].pixels[..6], &[0, 100, 200, 0, 100, 200]);
        assert_eq!(data.classes, vec!["a", "b", "c", "d"]);
    }

    #[test]
    fn reads_cifar100_fine_labels() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("train.bin"), record(&[1, 42], |_| 0)).unwrap();
        let data = load(dir.path(), Split::Train).unwrap();
        assert_eq!(data.labels, vec![42]);
        assert_eq!(data.classes.len(), 43);
    }

    #[test]
    fn truncated_batch_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("test_batch.bin"), vec![0u8; 3000]).unwrap();
        let err = load(dir.path(), Split::Test).err().unwrap().to_string();
        assert!(
            err.contains("test_batch.bin") && err.contains("truncated"),
            "{err}"
        );
        let err = load(dir.path(), Split::Train).err().unwrap().to_string();
        assert!(err.contains("data_batch_1.bin"), "{err}");
    }
}
