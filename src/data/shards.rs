//! Tar shards of images, the WebDataset layout: `DIR/*.tar`, read in name order. In a shard, the files
//! of one sample sit next to each other and share a key (the path up to the first dot of the file
//! name): one image (`KEY.png`, `KEY.jpg`, ...) and, optionally, its label as decimal text in
//! `KEY.cls`. Other files (`KEY.json`, ...) are skipped. A shard is read front to back, so a dataset
//! of any size streams through a bounded amount of memory (see `stream.rs`).

use std::fs::File;
use std::io::{BufReader, Read};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use super::{Dataset, numbered_classes};
use crate::error::{Error, Result};
use crate::pixels::raster::Raster;

const IMAGE_EXTENSIONS: [&str; 7] = ["png", "jpg", "jpeg", "gif", "bmp", "webp", "tif"];

/// The most bytes one image file in a shard may hold: a bigger entry is an error, not an allocation.
const MAX_IMAGE_BYTES: u64 = 64 << 20;

/// One sample of a shard: its key, the image file's bytes (not yet decoded) and its label.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub key: String,
    pub image: Vec<u8>,
    pub label: Option<usize>,
}

impl Record {
    /// The image decoded as RGB; an error names the shard and the sample.
    pub fn decode(&self, shard: &Path) -> Result<Raster> {
        Raster::decode(&self.image, 3)
            .map_err(|e| Error::format(shard, format!("sample {:?}: {e}", self.key)))
    }
}

/// A dataset's shards, in the order their names sort, with how many samples each holds.
pub fn index(dir: &Path) -> Result<Vec<(PathBuf, usize)>> {
    let mut shards = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_file() && path.extension().is_some_and(|e| e == "tar") {
            shards.push(path);
        }
    }
    shards.sort();
    if shards.is_empty() {
        return Err(Error::format(dir, "no .tar shards found"));
    }
    shards
        .into_iter()
        .map(|path| {
            let count = read(&path, usize::MAX, |_| ControlFlow::Continue(()))?;
            Ok((path, count))
        })
        .collect()
}

/// Reads every sample of every shard into memory (for evaluation and probes; training streams).
pub(super) fn load(dir: &Path) -> Result<Dataset> {
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for (path, _) in index(dir)? {
        let mut failed = None;
        read(&path, 0, |record| match record.decode(&path) {
            Ok(image) => {
                images.push(image);
                labels.push(record.label);
                ControlFlow::Continue(())
            }
            Err(e) => {
                failed = Some(e);
                ControlFlow::Break(())
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
    }
    let labelled = labels.iter().filter(|l| l.is_some()).count();
    if labelled != 0 && labelled != labels.len() {
        return Err(Error::format(
            dir,
            format!(
                "{labelled} of {} samples have a .cls label: give every sample one, or none",
                labels.len()
            ),
        ));
    }
    let labels: Vec<usize> = labels.into_iter().map(|l| l.unwrap_or(0)).collect();
    let classes = if labelled == 0 {
        vec![String::new()]
    } else {
        numbered_classes(&labels)
    };
    Ok(Dataset {
        images,
        labels,
        classes,
    })
}

/// Calls `each` on the samples of the shard at `path` from sample `skip` on, in order, until it
/// returns `Break`. Samples before `skip` are passed over by their headers, without reading their
/// bytes. Returns how many samples the shard holds when read to its end (`skip` = `usize::MAX`
/// counts them), or how far it got when `each` stopped it.
pub fn read(
    path: &Path,
    skip: usize,
    mut each: impl FnMut(Record) -> ControlFlow<()>,
) -> Result<usize> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut archive = tar::Archive::new(BufReader::new(file));
    // Tar fields and names are arbitrary bytes: control characters are escaped, so an error stays
    // one line whatever the file holds.
    let bad = |reason: String| {
        let one_line: String = reason
            .chars()
            .map(|c| match c.is_control() {
                true => c.escape_default().to_string(),
                false => c.to_string(),
            })
            .collect();
        Error::format(path, one_line)
    };
    let entries = archive
        .entries_with_seek()
        .map_err(|e| bad(format!("not a tar file: {e}")))?;
    let mut index = 0;
    let mut sample: Option<Pending> = None;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("corrupt tar entry: {e}")))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .map_err(|e| bad(format!("unreadable entry name: {e}")))?
            .to_string_lossy()
            .into_owned();
        let (key, extension) = split_name(&name);
        if sample.as_ref().is_some_and(|s| s.key != key) {
            let done = sample.take().expect("checked above");
            if finish(done, index >= skip, &mut each)
                .map_err(bad)?
                .is_break()
            {
                return Ok(index + 1);
            }
            index += 1;
        }
        let pending = sample.get_or_insert_with(|| Pending::new(key));
        let reading = index >= skip;
        if IMAGE_EXTENSIONS.contains(&extension.as_str()) {
            pending.images += 1;
            if reading {
                if entry.size() > MAX_IMAGE_BYTES {
                    return Err(bad(format!(
                        "{name} holds {} bytes, more than the {MAX_IMAGE_BYTES} an image may",
                        entry.size()
                    )));
                }
                let mut bytes = Vec::with_capacity(entry.size() as usize);
                entry
                    .read_to_end(&mut bytes)
                    .map_err(|e| bad(format!("cannot read {name}: {e}")))?;
                pending.image = bytes;
            }
        } else if extension == "cls" && reading {
            let mut text = String::new();
            (&mut entry)
                .take(64)
                .read_to_string(&mut text)
                .map_err(|e| bad(format!("cannot read {name}: {e}")))?;
            let label = text
                .trim()
                .parse()
                .map_err(|_| bad(format!("{name} is not a label (a whole number): {text:?}")))?;
            pending.label = Some(label);
        }
    }
    if let Some(done) = sample {
        let reading = index >= skip;
        index += 1;
        if finish(done, reading, &mut each).map_err(bad)?.is_break() {
            return Ok(index);
        }
    }
    Ok(index)
}

