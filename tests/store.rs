//! Model directories: saving then loading round-trips bit-exactly (f32) or to f16 precision; bad files
//! give errors that name the file; NLL evaluation reproduces HF's number.

mod common;

use std::path::Path;

use burn::tensor::{Int, Tensor, TensorData};
use common::{B, expected, fixture_dir, max_abs_diff};
use igpt::eval::sequence_nll;
use igpt::store::{self, StoredModel, WeightPrecision};
use igpt::{ImageGptConfig, ModelCard};

fn logits(stored: &StoredModel<B>) -> Vec<f32> {
    let exp = expected();
    let flat: Vec<i64> = exp.model_input.concat();
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(flat, [3, 64]), &Default::default());
    stored.model.forward(ids).into_data().into_vec().unwrap()
}

fn tensors(dir: &Path) -> Vec<(String, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(dir.join(store::WEIGHTS_FILE)).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, view.shape().to_vec(), view.data().to_vec()))
        .collect();
    out.sort();
    out
}

#[test]
fn f32_save_and_load_round_trips_bit_exactly() {
    let original = store::load_dir::<B>(&fixture_dir(), &Default::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    original.save_dir(dir.path(), WeightPrecision::F32).unwrap();
    // The HF file and ours hold the same tensors, byte for byte.
    assert_eq!(tensors(dir.path()), tensors(&fixture_dir()));
    let reloaded = store::load_dir::<B>(dir.path(), &Default::default()).unwrap();
    assert_eq!(reloaded.config, original.config);
    assert_eq!(reloaded.palette, original.palette);
    assert_eq!(reloaded.card, original.card);
    assert_eq!(logits(&reloaded), logits(&original));
}

#[test]
fn f16_weights_halve_the_file_and_keep_the_logits() {
    let original = store::load_dir::<B>(&fixture_dir(), &Default::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    original.save_dir(dir.path(), WeightPrecision::F16).unwrap();
    let size = |d: &Path| {
        std::fs::metadata(d.join(store::WEIGHTS_FILE))
            .unwrap()
            .len()
    };
    assert!(size(dir.path()) * 10 < size(&fixture_dir()) * 6);
    let reloaded = store::load_dir::<B>(dir.path(), &Default::default()).unwrap();
    let diff = max_abs_diff(&logits(&reloaded), &logits(&original));
    assert!(diff < 5e-3, "f16 weights moved the logits by {diff}");
    assert!(diff > 0.0, "f16 storage should round something");
}

#[test]
fn light_weights_pack_the_large_tensors_and_keep_the_logits_close() {
    use igpt::store::q6::{Q6_WEIGHTS_FILE, SCALES_SUFFIX};
    let original = store::load_dir::<B>(&fixture_dir(), &Default::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    original.save_dir(dir.path(), WeightPrecision::F32).unwrap();
    let light_path = dir.path().join(Q6_WEIGHTS_FILE);
    original
        .save_weights(&light_path, WeightPrecision::Q6)
        .unwrap();
    // The fixture's MLP projections (32x128 and 128x32) are large enough to pack, each with its
    // scales; everything else is f16.
    let bytes = std::fs::read(&light_path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let packed: Vec<String> = st
        .tensors()
        .into_iter()
        .filter(|(_, v)| v.dtype() == safetensors::Dtype::U8)
        .map(|(name, _)| name)
        .collect();
    assert_eq!(packed.len(), 4, "{packed:?}");
    for name in &packed {
        assert!(st.tensor(&format!("{name}{SCALES_SUFFIX}")).is_ok());
    }
    let light =
        store::load_dir_with::<B>(dir.path(), Q6_WEIGHTS_FILE, &Default::default()).unwrap();
    let diff = max_abs_diff(&logits(&light), &logits(&original));
    assert!(
        diff < 0.05 && diff > 0.0,
        "6-bit weights moved the logits by {diff}"
    );
}

#[test]
fn a_new_model_keeps_the_papers_attention_scale() {
    let config = ImageGptConfig::preset("tiny", 16, 36).unwrap();
    assert!(config.exact_attention_scale);
    let stored = StoredModel::<B> {
        labels: Vec::new(),
        model: config.init(&Default::default()),
        config: config.clone(),
        palette: igpt::Palette::new(1, (0..16).map(|i| i as f32 / 8.0 - 1.0).collect()).unwrap(),
        card: ModelCard {
            image_height: 6,
            image_width: 6,
            channels: 1,
            ..Default::default()
        },
    };
    let dir = tempfile::tempdir().unwrap();
    stored.save_dir(dir.path(), WeightPrecision::F32).unwrap();
    let reloaded = store::load_dir::<B>(dir.path(), &Default::default()).unwrap();
    assert_eq!(reloaded.config, config);
    // The HF fixture, by contrast, loads with HF's floored scale.
    let hf = store::load_dir::<B>(&fixture_dir(), &Default::default()).unwrap();
    assert!(!hf.config.exact_attention_scale);
}

/// Copies the fixture, lets `spoil` damage it, and returns the load error.
fn load_error(spoil: impl FnOnce(&Path)) -> String {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture_dir()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    spoil(dir.path());
    match store::load_dir::<B>(dir.path(), &Default::default()) {
        Ok(_) => panic!("a spoiled model directory loaded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_files_give_errors_that_name_them() {
    let err = load_error(|d| {
        let bytes = std::fs::read(d.join(store::WEIGHTS_FILE)).unwrap();
        std::fs::write(d.join(store::WEIGHTS_FILE), &bytes[..bytes.len() / 2]).unwrap();
    });
    assert!(err.contains("model.safetensors"), "{err}");

    let err =
        load_error(|d| std::fs::write(d.join(store::CONFIG_FILE), "{\"vocab_size\": 17}").unwrap());
    assert!(err.contains("config.json"), "{err}");

    let err = load_error(|d| {
        let text = std::fs::read_to_string(d.join(store::CONFIG_FILE)).unwrap();
        std::fs::write(
            d.join(store::CONFIG_FILE),
            text.replace("\"n_embd\": 32", "\"n_embd\": 64"),
        )
        .unwrap();
    });
    assert!(
        err.contains("config.json") && err.contains("parameters") && err.contains("holds"),
        "{err}"
    );

    // A config declaring sizes no machine could allocate is refused by its limits, before allocating.
    for (from, to, limit) in [
        (
            "\"n_embd\": 32",
            "\"n_embd\": 1099511627776",
            "n_embd is 1099511627776",
        ),
        (
            "\"n_layer\": 2",
            "\"n_layer\": 4000000000",
            "n_layer is 4000000000",
        ),
        (
            "\"n_positions\": 64",
            "\"n_positions\": 1000000000000",
            "n_positions",
        ),
    ] {
        let err = load_error(|d| {
            let text = std::fs::read_to_string(d.join(store::CONFIG_FILE)).unwrap();
            assert!(text.contains(from), "{from} not in the fixture's config");
            std::fs::write(d.join(store::CONFIG_FILE), text.replace(from, to)).unwrap();
        });
        assert!(
            err.contains("config.json") && err.contains(limit) && err.contains("the limit is"),
            "{err}"
        );
    }

    // A tensor whose byte range disagrees with its dtype and shape.
    let err = load_error(|d| {
        let path = d.join(store::WEIGHTS_FILE);
        let bytes = std::fs::read(&path).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        header["transformer.wte.weight"]["shape"] = serde_json::json!([17, 31]);
        let mut text = serde_json::to_string(&header).unwrap();
        while text.len() < n {
            text.push(' ');
        }
        assert_eq!(text.len(), n, "the new header fits the old one's length");
        std::fs::write(
            &path,
            [&bytes[..8], text.as_bytes(), &bytes[8 + n..]].concat(),
        )
        .unwrap();
    });
    assert!(
        err.contains("model.safetensors") && err.contains("invalid shape"),
        "{err}"
    );

    let err = load_error(|d| {
        let text = std::fs::read_to_string(d.join(store::CONFIG_FILE)).unwrap();
        std::fs::write(
            d.join(store::CONFIG_FILE),
            text.replace("\"vocab_size\": 17", "\"vocab_size\": 9"),
        )
        .unwrap();
    });
    assert!(
        err.contains("preprocessor_config.json") && err.contains("16 colours"),
        "{err}"
    );

    let err = load_error(|d| {
        std::fs::write(
            d.join(store::CARD_FILE),
            r#"{"image_height": 4, "image_width": 4, "channels": 3}"#,
        )
        .unwrap()
    });
    assert!(err.contains("card.json"), "{err}");

    let err = load_error(|d| std::fs::remove_file(d.join(store::WEIGHTS_FILE)).unwrap());
    assert!(err.contains("model.safetensors"), "{err}");
}

#[test]
fn nll_reproduces_hf() {
    let exp = expected();
    let stored = store::load_dir::<B>(&fixture_dir(), &Default::default()).unwrap();
    let seqs: Vec<Vec<u16>> = exp
        .input_ids
        .iter()
        .map(|r| r.iter().map(|&v| v as u16).collect())
        .collect();
    // Batches of 2 exercise the batching: 2 sequences, then 1.
    let nll = sequence_nll(&stored.model, &seqs, 2, |_| {}).unwrap();
    assert!((nll.nll_nats - exp.mean_nll_nats).abs() < 1e-5, "{nll:?}");
    assert_eq!((nll.count, nll.tokens), (3, 192));
    assert!((nll.bits_per_token - nll.nll_nats / std::f64::consts::LN_2).abs() < 1e-12);

    let bad = vec![vec![16u16; 4]];
    assert!(sequence_nll(&stored.model, &bad, 2, |_| {}).is_err());
    let too_long = vec![vec![0u16; 65]];
    assert!(sequence_nll(&stored.model, &too_long, 2, |_| {}).is_err());
}
