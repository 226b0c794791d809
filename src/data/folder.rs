//! A folder of images: one sub-folder per class (sorted names give the labels), or images directly
//! inside (one class). Images are read as RGB at their own size; tokenizing resizes them.

use std::path::{Path, PathBuf};

use super::Dataset;
use crate::error::{Error, Result};
use crate::pixels::raster::Raster;

const EXTENSIONS: [&str; 7] = ["png", "jpg", "jpeg", "gif", "bmp", "webp", "tif"];

pub(super) fn load(dir: &Path) -> Result<Dataset> {
    let FolderFiles { files, classes } = list(dir)?;
    let mut data = Dataset {
        images: Vec::with_capacity(files.len()),
        labels: Vec::with_capacity(files.len()),
        classes,
    };
    for (path, label) in files {
        data.images.push(Raster::open(&path, 3)?);
        data.labels.push(label);
    }
    Ok(data)
}

/// A folder dataset's image files in order, each with its label, and the class names.
pub struct FolderFiles {
    pub files: Vec<(PathBuf, usize)>,
    pub classes: Vec<String>,
}

/// Lists a folder dataset; nothing is read but the folder listings (`igpt shard` packs folders of
/// any size this way).
pub fn list(dir: &Path) -> Result<FolderFiles> {
    let entries = sorted_entries(dir)?;
    let class_dirs: Vec<&PathBuf> = entries.iter().filter(|p| p.is_dir()).collect();
    let groups: Vec<(String, PathBuf)> = if class_dirs.is_empty() {
        vec![(String::new(), dir.to_path_buf())]
    } else {
        class_dirs
            .iter()
            .map(|p| {
                (
                    p.file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned(),
                    (*p).clone(),
                )
            })
            .collect()
    };
    let mut files = Vec::new();
    let mut classes = Vec::new();
    for (label, (name, class_dir)) in groups.into_iter().enumerate() {
        for path in sorted_entries(&class_dir)?
            .into_iter()
            .filter(|p| is_image(p))
        {
            files.push((path, label));
        }
        classes.push(name);
    }
    if files.is_empty() {
        return Err(Error::format(
            dir,
            format!("no images found (looked for {})", EXTENSIONS.join(", ")),
        ));
    }
    Ok(FolderFiles { files, classes })
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut paths = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .map(|entry| entry.map(|e| e.path()).map_err(|e| Error::io(dir, e)))
        .collect::<Result<Vec<_>>>()?;
    paths.sort();
    Ok(paths)
}

fn is_image(path: &Path) -> bool {
    path.is_file()
        && path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_png(path: &Path, value: u8) {
        let img = Raster::new(2, 2, 3, vec![value; 12]).unwrap();
        std::fs::write(path, img.to_png().unwrap()).unwrap();
    }

    #[test]
    fn classes_come_from_sorted_subfolders() {
        let dir = tempfile::tempdir().unwrap();
        for (class, v) in [("cats", 10), ("ants", 20)] {
            std::fs::create_dir(dir.path().join(class)).unwrap();
            write_png(&dir.path().join(class).join("a.png"), v);
        }
        std::fs::write(dir.path().join("ants/notes.txt"), "not an image").unwrap();
        let data = load(dir.path()).unwrap();
        assert_eq!(data.classes, vec!["ants", "cats"]);
        assert_eq!(data.labels, vec![0, 1]);
        assert_eq!(data.images[0].pixels[0], 20);
    }

    #[test]
    fn undecodable_image_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("broken.png"), b"not a png").unwrap();
        let err = load(dir.path()).err().unwrap().to_string();
        assert!(err.contains("broken.png"), "{err}");
        let empty = tempfile::tempdir().unwrap();
        assert!(
            load(empty.path())
                .err()
                .unwrap()
                .to_string()
                .contains("no images")
        );
    }
}
