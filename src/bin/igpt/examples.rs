//! `igpt examples`: a few images of a dataset as PNG files for the web page's completion menu, listed
//! in the folder's index.json with the dataset they come from, so the page offers each model the
//! examples of its own dataset.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use igpt::data::DataSpec;
use serde_json::{Value, json};

#[derive(Args)]
pub struct ExamplesArgs {
    /// Images to take them from, e.g. emoji:test.
    #[arg(long)]
    data: DataSpec,
    /// How many: the first image of each class in turn (labelled data), else evenly spaced.
    #[arg(short = 'n', long, default_value_t = 8)]
    count: usize,
    /// Folder to write into (the site's: www/examples). Its index.json is updated; entries of other
    /// files are kept.
    #[arg(short, long)]
    output: PathBuf,
}

/// Indices of `count` images: the first of each class in order of appearance while classes last,
/// for unlabelled data (one class) evenly spaced through the split.
fn pick(labels: &[usize], classes: usize, count: usize) -> Vec<usize> {
    if classes > 1 {
        let mut seen = std::collections::HashSet::new();
        return (0..labels.len())
            .filter(|&i| seen.insert(labels[i]))
            .take(count)
            .collect();
    }
    let count = count.min(labels.len());
    (0..count).map(|k| k * labels.len() / count).collect()
}

pub fn run(args: ExamplesArgs) -> anyhow::Result<()> {
    let data = args.data.load()?;
    let spec = args.data.to_string();
    // "emoji:test" -> "emoji", the name the page matches against a card's dataset.
    let dataset = spec.split(':').next().unwrap_or(&spec).to_string();
    let stem = spec.replace([':', '/', '.'], "-");
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("creating {}", args.output.display()))?;
    let index_path = args.output.join("index.json");
    let mut index: Vec<Value> = match std::fs::read_to_string(&index_path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{} is not a JSON list", index_path.display()))?,
        Err(_) => Vec::new(),
    };
    let mut written = Vec::new();
    for i in pick(&data.labels, data.classes.len(), args.count) {
        let file = format!("{stem}-{i}.png");
        let path = args.output.join(&file);
        std::fs::write(&path, data.images[i].to_png()?)
            .with_context(|| format!("writing {}", path.display()))?;
        let class = &data.classes[data.labels[i]];
        let label = if data.classes.len() > 1 {
            format!("{class} ({spec} #{i})")
        } else {
            format!("{} #{i} ({spec})", capitalised(class))
        };
        written.push(json!({ "file": file, "label": label, "dataset": dataset }));
    }
    let files: Vec<&Value> = written.iter().map(|e| &e["file"]).collect();
    index.retain(|e| !files.contains(&&e["file"]));
    let count = written.len();
    index.extend(written);
    std::fs::write(&index_path, serde_json::to_string_pretty(&index)? + "\n")
        .with_context(|| format!("writing {}", index_path.display()))?;
    println!(
        "wrote {count} images of {spec} to {}; index.json lists {}",
        args.output.display(),
        index.len()
    );
    Ok(())
}

fn capitalised(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map_or(String::new(), |c| c.to_uppercase().chain(chars).collect())
}

#[cfg(test)]
mod tests {
    use super::pick;

    #[test]
    fn one_per_class_or_evenly_spaced() {
        assert_eq!(pick(&[2, 2, 0, 1, 0, 3], 4, 3), [0, 2, 3]);
        assert_eq!(pick(&[0; 10], 1, 4), [0, 2, 5, 7]);
        assert_eq!(pick(&[0; 2], 1, 4), [0, 1]);
    }
}
