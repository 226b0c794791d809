//! The shipped models (`models/`): every one listed in index.json loads and scores, on its card's
//! pinned check subset, exactly what its card recorded there; every card's baselines are derived
//! again from the data; and (`--ignored`, run by `scripts/test.sh --full` and before a model ships)
//! every card's whole-split figure is reproduced.

mod common;

use std::path::PathBuf;

use common::B;
use igpt::data::DataSpec;
use igpt::eval::sequence_nll;
use igpt::store::{self, BaselinesRecord, ModelCard, StoredModel};
use igpt::train::TrainConfig;
use igpt::train::finetune::FinetuneConfig;

/// Each listed model, loaded, with its directory; only the one named by `IGPT_SHIPPED_MODEL`, when
/// set (checking a new model before it ships without measuring the others again).
fn listed_models() -> Vec<(PathBuf, StoredModel<B>)> {
    let only = std::env::var("IGPT_SHIPPED_MODEL").ok();
    let models = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models");
    let index: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(models.join("index.json")).unwrap()).unwrap();
    assert!(!index.is_empty(), "models/index.json lists no model");
    let chosen: Vec<_> = index
        .iter()
        .filter(|entry| only.as_deref().is_none_or(|name| entry["path"] == name))
        .collect();
    assert!(
        !chosen.is_empty(),
        "models/index.json does not list {only:?}"
    );
    chosen
        .into_iter()
        .map(|entry| {
            let dir = models.join(entry["path"].as_str().expect("each entry has a path"));
            let stored = store::load_dir::<B>(&dir, &Default::default()).unwrap();
            (dir, stored)
        })
        .collect()
}

/// The first `limit` images of `spec` (all when `None`) as the model's tokens.
fn tokens(stored: &StoredModel<B>, spec: &str, limit: Option<usize>) -> Vec<Vec<u16>> {
    let data = spec.parse::<DataSpec>().unwrap().load().unwrap();
    let tokenizer = stored.tokenizer();
    let count = limit.unwrap_or(data.images.len()).min(data.images.len());
    data.images[..count]
        .iter()
        .map(|im| tokenizer.tokenize(im))
        .collect()
}

/// The baselines a listed model's card records (each must record them).
fn baselines(dir: &std::path::Path, stored: &StoredModel<B>) -> BaselinesRecord {
    stored
        .card
        .baselines
        .clone()
        .unwrap_or_else(|| panic!("{}: no baselines in card.json", dir.display()))
}

/// Every card in `models/`, listed or not, is a typed card (an unknown field is an error) that
/// reads and writes back unchanged, and
/// the settings it keeps as JSON are the settings igpt reads: a run's and a fine-tuning's.
#[test]
fn every_card_in_models_parses() {
    let models = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models");
    let mut cards = 0;
    for entry in std::fs::read_dir(&models).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.join(store::CARD_FILE).exists() {
            continue;
        }
        let card = ModelCard::read_or(&dir, || unreachable!()).unwrap();
        // Nothing is lost or added by reading and writing it again.
        let text = std::fs::read_to_string(dir.join(store::CARD_FILE)).unwrap();
        assert_eq!(
            serde_json::to_value(&card).unwrap(),
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            "{}: the typed card differs from the file",
            dir.display()
        );
        let mut stage = card.training.as_ref();
        while let Some(training) = stage {
            serde_json::from_value::<TrainConfig>(training.config.clone())
                .unwrap_or_else(|e| panic!("{}: training settings: {e}", dir.display()));
            stage = training
                .started_from
                .as_ref()
                .and_then(|s| s.record.as_deref());
        }
        let finetunes = card
            .finetune
            .iter()
            .chain(card.finetuned.iter().map(|f| &f.finetune));
        for finetune in finetunes {
            serde_json::from_value::<FinetuneConfig>(finetune.config.clone())
                .unwrap_or_else(|e| panic!("{}: fine-tuning settings: {e}", dir.display()));
        }
        cards += 1;
    }
    assert!(cards >= 5, "only {cards} cards in models/");
}