/// A sample whose files are still being read.
struct Pending {
    key: String,
    images: usize,
    image: Vec<u8>,
    label: Option<usize>,
}

impl Pending {
    fn new(key: String) -> Self {
        Self {
            key,
            images: 0,
            image: Vec::new(),
            label: None,
        }
    }
}

/// Checks a sample is whole (exactly one image) and hands it to `each` if it is being read.
fn finish(
    sample: Pending,
    reading: bool,
    each: &mut impl FnMut(Record) -> ControlFlow<()>,
) -> std::result::Result<ControlFlow<()>, String> {
    if sample.images != 1 {
        return Err(format!(
            "sample {:?} has {} image files (one is needed: {})",
            sample.key,
            sample.images,
            IMAGE_EXTENSIONS.join(", ")
        ));
    }
    if !reading {
        return Ok(ControlFlow::Continue(()));
    }
    Ok(each(Record {
        key: sample.key,
        image: sample.image,
        label: sample.label,
    }))
}

/// `dir/abc.seg.png` → (`dir/abc`, `seg.png`): WebDataset's key is the name up to its first dot.
fn split_name(name: &str) -> (String, String) {
    let file_start = name.rfind('/').map_or(0, |i| i + 1);
    match name[file_start..].find('.') {
        Some(dot) => (
            name[..file_start + dot].to_string(),
            name[file_start + dot + 1..].to_ascii_lowercase(),
        ),
        None => (name.to_string(), String::new()),
    }
}

/// Writes a shard of `images` (PNG), named `000000`, `000001`, ... from `first`, each with its
/// label in a `.cls` file when `labels` is given: how tests and `igpt shard` make shards.
pub fn write(path: &Path, first: usize, images: &[Raster], labels: Option<&[usize]>) -> Result<()> {
    let samples = images.iter().enumerate().map(|(i, image)| {
        Ok(Sample {
            image: image.to_png()?,
            extension: "png",
            label: labels.map(|l| l[i]),
        })
    });
    write_samples(path, first, samples)
}

/// One sample to write: an image file's bytes, its extension (`png`, `jpg`, ...), and its label.
pub struct Sample {
    pub image: Vec<u8>,
    pub extension: &'static str,
    pub label: Option<usize>,
}

