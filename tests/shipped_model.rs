//! The shipped models (`models/`): every one listed in index.json loads, and on the first images of its
//! card's test split it beats the 3-neighbour context baseline recorded in its card and stays near its
//! card's full-test number.

mod common;

use std::path::PathBuf;

use common::B;
use igpt::data::DataSpec;
use igpt::eval::sequence_nll;
use igpt::store;

#[test]
fn every_listed_model_loads_and_scores_near_its_card() {
    let models = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models");
    let index: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(models.join("index.json")).unwrap()).unwrap();
    assert!(!index.is_empty(), "models/index.json lists no model");
    for entry in index {
        let dir = models.join(entry["path"].as_str().expect("each entry has a path"));
        let stored = store::load_dir::<B>(&dir, &Default::default()).unwrap();
        let card_bits = stored.card.metrics["test_bits_per_token"];
        let baselines = &stored.card.extra["baselines"];
        let context_bits = baselines["context3"]
            .as_f64()
            .expect("the card's context baseline");
        let test = baselines["test_data"]
            .as_str()
            .expect("the card names its test split")
            .parse::<DataSpec>()
            .unwrap()
            .load()
            .unwrap();
        let tokenizer = stored.tokenizer();
        // About 150k tokens each: 191 Fashion-MNIST images, 146 emoji.
        let count = (150_000 / (tokenizer.width * tokenizer.height)).min(test.images.len());
        let ids: Vec<_> = test.images[..count]
            .iter()
            .map(|im| tokenizer.tokenize(im))
            .collect();
        let nll = sequence_nll(&stored.model, &ids, 50, |_| {}).unwrap();
        // A slice of the test split varies around its full mean by a few hundredths of a bit.
        assert!(
            nll.bits_per_token < context_bits && (nll.bits_per_token - card_bits).abs() < 0.1,
            "{}: {} bits/token on {count} test images, card says {card_bits}, context model {context_bits}",
            dir.display(),
            nll.bits_per_token
        );
    }
}

/// The page trusts a model file only when it matches models/index.json (size and sha256), so the index
/// must describe the files as shipped: `scripts/index-models.py` rewrites it.
#[test]
fn the_index_gives_every_model_file_its_size_and_hash() {
    use sha2::{Digest, Sha256};
    let models = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models");
    let index: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(models.join("index.json")).unwrap()).unwrap();
    for entry in index {
        let dir = models.join(entry["path"].as_str().unwrap());
        let files = entry["files"]
            .as_object()
            .expect("each entry lists its files");
        for name in [
            "model.safetensors",
            "config.json",
            "preprocessor_config.json",
        ] {
            assert!(
                files.contains_key(name),
                "{}: {name} is not listed",
                dir.display()
            );
        }
        for (name, listed) in files {
            let bytes = std::fs::read(dir.join(name)).unwrap();
            let hash: String = Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(
                (listed["size"].as_u64(), listed["sha256"].as_str()),
                (Some(bytes.len() as u64), Some(hash.as_str())),
                "{}/{name} differs from models/index.json: run scripts/index-models.py",
                dir.display()
            );
        }
    }
}
