//! IDX files (MNIST, Fashion-MNIST): `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`.

use std::path::{Path, PathBuf};

use super::{Dataset, Split, numbered_classes, read_maybe_gzipped};
use crate::error::{Error, Result};
use crate::pixels::raster::Raster;

pub(super) fn load(dir: &Path, split: Split) -> Result<Dataset> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let images_path = find(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let labels_path = find(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let image_bytes = read_maybe_gzipped(&images_path)?;
    let label_bytes = read_maybe_gzipped(&labels_path)?;
    let (dims, pixels) = parse(&images_path, &image_bytes, 3)?;
    let (label_dims, labels) = parse(&labels_path, &label_bytes, 1)?;
    if dims[0] != label_dims[0] {
        return Err(Error::format(
            &labels_path,
            format!(
                "{} labels for {} images in {}",
                label_dims[0],
                dims[0],
                images_path.display()
            ),
        ));
    }
    let (h, w) = (dims[1], dims[2]);
    let images = pixels
        .chunks_exact(h * w)
        .map(|px| Raster::new(w, h, 1, px.to_vec()))
        .collect::<Result<Vec<_>>>()?;
    let labels: Vec<usize> = labels.iter().map(|&l| l as usize).collect();
    Ok(Dataset {
        classes: numbered_classes(&labels),
        images,
        labels,
    })
}

/// `name.gz` if present, else `name`.
fn find(dir: &Path, name: &str) -> Result<PathBuf> {
    let gz = dir.join(format!("{name}.gz"));
    let plain = dir.join(name);
    if gz.exists() {
        Ok(gz)
    } else if plain.exists() {
        Ok(plain)
    } else {
        Err(Error::format(
            &plain,
            format!("not found (nor {name}.gz){}", hint(dir)),
        ))
    }
}

fn hint(dir: &Path) -> &'static str {
    if dir == Path::new(super::FASHION_MNIST_DIR) {
        "; install it with `apt-get install dataset-fashion-mnist`"
    } else {
        ""
    }
}

/// Checks the header (magic, unsigned-byte type, `rank` dimensions) and the data length.
fn parse<'a>(path: &Path, bytes: &'a [u8], rank: usize) -> Result<(Vec<usize>, &'a [u8])> {
    let bad = |reason: String| Error::format(path, reason);
    let header_len = 4 + 4 * rank;
    if bytes.len() < header_len {
        return Err(bad(format!(
            "truncated: {} bytes, shorter than an IDX header",
            bytes.len()
        )));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad("not an IDX file (bad magic number)".into()));
    }
    if bytes[2] != 0x08 {
        return Err(bad(format!(
            "IDX element type 0x{:02x} is not unsigned bytes (0x08)",
            bytes[2]
        )));
    }
    if bytes[3] as usize != rank {
        return Err(bad(format!(
            "expected {rank} dimensions, the header says {}",
            bytes[3]
        )));
    }
    let dims: Vec<usize> = bytes[4..header_len]
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let want: usize = dims.iter().product();
    let data = &bytes[header_len..];
    if data.len() != want {
        return Err(bad(format!(
            "truncated or padded: dimensions {dims:?} need {want} bytes of data, found {}",
            data.len()
        )));
    }
    Ok((dims, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 0, 0x08, dims.len() as u8];
        for d in dims {
            b.extend(d.to_be_bytes());
        }
        b.extend_from_slice(data);
        b
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn reads_plain_and_gzipped_files() {
        let dir = tempfile::tempdir().unwrap();
        let pixels: Vec<u8> = (0..2 * 3 * 4).map(|v| v as u8).collect();
        std::fs::write(
            dir.path().join("t10k-images-idx3-ubyte.gz"),
            gzip(&idx_bytes(&[2, 3, 4], &pixels)),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("t10k-labels-idx1-ubyte"),
            idx_bytes(&[2], &[7, 1]),
        )
        .unwrap();
        let data = load(dir.path(), Split::Test).unwrap();
        assert_eq!(data.labels, vec![7, 1]);
        assert_eq!((data.images[1].width, data.images[1].height), (4, 3));
        assert_eq!(data.images[1].pixels, pixels[12..]);
        assert_eq!(data.classes.len(), 8);
    }

    #[test]
    fn malformed_files_name_the_file_and_the_fault() {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("train-images-idx3-ubyte");
        let labels = dir.path().join("train-labels-idx1-ubyte");
        std::fs::write(&labels, idx_bytes(&[2], &[0, 1])).unwrap();
        let cases: [(Vec<u8>, &str); 4] = [
            (idx_bytes(&[2, 2, 2], &[0; 5]), "truncated"),
            (vec![0, 0, 8], "header"),
            (idx_bytes(&[2, 2], &[0; 4]), "dimensions"),
            (gzip(&idx_bytes(&[2, 2, 2], &[0; 8]))[..20].to_vec(), "gzip"),
        ];
        for (bytes, fault) in cases {
            std::fs::write(&images, &bytes).unwrap();
            let err = load(dir.path(), Split::Train).err().unwrap().to_string();
            assert!(err.contains("train-images-idx3-ubyte"), "{err}");
            assert!(err.contains(fault), "{err} should mention {fault}");
        }
        std::fs::write(&images, idx_bytes(&[3, 1, 1], &[0; 3])).unwrap();
        let err = load(dir.path(), Split::Train).err().unwrap().to_string();
        assert!(err.contains("2 labels for 3 images"), "{err}");
        let err = load(&dir.path().join("missing"), Split::Train)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("not found"), "{err}");
    }
}