/// The pinned check (`igpt eval --data SPEC --limit N --record`) tells one checkpoint from another:
/// 1e-4 bits, where the emoji model's previous checkpoint was 0.05 away and `fmnist-256x8` 0.05 from
/// `fmnist-256x2`. It also beats the card's context baseline on those images' whole split.
#[test]
fn every_listed_model_scores_its_pinned_check_exactly() {
    for (dir, stored) in listed_models() {
        let check = stored
            .card
            .check
            .clone()
            .unwrap_or_else(|| panic!("{}: no pinned check in card.json", dir.display()));
        let (spec, images, pinned) = (check.data.as_str(), check.images, check.bits_per_token);
        let ids = tokens(&stored, spec, Some(images));
        assert_eq!(
            ids.len(),
            images,
            "{}: the check's data is shorter",
            dir.display()
        );
        let measured = sequence_nll(&stored.model, &ids, 32, |_| {})
            .unwrap()
            .bits_per_token;
        let context = baselines(&dir, &stored).bits.context3;
        assert!(
            (measured - pinned).abs() < 1e-4 && measured < context,
            "{}: {measured} bits/token on the first {images} images of {spec}; the card pinned {pinned} (context model {context})",
            dir.display()
        );
    }
}

/// The bars each card says its model clears are derived again, from the card's own data and the
/// model's palette: the 3-neighbour context model, the per-position and global unigrams.
#[test]
fn every_card_s_baselines_are_derived_again() {
    for (dir, stored) in listed_models() {
        let recorded = baselines(&dir, &stored);
        // Fitted on what the model trained on: the split, less a run's --limit and --holdout.
        let config: Option<TrainConfig> = stored.card.training.as_ref().map(|t| {
            serde_json::from_value(t.config.clone()).expect("the card's training settings parse")
        });
        let mut train = tokens(
            &stored,
            &recorded.train_data,
            config.as_ref().and_then(|c| c.limit),
        );
        train.truncate(train.len() - config.map_or(0, |c| c.holdout));
        let test = tokens(&stored, &recorded.test_data, None);
        assert_eq!(recorded.test_images, test.len());
        let tokenizer = stored.tokenizer();
        let derived = igpt::analysis::baselines::baselines(
            &train,
            &test,
            tokenizer.width,
            tokenizer.palette.len(),
        )
        .unwrap();
        let recorded = recorded.bits;
        for (key, want, got) in [
            ("context3", recorded.context3, derived.context3),
            ("per_position", recorded.per_position, derived.per_position),
            (
                "global_unigram",
                recorded.global_unigram,
                derived.global_unigram,
            ),
            ("uniform", recorded.uniform, derived.uniform),
        ] {
            assert!(
                (want - got).abs() < 1e-9,
                "{}: {key} is {got} from the data, {want} in the card",
                dir.display()
            );
        }
    }
}