/// Writes a shard of `samples`, keys `000000`, `000001`, ... from `first`, taking them one at a time
/// (a shard of any size is written in the memory of one sample).
pub fn write_samples(
    path: &Path,
    first: usize,
    samples: impl Iterator<Item = Result<Sample>>,
) -> Result<()> {
    let file = File::create(path).map_err(|e| Error::io(path, e))?;
    let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
    let mut append = |name: String, bytes: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, name, bytes)
            .map_err(|e| Error::io(path, e))
    };
    for (i, sample) in samples.enumerate() {
        let sample = sample?;
        let key = format!("{:06}", first + i);
        append(format!("{key}.{}", sample.extension), &sample.image)?;
        if let Some(label) = sample.label {
            append(format!("{key}.cls"), label.to_string().as_bytes())?;
        }
    }
    builder
        .into_inner()
        .and_then(|mut w| std::io::Write::flush(&mut w))
        .map_err(|e| Error::io(path, e))
}

/// The extension a shard gives an image file from a folder (`IMAGE_EXTENSIONS`' spelling), if it is one.
pub fn image_extension(path: &Path) -> Option<&'static str> {
    let extension = path.extension()?.to_str()?.to_ascii_lowercase();
    IMAGE_EXTENSIONS.iter().copied().find(|e| *e == extension)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(value: u8) -> Raster {
        Raster::new(2, 2, 3, vec![value; 12]).unwrap()
    }

    #[test]
    fn keys_are_names_up_to_the_first_dot() {
        assert_eq!(
            split_name("a/b.c/x.seg.PNG"),
            ("a/b.c/x".into(), "seg.png".into())
        );
        assert_eq!(split_name("x"), ("x".into(), String::new()));
    }

    #[test]
    fn reads_samples_in_order_skips_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tar");
        let images: Vec<Raster> = (0..5).map(|i| image(i * 40)).collect();
        write(&path, 10, &images, Some(&[3, 1, 4, 1, 5])).unwrap();
        assert_eq!(index(dir.path()).unwrap(), vec![(path.clone(), 5)]);
        let mut seen = Vec::new();
        let count = read(&path, 2, |r| {
            seen.push((r.key.clone(), r.label, r.decode(&path).unwrap()));
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(count, 5);
        let keys: Vec<&str> = seen.iter().map(|(k, _, _)| k.as_str()).collect();
        assert_eq!(keys, ["000012", "000013", "000014"]);
        assert_eq!(seen[0].1, Some(4));
        assert_eq!(seen[0].2, images[2]);
        let mut taken = 0;
        read(&path, 0, |_| {
            taken += 1;
            if taken == 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
        assert_eq!(taken, 2);
        let data = load(dir.path()).unwrap();
        assert_eq!(data.labels, [3, 1, 4, 1, 5]);
        assert_eq!(data.classes.len(), 6);
    }

    #[test]
    fn malformed_shards_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            index(dir.path())
                .unwrap_err()
                .to_string()
                .contains("no .tar")
        );
        let path = dir.path().join("bad.tar");
        std::fs::write(&path, b"not a tar file at all").unwrap();
        assert!(load(dir.path()).is_err());
        // A sample with two images, and a label that is not a number.
        let mut builder = tar::Builder::new(File::create(&path).unwrap());
        for (name, bytes) in [
            ("a.png", image(1).to_png().unwrap()),
            ("a.jpg", image(2).to_png().unwrap()),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_cksum();
            builder.append_data(&mut header, name, &bytes[..]).unwrap();
        }
        builder.finish().unwrap();
        drop(builder);
        let err = index(dir.path()).unwrap_err().to_string();
        assert!(err.contains("2 image files"), "{err}");
        let mut builder = tar::Builder::new(File::create(&path).unwrap());
        for (name, bytes) in [
            ("a.png", image(1).to_png().unwrap()),
            ("a.cls", b"seven".to_vec()),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_cksum();
            builder.append_data(&mut header, name, &bytes[..]).unwrap();
        }
        builder.finish().unwrap();
        drop(builder);
        let err = load(dir.path()).err().expect("a bad label").to_string();
        assert!(err.contains("not a label"), "{err}");
    }
}