/// Every card's headline figure, bits/token on all of its test split (minutes on 2 cores: run with
/// `scripts/test.sh --full`, and before a model ships).
#[test]
#[ignore]
fn every_card_s_whole_test_split_figure_is_reproduced() {
    for (dir, stored) in listed_models() {
        let spec = stored
            .card
            .test_data
            .clone()
            .expect("the card names its test data");
        let ids = tokens(&stored, &spec, None);
        let measured = sequence_nll(&stored.model, &ids, 32, |_| {})
            .unwrap()
            .bits_per_token;
        let card = stored.card.metrics["test_bits_per_token"];
        assert_eq!(stored.card.metrics["test_images"] as usize, ids.len());
        assert!(
            (measured - card).abs() < 1e-4,
            "{}: {measured} bits/token on all of {spec}, the card says {card}",
            dir.display()
        );
        eprintln!("{}: {measured:.6} (card {card:.6})", dir.display());
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

/// The page's model menu shows each index label, which states the model's size and test bits/token
/// by hand: both must be the card's (a label went stale once when a new milestone shipped).
#[test]
fn every_index_label_states_its_cards_bits_and_size() {
    let models = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models");
    let index: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(models.join("index.json")).unwrap()).unwrap();
    for entry in index {
        let path = entry["path"].as_str().unwrap();
        let label = entry["label"].as_str().expect("each entry has a label");
        let card: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(models.join(path).join("card.json")).unwrap(),
        )
        .unwrap();
        let bits = card["metrics"]["test_bits_per_token"]
            .as_f64()
            .expect("each shipped card has its test bits");
        let parameters = card["training"]["parameters"].as_f64().unwrap() / 1e6;
        for stated in [
            format!("{bits:.2} bits"),
            format!("{parameters:.1}M parameters"),
        ] {
            assert!(
                label.contains(&stated),
                "{path}: the label {label:?} should say {stated:?} (from card.json)"
            );
        }
    }
}

/// The page offers mean ablation for a model that ships `ablation-means.json`: the means must fit
/// the model's shape and come from its own training data (not the test split, which chooses nothing).
#[test]
fn shipped_ablation_means_fit_their_models() {
    use igpt::inspect::ablation_means::AblationMeans;
    let mut checked = 0;
    for (dir, stored) in listed_models() {
        let Some(means) = AblationMeans::read(&dir).unwrap() else {
            continue;
        };
        means.check(&stored.model).unwrap();
        assert_eq!(
            Some(means.data.as_str()),
            stored.card.dataset.as_deref(),
            "{}: means over another dataset than the one trained on",
            dir.display()
        );
        assert!(
            means.images >= 100,
            "{}: means over too few images",
            dir.display()
        );
        checked += 1;
    }
    // The page's default (the index's first) ships them, so an unfiltered run checks at least one.
    if std::env::var("IGPT_SHIPPED_MODEL").is_err() {
        assert!(checked >= 1, "no shipped model has ablation-means.json");
    }
    eprintln!("{checked} models ship ablation means");
}

/// The light weights the page downloads (`igpt quantize`) score their card's pinned check again, and
/// keep the promises README makes for them: at most half the full file's gzipped bytes, and at most
/// +0.01 bits/token over the full weights on the whole test split.
#[test]
fn the_light_weights_score_their_check_and_keep_their_promises() {
    let mut checked = 0;
    for (dir, stored) in listed_models() {
        let Some(light) = &stored.card.quantized else {
            continue;
        };
        let model = store::load_dir_with::<B>(&dir, &light.file, &Default::default()).unwrap();
        let check = stored
            .card
            .check
            .as_ref()
            .expect("a card with light weights has a check");
        let sequences = tokens(&model, &check.data, Some(check.images));
        let bits = sequence_nll(&model.model, &sequences, 16, |_| {})
            .unwrap()
            .bits_per_token;
        assert!(
            (bits - light.check_bits_per_token).abs() < 1e-4,
            "{}: the light weights score {bits}, the card says {}",
            dir.display(),
            light.check_bits_per_token
        );
        assert!(
            2 * light.gzip_bytes <= light.full_gzip_bytes,
            "{}: not half",
            dir.display()
        );
        let full = stored.card.metrics["test_bits_per_token"];
        assert!(
            light.test_bits_per_token - full <= 0.01,
            "{}: the light weights cost {} bits/token",
            dir.display(),
            light.test_bits_per_token - full
        );
        eprintln!("{}: light weights {bits:.6} on the check", dir.display());
        checked += 1;
    }
    // The page's default (the index's first) ships them, so an unfiltered run checks at least one.
    if std::env::var("IGPT_SHIPPED_MODEL").is_err() {
        assert!(checked >= 1, "no shipped model has light weights");
    }
}
