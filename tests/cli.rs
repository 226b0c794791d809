//! The `igpt` binary end to end, on the HF fixture and the real Fashion-MNIST files
//! (Debian's `dataset-fashion-mnist`, which `.ci/run` installs).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{expected, fixture_dir};
use igpt::data::DataSpec;
use igpt::store;

fn igpt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_igpt"))
        .args(args)
        .output()
        .expect("the igpt binary runs")
}

fn stdout_of(args: &[&str]) -> String {
    let out = igpt(args);
    assert!(
        out.status.success(),
        "igpt {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A 16-grey palette fitted on 500 Fashion-MNIST training images, written to `dir`.
fn fit_small_palette(dir: &str) {
    stdout_of(&[
        "palette",
        "--data",
        "fashion-mnist:train",
        "--limit",
        "500",
        "-o",
        dir,
    ]);
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn eval_reproduces_hf_mean_nll_on_the_fixture() {
    let exp = expected();
    let dir = tempfile::tempdir().unwrap();
    let ids = dir.path().join("ids.json");
    std::fs::write(&ids, serde_json::to_string(&exp.input_ids).unwrap()).unwrap();
    let model = fixture_dir();
    let out = json(&stdout_of(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--ids",
        ids.to_str().unwrap(),
        "--json",
    ]));
    let nll = out["nll_nats"].as_f64().unwrap();
    assert!((nll - exp.mean_nll_nats).abs() < 1e-5, "{out}");
    assert_eq!(out["count"], 3);
    let bits = out["bits_per_token"].as_f64().unwrap();
    assert!((bits - nll / std::f64::consts::LN_2).abs() < 1e-9);
}

#[test]
fn palette_init_tokenize_and_eval_on_fashion_mnist() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    stdout_of(&[
        "palette",
        "--data",
        "fashion-mnist:train",
        "--limit",
        "2000",
        "-k",
        "16",
        "-o",
        &path("pal"),
    ]);
    let tokenizer = store::read_tokenizer(Path::new(&path("pal"))).unwrap();
    assert_eq!(
        (tokenizer.palette.len(), tokenizer.palette.channels()),
        (16, 1)
    );
    assert_eq!((tokenizer.height, tokenizer.width), (28, 28));
    // Fashion-MNIST backgrounds are black: the darkest centre sits at the bottom of [-1, 1].
    assert!(tokenizer.palette.centre(0)[0] < -0.95);

    stdout_of(&[
        "init",
        "--preset",
        "tiny",
        "--palette",
        &path("pal"),
        "-o",
        &path("model"),
    ]);

    // A real test image, written as PNG, tokenizes through the CLI as through the library.
    let test = "fashion-mnist:test"
        .parse::<DataSpec>()
        .unwrap()
        .load()
        .unwrap();
    std::fs::write(path("shoe.png"), test.images[0].to_png().unwrap()).unwrap();
    let out = json(&stdout_of(&[
        "tokenize",
        "--model",
        &path("model"),
        &path("shoe.png"),
        "--json",
    ]));
    let ids: Vec<Vec<u16>> = serde_json::from_value(out).unwrap();
    assert_eq!(ids, vec![tokenizer.tokenize(&test.images[0])]);
    assert!(
        ids[0].iter().any(|&id| id > 8),
        "a garment has bright pixels"
    );

    // The zero-initialised head predicts the uniform distribution: exactly log2(16) = 4 bits/token.
    let out = json(&stdout_of(&[
        "eval",
        "--model",
        &path("model"),
        "--data",
        "fashion-mnist:test",
        "--limit",
        "4",
        "--json",
    ]));
    assert!(
        (out["bits_per_token"].as_f64().unwrap() - 4.0).abs() < 1e-5,
        "{out}"
    );
    assert_eq!(out["tokens"], 4 * 784);
}

#[test]
fn bad_input_is_one_clear_line_and_a_failing_exit() {
    let model = fixture_dir();
    let model = model.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.json");
    std::fs::write(&junk, "[[1, 2, \"x\"]]").unwrap();
    let not_image = dir.path().join("note.png");
    std::fs::write(&not_image, "hello").unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "eval",
                "--model",
                "/nonexistent",
                "--ids",
                junk.to_str().unwrap(),
            ],
            "/nonexistent",
        ),
        (
            vec!["eval", "--model", model, "--ids", junk.to_str().unwrap()],
            "junk.json",
        ),
        (
            vec![
                "eval",
                "--model",
                model,
                "--data",
                "fashion-mnist:validation",
            ],
            "validation",
        ),
        (
            vec!["tokenize", "--model", model, not_image.to_str().unwrap()],
            "note.png",
        ),
        (
            vec![
                "init",
                "--preset",
                "huge",
                "--palette",
                model,
                "-o",
                "/tmp/x",
            ],
            "unknown preset",
        ),
        (
            vec!["palette", "--data", "folder:/nonexistent", "-o", "/tmp/x"],
            "/nonexistent",
        ),
        // Sizes no machine could allocate are refused before allocating (these aborted).
        (
            vec![
                "sample",
                "--model",
                model,
                "-n",
                "100000000000",
                "-o",
                "/tmp/x.png",
            ],
            "GiB limit",
        ),
        (
            vec![
                "train",
                "--model",
                model,
                "--limit",
                "8",
                "--batch",
                "1000000000000",
                "-o",
                "/tmp/x",
            ],
            "GiB limit",
        ),
        (
            vec![
                "init",
                "--preset",
                "100000x1000x1",
                "--palette",
                model,
                "-o",
                "/tmp/x",
            ],
            "n_embd is 100000: the limit is 32768",
        ),
    ];
    for (args, mention) in cases {
        let out = igpt(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "igpt {args:?} should fail");
        assert!(stderr.contains(mention), "igpt {args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked"),
            "igpt {args:?} panicked: {stderr}"
        );
    }
}

#[test]
fn train_export_and_eval_agree_on_the_recorded_number() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    fit_small_palette(&path("pal"));
    stdout_of(&[
        "train",
        "--preset",
        "tiny",
        "--palette",
        &path("pal"),
        "--data",
        "fashion-mnist:train",
        "--limit",
        "64",
        "--val",
        "fashion-mnist:test",
        "--eval-images",
        "8",
        "--steps",
        "3",
        "--batch",
        "4",
        "--log-every",
        "1",
        "-o",
        &path("run"),
    ]);
    // A finished run refuses to be overwritten without --resume.
    let again = igpt(&[
        "train",
        "--preset",
        "tiny",
        "--palette",
        &path("pal"),
        "--steps",
        "1",
        "-o",
        &path("run"),
    ]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--resume"));

    stdout_of(&[
        "export",
        "--run",
        &path("run"),
        "--limit",
        "8",
        "--f16",
        "--note",
        "the parent's note",
        "-o",
        &path("model"),
    ]);
    let card = json(&std::fs::read_to_string(dir.path().join("model/card.json")).unwrap());
    let recorded = card["metrics"]["test_bits_per_token"].as_f64().unwrap();
    assert_eq!(card["training"]["steps"], 3);
    assert_eq!(card["dataset"], "fashion-mnist:train");
    let measured = json(&stdout_of(&[
        "eval",
        "--model",
        &path("model"),
        "--data",
        "fashion-mnist:test",
        "--limit",
        "8",
        "--json",
    ]));
    assert!(
        (measured["bits_per_token"].as_f64().unwrap() - recorded).abs() < 1e-9,
        "{card} vs {measured}"
    );
    // Three steps already move the model away from uniform (4 bits/token).
    assert!(recorded < 3.99, "{recorded}");
    // The card holds the baselines, fitted on the run's 64 training images, scored on the same 8.
    let baselines = &card["baselines"];
    assert_eq!(baselines["test_images"], 8);
    assert_eq!(baselines["train_data"], "fashion-mnist:train");
    assert_eq!(baselines["uniform"].as_f64(), Some(4.0));
    assert!(baselines["context3"].as_f64().unwrap() < 4.0, "{baselines}");

    // Fine-tuning the exported model (2 steps), then training on from that run's checkpoint (1 step):
    // the last card nests both earlier records, with totals over all three, and inherits no note.
    let fine_tune = |from: &str, steps: &str, run: &str, model: &str| {
        let (run, model) = (path(run), path(model));
        let data = [
            "--data",
            "fashion-mnist:train",
            "--limit",
            "64",
            "--batch",
            "4",
        ];
        let val = ["--val", "fashion-mnist:test", "--eval-images", "8"];
        let mut args = vec!["train", "--model", from, "--steps", steps, "-o", &run];
        args.extend(data.iter().chain(&val));
        stdout_of(&args);
        stdout_of(&["export", "--run", &run, "--limit", "8", "-o", &model]);
        json(&std::fs::read_to_string(Path::new(&model).join("card.json")).unwrap())
    };
    fine_tune(&path("model"), "2", "tuned-run", "tuned");
    let checkpoint = dir.path().join("tuned-run/checkpoint");
    let card = fine_tune(checkpoint.to_str().unwrap(), "1", "again-run", "again");
    let training = &card["training"];
    let parent = &training["started_from"];
    let grandparent = &parent["started_from"];
    assert_eq!(training["steps"], 1);
    assert_eq!(training["config"]["init"], checkpoint.to_str().unwrap());
    assert_eq!(parent["model"], checkpoint.to_str().unwrap());
    assert_eq!(parent["steps"], 2);
    assert_eq!(grandparent["model"], path("model"));
    assert_eq!(grandparent["steps"], 3);
    assert_eq!(training["total_steps"], 6);
    let seconds = |record: &serde_json::Value| record["seconds"].as_f64().unwrap();
    let total = training["total_seconds"].as_f64().unwrap();
    let sum = seconds(training) + seconds(parent) + seconds(grandparent);
    assert!((total - sum).abs() < 1e-9, "{total} vs {sum}");
    assert!(
        card.get("note").is_none(),
        "the parent's note was inherited: {card}"
    );
}

/// `--holdout N` trains on all but the last N images and validates on those (the test split chooses
/// nothing), `--keep-every` keeps loadable models along the way, and `probe-curve` charts their
/// probes against the run's validation figures, and an exported model's by the figure its card keeps.
#[test]
fn train_validates_on_held_out_training_images_and_keeps_milestones() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    fit_small_palette(&path("pal"));
    let palette = path("pal");
    let fresh = ["--preset", "tiny", "--palette", &palette];
    // `start`: what to train from; then the last `holdout` of the first 72 images held out.
    let train = |start: &[&str], holdout: &str, steps: &str, run: &str| {
        let run = path(run);
        let mut args = vec!["train"];
        args.extend(start);
        args.extend([
            "--data",
            "fashion-mnist:train",
            "--limit",
            "72",
            "--holdout",
            holdout,
            "--eval-images",
            "8",
            "--eval-every",
            "2",
            "--keep-every",
            "2",
            "--steps",
            steps,
            "--batch",
            "4",
            "-o",
            &run,
        ]);
        igpt(&args)
    };
    let refused = train(&fresh, "72", "4", "none-left");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--holdout 72 leaves no training images"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let out = train(&fresh, "8", "4", "run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("on 64 images"), "{log}");
    // stderr is not a terminal here, so the bar is hidden and each check prints a line of its own.
    assert!(log.contains("step 2: validation "), "{log}");
    assert!(log.contains("step 4: validation "), "{log}");

    // The last validation figure is the model's bits/token on images 64..72 of the training split:
    // eval over the first 72 images minus eval over the first 64 (every image has 784 tokens).
    let log = std::fs::read_to_string(dir.path().join("run/log.csv")).unwrap();
    let val_rows: Vec<(String, f64)> = log
        .lines()
        .skip(1)
        .filter_map(|row| {
            let fields: Vec<&str> = row.split(',').collect();
            let val = fields[6];
            (!val.is_empty()).then(|| (fields[0].to_string(), val.parse().unwrap()))
        })
        .collect();
    assert_eq!(
        val_rows.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(),
        ["2", "4"]
    );
    let milestone = path("run/milestones/step-000004");
    let bits_of_first = |n: &str| {
        json(&stdout_of(&[
            "eval",
            "--model",
            &milestone,
            "--data",
            "fashion-mnist:train",
            "--limit",
            n,
            "--json",
        ]))["bits_per_token"]
            .as_f64()
            .unwrap()
    };
    let held_out = (bits_of_first("72") * 72.0 - bits_of_first("64") * 64.0) / 8.0;
    assert!(
        (held_out - val_rows[1].1).abs() < 1e-4,
        "{held_out} vs {}",
        val_rows[1].1
    );
    assert!(
        dir.path()
            .join("run/milestones/step-000002/model.safetensors")
            .exists()
    );

    // The milestones' probes against their held-out bits: refused until a milestone is probed,
    // then one row per probed milestone, with the run's own validation figures.
    let curve = igpt(&["probe-curve", "--run", &path("run")]);
    assert!(!curve.status.success());
    assert!(String::from_utf8_lossy(&curve.stderr).contains("has a recorded probe"));
    let probe = |model: &str, test_limit: &str| {
        stdout_of(&[
            "probe",
            "--model",
            &path(model),
            "--train-limit",
            "60",
            "--test-limit",
            test_limit,
            "--layers",
            "0,1",
            "--cache",
            &path("features"),
            "--record",
            "--json",
        ])
    };
    for step in ["000002", "000004"] {
        let model = format!("run/milestones/step-{step}");
        std::fs::write(path(&format!("probe-{step}.json")), probe(&model, "20")).unwrap();
    }
    // Fitted probes are kept by what they were fitted on: the two milestones' 2 layers each, and the
    // random-init twin's 2 layers and raw pixels once for both. A probe read back is the same report.
    let kept = std::fs::read_dir(path("features/probes")).unwrap().count();
    assert_eq!(kept, 2 + 2 + 2 + 1);
    assert_eq!(
        probe("run/milestones/step-000002", "20"),
        std::fs::read_to_string(path("probe-000002.json")).unwrap()
    );
    let curve = json(&stdout_of(&[
        "probe-curve",
        "--run",
        &path("run"),
        "--json",
        "--chart",
        &path("curve.svg"),
    ]));
    let rows = curve.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for (row, (step, val)) in rows.iter().zip(&val_rows) {
        assert_eq!(row["step"].to_string(), *step);
        assert!((row["val_bits"].as_f64().unwrap() - val).abs() < 1e-4);
        assert_eq!(row["probe"]["layers"].as_array().unwrap().len(), 2);
    }
    let svg = std::fs::read_to_string(path("curve.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("held-out"), "{svg}");

    // A warm restart from the last milestone continues the step count: charted together, its
    // milestone at its own step 2 is step 6 of the whole history.
    let out = train(&["--model", &milestone], "8", "2", "run-2");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    probe("run-2/milestones/step-000002", "20");
    let both = json(&stdout_of(&[
        "probe-curve",
        "--run",
        &path("run"),
        "--run",
        &path("run-2"),
        "--json",
    ]));
    let steps: Vec<u64> = both
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [2, 4, 6]);

    // probe-compare lays the two reports side by side, layer by layer, as they were measured, and
    // refuses reports probed on other images.
    let report =
        |step: &str| json(&std::fs::read_to_string(path(&format!("probe-{step}.json"))).unwrap());
    let table = stdout_of(&[
        "probe-compare",
        &format!("early={}", path("probe-000002.json")),
        &format!("late={}", path("probe-000004.json")),
        "--chart",
        &path("compare.svg"),
    ]);
    for layer in 0..2 {
        let cell = |step: &str| {
            format!(
                "{:.2}",
                100.0 * report(step)["layers"][layer]["accuracy"].as_f64().unwrap()
            )
        };
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("| {layer}")))
            .unwrap_or_else(|| panic!("no row for layer {layer}:\n{table}"));
        assert!(
            row.ends_with(&format!("| {} | {} |", cell("000002"), cell("000004"))),
            "{row}"
        );
    }
    let svg = std::fs::read_to_string(path("compare.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("early") && svg.contains("late"));
    std::fs::write(
        path("probe-other.json"),
        probe("run/milestones/step-000004", "12"),
    )
    .unwrap();
    let refused = igpt(&[
        "probe-compare",
        &format!("early={}", path("probe-000002.json")),
        &format!("other={}", path("probe-other.json")),
    ]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("other was probed on other images"));

    // The run never saw the test split, so export asks which images to measure.
    let export = igpt(&["export", "--run", &path("run"), "-o", &path("model")]);
    assert!(!export.status.success());
    assert!(String::from_utf8_lossy(&export.stderr).contains("--test"));
    stdout_of(&[
        "export",
        "--run",
        &path("run"),
        "--test",
        "fashion-mnist:test",
        "--limit",
        "8",
        "-o",
        &path("model"),
    ]);
    let card = json(&std::fs::read_to_string(dir.path().join("model/card.json")).unwrap());
    assert_eq!(card["training"]["config"]["holdout"], 8);
    assert_eq!(card["baselines"]["test_images"], 8);
    // The card keeps the run's last validation figure, so the exported model is a point of the
    // curve once probed: step 4 with the run's held-out bits, charted beside other runs' milestones.
    let recorded = card["training"]["val_bits_per_token"].as_f64().unwrap();
    assert!((recorded - val_rows[1].1).abs() < 1e-4, "{recorded}");
    let unprobed = igpt(&["probe-curve", "--model", &path("model")]);
    assert!(!unprobed.status.success());
    assert!(String::from_utf8_lossy(&unprobed.stderr).contains("has no recorded probe"));
    probe("model", "20");
    let points = json(&stdout_of(&[
        "probe-curve",
        "--run",
        &path("run-2"),
        "--model",
        &path("model"),
        "--json",
    ]));
    let points = points.as_array().unwrap();
    let steps: Vec<u64> = points.iter().map(|p| p["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [4, 6]);
    assert_eq!(points[0]["val_bits"].as_f64().unwrap(), recorded);
    let twice = igpt(&[
        "probe-curve",
        "--run",
        &path("run"),
        "--model",
        &path("model"),
    ]);
    assert!(!twice.status.success());
    assert!(String::from_utf8_lossy(&twice.stderr).contains("two of the points are step 4"));
}

#[test]
fn probe_finetune_and_classify_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let model = fixture_dir();
    let model = model.to_str().unwrap();
    // The fixture's 8×8 model reads Fashion-MNIST resized: small, so the whole path runs in seconds.
    let probe = [
        "probe",
        "--model",
        model,
        "--train-limit",
        "300",
        "--test-limit",
        "100",
        "--cache",
        &path("features"),
        "--json",
        "--chart",
        &path("probe.svg"),
        "--concat",
        "2",
    ];
    let first = igpt(&probe);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let report = json(&String::from_utf8(first.stdout).unwrap());
    let layers = report["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3, "embeddings and two blocks: {report}");
    for key in ["best_accuracy", "raw_pixels", "random_init_best"] {
        let a = report[key].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&a), "{key} = {a}");
    }
    // Raw pixels of real Fashion-MNIST images are far above chance (10%) even at this size.
    assert!(report["raw_pixels"].as_f64().unwrap() > 0.5, "{report}");
    assert_eq!(
        (
            report["train_images"].as_u64(),
            report["test_images"].as_u64()
        ),
        (Some(300), Some(100))
    );
    // Two layers end to end, one of them the best single layer.
    let concat = &report["concat"];
    let window: Vec<u64> = concat["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_u64().unwrap())
        .collect();
    assert!(
        window.len() == 2
            && window[1] == window[0] + 1
            && window.contains(&report["best_layer"].as_u64().unwrap()),
        "{concat}"
    );
    for key in ["accuracy", "val_accuracy", "random_init_accuracy"] {
        assert!(
            (0.0..=1.0).contains(&concat[key].as_f64().unwrap()),
            "{concat}"
        );
    }
    let svg = std::fs::read_to_string(path("probe.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("raw pixels") && svg.contains("together"),
        "{svg}"
    );
    // The second probe of the same model and data reads its features from the cache.
    let second = igpt(&probe);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(stderr.matches("read from").count(), 4, "{stderr}");
    assert_eq!(json(&String::from_utf8(second.stdout).unwrap()), report);
    // Layers that do not exist are refused in one line.
    let bad = igpt(&["probe", "--model", model, "--layers", "0,7"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("layers 0 (embeddings) to 2"));

    // A copy, since --record writes into the card of the model fine-tuned from.
    let parent = path("parent");
    std::fs::create_dir(&parent).unwrap();
    for file in std::fs::read_dir(model).unwrap() {
        let file = file.unwrap().path();
        std::fs::copy(
            &file,
            format!("{parent}/{}", file.file_name().unwrap().to_str().unwrap()),
        )
        .unwrap();
    }
    let tuned = igpt(&[
        "finetune",
        "--model",
        &parent,
        "-o",
        &path("tuned"),
        "--train-limit",
        "200",
        "--test-limit",
        "50",
        "--steps",
        "20",
        "--eval-every",
        "10",
        "--record",
    ]);
    let log = String::from_utf8_lossy(&tuned.stderr);
    assert!(tuned.status.success(), "{log}");
    assert!(log.contains("step 10: held-out accuracy "), "{log}");
    assert!(log.contains("step 20: held-out accuracy "), "{log}");
    let card: serde_json::Value = json(&std::fs::read_to_string(path("tuned/card.json")).unwrap());
    let accuracy = card["metrics"]["test_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&accuracy), "{card}");
    assert_eq!(card["finetune"]["held_out_images"], 20);
    assert_eq!(card["finetune"]["from"], parent.as_str());
    assert_eq!(card["finetune"]["weights"], "f32");
    assert!(card["finetune"].get("from_scratch").is_none(), "{card}");
    assert!(
        card["finetune"]["device"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{card}"
    );
    // Both loss figures describe the fine-tuned model, not the one it started from.
    let bits = card["metrics"]["test_bits_per_token"].as_f64().unwrap();
    let nats = card["metrics"]["test_nll_nats"].as_f64().unwrap();
    assert!(
        (nats - bits * std::f64::consts::LN_2).abs() < 1e-9,
        "{card}"
    );
    // --record put the same result in the card of the model it started from.
    let recorded: serde_json::Value =
        json(&std::fs::read_to_string(format!("{parent}/card.json")).unwrap());
    assert_eq!(
        recorded["finetuned"]["test_accuracy"],
        card["metrics"]["test_accuracy"]
    );
    assert_eq!(recorded["finetuned"]["finetune"], card["finetune"]);
    assert!(
        recorded["metrics"].get("test_accuracy").is_none(),
        "{recorded}"
    );

    // With a run folder (checkpoints and best/ at each check) the same settings fit the same model;
    // the folder refuses a second start, and a resume with other settings names them.
    let with_run = |output: &str, limit: &str, extra: &[&str]| {
        let mut args = vec![
            "finetune",
            "--model",
            model,
            "-o",
            output,
            "--train-limit",
            limit,
            "--test-limit",
            "50",
            "--eval-every",
            "10",
        ];
        args.extend(extra);
        igpt(&args)
    };
    let run = path("finetune-run");
    let first = with_run(&path("tuned-run"), "200", &["--steps", "20", "--run", &run]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let card_of = |dir: &str| json(&std::fs::read_to_string(format!("{dir}/card.json")).unwrap());
    assert_eq!(
        card_of(&path("tuned-run"))["metrics"],
        card_of(&path("tuned"))["metrics"]
    );
    for kept in [
        "finetune.json",
        "train.json",
        "log.csv",
        "checkpoint",
        "best",
    ] {
        assert!(
            Path::new(&run).join(kept).exists(),
            "no {kept} in the run folder"
        );
    }
    let again = with_run(
        &path("tuned-again"),
        "200",
        &["--steps", "20", "--run", &run],
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("pass --resume"));
    let other = with_run(
        &path("tuned-again"),
        "150",
        &["--steps", "30", "--run", &run, "--resume"],
    );
    let refusal = String::from_utf8_lossy(&other.stderr);
    assert!(
        !other.status.success()
            && refusal.contains("steps 30 (the run has 20)")
            && refusal.contains("train_limit 150 (the run has 200)"),
        "{refusal}"
    );
    // Resuming the finished run hands back its best weights (from best/), scored as before; the
    // device count is not part of the run, so a resume on two replicas is taken.
    let resumed = with_run(
        &path("tuned-resumed"),
        "200",
        &[
            "--steps",
            "20",
            "--run",
            &run,
            "--resume",
            "--devices",
            "0,1",
        ],
    );
    let log = String::from_utf8_lossy(&resumed.stderr);
    assert!(
        resumed.status.success() && log.contains("at step 20 of 20"),
        "{log}"
    );
    assert_eq!(
        card_of(&path("tuned-resumed"))["metrics"],
        card_of(&path("tuned"))["metrics"]
    );
    // A held-out share that leaves nothing to fit (or nothing to check) is refused up front.
    let all_held = with_run(&path("tuned-all-held"), "200", &["--val-fraction", "1"]);
    assert!(
        String::from_utf8_lossy(&all_held.stderr).contains("1 is not between 0 and 1"),
        "{}",
        String::from_utf8_lossy(&all_held.stderr)
    );

    let image = path("test-0.png");
    let test = DataSpec::Idx {
        dir: igpt::data::FASHION_MNIST_DIR.into(),
        split: igpt::data::Split::Test,
        fashion: true,
    }
    .load()
    .unwrap();
    std::fs::write(&image, test.images[0].to_png().unwrap()).unwrap();
    let line = json(&stdout_of(&[
        "classify",
        "--model",
        &path("tuned"),
        &image,
        "--json",
    ]));
    let names = &test.classes;
    assert!(
        names.contains(&line["label"].as_str().unwrap().to_string()),
        "{line}"
    );
    let top = line["top"].as_array().unwrap();
    assert_eq!(top.len(), 3);
    assert_eq!(top[0]["label"], line["label"]);
    // --explain splits the label over the pixels from one pass that gives the same probabilities,
    // and `igpt inspect` labels the image from its own pass the same way.
    let explained = json(&stdout_of(&[
        "classify",
        "--model",
        &path("tuned"),
        &image,
        "--json",
        "--explain",
    ]));
    let explanation = &explained["explanation"];
    let class = explanation["class"].as_u64().unwrap() as usize;
    assert_eq!(
        (&explained["label"], &explained["top"][0]["label"]),
        (&line["label"], &line["top"][0]["label"])
    );
    assert_eq!(names[class], line["label"].as_str().unwrap());
    let p = |v: &serde_json::Value| v.as_f64().unwrap();
    assert!(
        (p(&explanation["probabilities"][class]) - p(&top[0]["probability"])).abs() < 1e-5,
        "{explained} against {line}"
    );
    let shares = explanation["pixel_shares"].as_array().unwrap();
    assert_eq!(shares.len(), 64, "the fixture's 8×8 pixels");
    let gap = p(&explanation["logits"][class])
        - explanation["logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(p)
            .sum::<f64>()
            / 10.0;
    let summed = shares.iter().map(p).sum::<f64>() + p(&explanation["start_share"]);
    assert!((summed - gap).abs() < 1e-3, "shares {summed} against {gap}");
    let inspected = json(&stdout_of(&[
        "inspect",
        "--model",
        &path("tuned"),
        &image,
        "--json",
    ]));
    let label = &inspected["label"];
    assert_eq!(label["class"].as_u64(), Some(class as u64), "{label}");
    assert_eq!(label["labels"][class], line["label"]);
    for (a, b) in [("probabilities", class), ("pixel_shares", 10)] {
        assert!(
            (p(&label[a][b]) - p(&explanation[a][b])).abs() < 1e-5,
            "{a}[{b}]: {label} against {explanation}"
        );
    }
    // Its panel adds the shares and their changes to the first row, as the page draws them.
    let width_of = |model: &str, png: &str| {
        stdout_of(&["inspect", "--model", model, &image, "-o", &path(png)]);
        image::open(path(png)).unwrap().width()
    };
    let (labelled, plain) = (
        width_of(&path("tuned"), "tuned.png"),
        width_of(model, "plain.png"),
    );
    assert!(labelled > plain, "{labelled} against {plain} pixels wide");
    let words = stdout_of(&["inspect", "--model", &path("tuned"), &image]);
    assert!(
        words.contains(&format!("labelled {}", names[class])),
        "{words}"
    );
    // A model without a head has no label to show.
    let unlabelled = json(&stdout_of(&["inspect", "--model", model, &image, "--json"]));
    assert!(unlabelled.get("label").is_none());
    // A model without a head says what to do instead of guessing.
    let plain = igpt(&["classify", "--model", model, &image]);
    assert!(!plain.status.success());
    assert!(String::from_utf8_lossy(&plain.stderr).contains("igpt finetune"));
}

/// `igpt baselines` on Fashion-MNIST with the shipped 16-grey palette agrees with the reference
/// script `shared/bench/fmnist_baselines.py` (per-position unigram 2.488, context model 1.296
/// bits/token) within 0.02.
#[test]
fn baselines_agree_with_the_fashion_mnist_reference() {
    let palette = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/fmnist-256x2");
    let b = json(&stdout_of(&[
        "baselines",
        "--data",
        "fashion-mnist:test",
        "--palette",
        palette.to_str().unwrap(),
        "--json",
    ]));
    let bits = |key: &str| b[key].as_f64().unwrap();
    assert_eq!(bits("uniform"), 4.0);
    assert!((bits("per_position") - 2.488).abs() < 0.02, "{b}");
    assert!((bits("context3") - 1.296).abs() < 0.02, "{b}");
    assert!(bits("global_unigram") > bits("per_position"), "{b}");
}

/// `igpt examples` writes a dataset's images as PNGs the page can offer, and merges them into the
/// folder's index.json with the dataset they come from, keeping the other datasets' entries.
#[test]
fn examples_writes_pngs_and_merges_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    stdout_of(&[
        "examples",
        "--data",
        "fashion-mnist:test",
        "-n",
        "3",
        "-o",
        out,
    ]);
    stdout_of(&["examples", "--data", "emoji:test", "-n", "2", "-o", out]);
    stdout_of(&["examples", "--data", "emoji:test", "-n", "2", "-o", out]); // again: no duplicates
    let index = json(&std::fs::read_to_string(dir.path().join("index.json")).unwrap());
    let entries = index.as_array().unwrap();
    let datasets: Vec<&str> = entries
        .iter()
        .map(|e| e["dataset"].as_str().unwrap())
        .collect();
    assert_eq!(
        datasets,
        ["fashion-mnist"; 3]
            .iter()
            .chain(&["emoji"; 2])
            .copied()
            .collect::<Vec<_>>()
    );
    // Fashion-MNIST test images 0, 1 and 2 are three different classes: ankle boot, pullover, trouser.
    assert_eq!(entries[0]["label"], "Ankle boot (fashion-mnist:test #0)");
    for entry in entries {
        let file = dir.path().join(entry["file"].as_str().unwrap());
        let image = image::open(&file).unwrap();
        let side = if entry["dataset"] == "emoji" { 32 } else { 28 };
        assert_eq!(
            (image.width(), image.height()),
            (side, side),
            "{}",
            file.display()
        );
    }
}

/// `igpt inspect` on an emoji PNG through the HF fixture (8×8, 2 layers, 4 heads): the JSON line's
/// mean equals what `igpt eval` gives the same tokens, the default pixel is the centre, the logit lens
/// has every layer, the panel has the image, the surprise map, a view per layer, the rollout and the
/// lens's maps,
/// and a pixel outside the image is one clear line.
/// `igpt atlas` writes atlas.json and its sprite beside a model (a copy of the fixture): the units
/// asked for, every hit an image of the sprite and a pixel of the image, the sprite one tile per
/// image; a layer past the last is one clear line and a failing exit.
#[test]
fn atlas_writes_its_units_and_sprite_beside_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("model");
    std::fs::create_dir(&copy).unwrap();
    for file in std::fs::read_dir(fixture_dir()).unwrap() {
        let file = file.unwrap().path();
        if file.is_file() {
            std::fs::copy(&file, copy.join(file.file_name().unwrap())).unwrap();
        }
    }
    let copy = copy.to_str().unwrap();
    let args = [
        "atlas",
        "--model",
        copy,
        "--data",
        "fashion-mnist:test",
        "--limit",
        "40",
        "--layer",
        "1",
        "--directions",
        "3",
        "--neurons",
        "5",
        "--top",
        "4",
        "--fit-images",
        "8",
    ];
    assert!(stdout_of(&args).contains("atlas.json"));
    let atlas = json(&std::fs::read_to_string(dir.path().join("model/atlas.json")).unwrap());
    assert_eq!(
        (atlas["layer"].as_u64(), atlas["scanned"].as_u64()),
        (Some(1), Some(40))
    );
    assert_eq!(atlas["data"], "fashion-mnist:test");
    let units = atlas["units"].as_array().unwrap();
    assert_eq!(
        units.len(),
        2 * 3 + 5,
        "two ends of 3 directions and 5 neurons"
    );
    let images = atlas["images"].as_array().unwrap().len();
    for unit in units {
        let top = unit["top"].as_array().unwrap();
        assert_eq!(top.len(), 4);
        for hit in top {
            assert!(hit["image"].as_u64().unwrap() < images as u64);
            assert!(hit["pixel"].as_u64().unwrap() < 64);
        }
    }
    // The sprite: 16 tiles of 8x8 a row (the PNG header's width and height).
    let png = std::fs::read(dir.path().join("model/atlas.png")).unwrap();
    let size = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
    assert_eq!(
        (size(16), size(20)),
        (8 * images.min(16), 8 * images.div_ceil(16))
    );

    let mut past = args;
    past[8] = "3";
    let refused = igpt(&past);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("layer 3 does not exist"));
}

#[test]
fn inspect_reports_what_eval_measures_and_draws_a_panel() {
    let model = fixture_dir();
    let model = model.to_str().unwrap();
    let image = Path::new(env!("CARGO_MANIFEST_DIR")).join("www/examples/emoji-test-0.png");
    let image = image.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let panel = dir.path().join("panel.png");
    let out = json(&stdout_of(&[
        "inspect",
        "--model",
        model,
        image,
        "--json",
        "-o",
        panel.to_str().unwrap(),
        "--scale",
        "3",
    ]));
    let bits: Vec<f64> = out["bits_per_pixel"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_f64().unwrap())
        .collect();
    assert_eq!(bits.len(), 64);
    assert_eq!(out["pixel"], serde_json::json!([4, 4]));
    let mean = out["mean_bits"].as_f64().unwrap();
    assert!((mean - bits.iter().sum::<f64>() / 64.0).abs() < 1e-5);
    assert_eq!(out["top"].as_array().unwrap().len(), 5);
    let attention = out["attention"].as_array().unwrap();
    assert_eq!(attention.len(), 2);
    for heads in attention {
        assert_eq!(heads.as_array().unwrap().len(), 4);
        assert_eq!(heads[0].as_array().unwrap().len(), 4 * 8 + 4 + 1);
    }

    let ids = dir.path().join("ids.json");
    let tokens = stdout_of(&["tokenize", "--model", model, image, "--json"]);
    std::fs::write(&ids, tokens).unwrap();
    let eval = json(&stdout_of(&[
        "eval",
        "--model",
        model,
        "--ids",
        ids.to_str().unwrap(),
        "--json",
    ]));
    let eval_bits = eval["bits_per_token"].as_f64().unwrap();
    assert!(
        (mean - eval_bits).abs() < 1e-5,
        "inspect {mean}, eval {eval_bits}"
    );

    // The logit lens: one entry per layer (the embeddings and both blocks), the last the output's.
    let lens = out["lens"].as_array().unwrap();
    assert_eq!(lens.len(), 3);
    assert_eq!(lens[2]["actual"], out["actual"]);
    assert_eq!(out["lens_bits_per_pixel"].as_array().unwrap().len(), 3);
    assert_eq!(out["lens_bits_per_pixel"][2], out["bits_per_pixel"]);
    // Direct logit attribution: the embeddings, then each layer's 4 heads, attention bias and MLP.
    let parts = out["attribution"]["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 1 + 2 * 6);
    let sum: f64 = parts.iter().map(|p| p["logit"].as_f64().unwrap()).sum();
    let logit = out["attribution"]["logit"].as_f64().unwrap();
    assert!(
        (sum - logit).abs() < 1e-3 * logit.abs().max(1.0),
        "{sum} vs {logit}"
    );

    // Rollout: over positions 0..=pixel, summing to 1.
    let rollout: Vec<f64> = out["rollout"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_f64().unwrap())
        .collect();
    assert_eq!(rollout.len(), 4 * 8 + 4 + 1);
    assert!((rollout.iter().sum::<f64>() - 1.0).abs() < 1e-4);

    // Five panels of 8×3 pixels (image, surprise, two layers' attention, rollout), 3 apart:
    // 5·24 + 6·3 wide; below them the lens's three, so two rows: 2·24 + 3·3 high.
    let png = image::open(&panel).unwrap();
    assert_eq!((png.width(), png.height()), (138, 57));

    // Zero ablation: the image's surprise without a head, and the change per pixel.
    let ablated = json(&stdout_of(&[
        "inspect", "--model", model, image, "--json", "--ablate", "head:1.2",
    ]));
    let ablation = &ablated["ablation"];
    assert_eq!(ablation["part"], "layer 1 head 2");
    let after: Vec<f64> = ablation["bits_per_pixel"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_f64().unwrap())
        .collect();
    let delta = ablation["delta_bits"].as_array().unwrap();
    assert_eq!((after.len(), delta.len()), (64, 64));
    for ((a, d), b) in after.iter().zip(delta).zip(&bits) {
        assert!((a - b - d.as_f64().unwrap()).abs() < 1e-5);
    }
    let mean_after = after.iter().sum::<f64>() / 64.0;
    assert!((ablation["mean_delta"].as_f64().unwrap() - (mean_after - mean)).abs() < 1e-5);
    assert!(
        after.iter().zip(&bits).any(|(a, b)| (a - b).abs() > 1e-6),
        "the head changed nothing"
    );
    let bad = igpt(&["inspect", "--model", model, image, "--ablate", "head:2.0"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("the model has layers 0 to 1"));

    // Mean ablation: refused until the means are measured beside the model (a copy here), then the
    // head's output is replaced by its mean write, which is not what zeroing it gives.
    let copy = dir.path().join("model");
    std::fs::create_dir(&copy).unwrap();
    for file in std::fs::read_dir(model).unwrap() {
        let file = file.unwrap().path();
        if file.is_file() {
            std::fs::copy(&file, copy.join(file.file_name().unwrap())).unwrap();
        }
    }
    let copy = copy.to_str().unwrap();
    let mean_args = [
        "inspect", "--model", copy, image, "--json", "--ablate", "head:1.2", "--mean",
    ];
    let refused = igpt(&mean_args);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("run igpt ablation-means"));
    stdout_of(&[
        "ablation-means",
        "--model",
        copy,
        "--data",
        "fashion-mnist:test",
        "--limit",
        "8",
    ]);
    let means =
        json(&std::fs::read_to_string(dir.path().join("model/ablation-means.json")).unwrap());
    assert_eq!(means["images"], 8);
    assert_eq!(means["heads"].as_array().unwrap().len(), 2);
    assert_eq!(means["heads"][0].as_array().unwrap().len(), 4);
    let averaged = json(&stdout_of(&mean_args))["ablation"].clone();
    assert_eq!(
        (averaged["mode"].as_str(), ablation["mode"].as_str()),
        (Some("mean"), Some("zero"))
    );
    assert_ne!(averaged["delta_bits"], ablation["delta_bits"]);

    // Patching: the image with its own states patched in is unchanged; another image's states
    // over a region at the last layer change exactly that region's pixels (a pixel's prediction
    // reads its own final state only), and a region outside the image is refused.
    let other = Path::new(env!("CARGO_MANIFEST_DIR")).join("www/examples/emoji-test-43.png");
    let patched = |from: &str, region: &str| {
        json(&stdout_of(&[
            "inspect",
            "--model",
            model,
            image,
            "--json",
            "--patch-from",
            from,
            "--patch-layer",
            "2",
            "--patch-region",
            region,
        ]))["patching"]
            .clone()
    };
    let delta = |report: &serde_json::Value| -> Vec<f64> {
        report["delta_bits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_f64().unwrap())
            .collect()
    };
    let itself = patched(image, "2,1,3,4");
    assert!(delta(&itself).iter().all(|d| d.abs() < 1e-5));
    let swapped = patched(other.to_str().unwrap(), "2,1,3,4");
    assert_eq!(swapped["layer"], 2);
    assert_eq!(
        swapped["region"],
        serde_json::json!({"top": 2, "left": 1, "bottom": 3, "right": 4})
    );
    // (A region pixel whose earlier pixels are the same in both images has the same state.)
    let region = [17, 18, 19, 20, 25, 26, 27, 28];
    let changed: Vec<usize> = (0..64)
        .filter(|&p| delta(&swapped)[p].abs() > 1e-6)
        .collect();
    assert!(
        changed.len() >= 4 && changed.iter().all(|p| region.contains(p)),
        "{changed:?}"
    );
    let outside = igpt(&[
        "inspect",
        "--model",
        model,
        image,
        "--patch-from",
        image,
        "--patch-layer",
        "1",
        "--patch-region",
        "0,0,8,3",
    ]);
    assert!(String::from_utf8_lossy(&outside.stderr).contains("leaves the 8×8 image"));

    // An image of a dataset, as `complete` takes it.
    let out = json(&stdout_of(&[
        "inspect",
        "--model",
        model,
        "--data",
        "fashion-mnist:test",
        "--index",
        "2",
        "--json",
    ]));
    assert_eq!(out["bits_per_pixel"].as_array().unwrap().len(), 64);

    let out = igpt(&["inspect", "--model", model, image, "--pixel", "8,0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("pixel 8,0 is outside the 8x8 image"),
        "{stderr}"
    );
}

/// A BERT model from the command line (issue 30): `train --objective bert` records its objective,
/// `eval --masks` scores it under seeded masks, `probe --masks` averages features over them,
/// `inpaint` fills a rectangle, and what needs the other kind of model says so.
#[test]
fn a_bert_model_trains_evaluates_probes_and_inpaints() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let palette = path("pal");
    fit_small_palette(&palette);
    let train = |extra: &[&str], run: &str| {
        let mut args = vec![
            "train",
            "--preset",
            "tiny",
            "--palette",
            &palette,
            "--limit",
            "64",
            "--steps",
            "3",
            "--batch",
            "4",
            "-o",
        ];
        let run = path(run);
        args.push(&run);
        args.extend(extra);
        igpt(&args)
    };
    let refused = train(&["--mask-prob", "0.3"], "ar-run");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--mask-prob is for --objective bert")
    );
    let bad = train(&["--objective", "bert", "--mask-prob", "1.5"], "bad-run");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("strictly between 0 and 1"));
    let trained = train(&["--objective", "bert", "--mask-prob", "0.3"], "run");
    assert!(
        trained.status.success(),
        "{}",
        String::from_utf8_lossy(&trained.stderr)
    );
    assert!(String::from_utf8_lossy(&trained.stderr).contains("BERT (30% of pixels hidden)"));
    stdout_of(&[
        "export",
        "--run",
        &path("run"),
        "--test",
        "fashion-mnist:test",
        "--limit",
        "8",
        "-o",
        &path("model"),
    ]);
    let card = json(&std::fs::read_to_string(dir.path().join("model/card.json")).unwrap());
    assert_eq!(card["objective"]["kind"], "bert", "{card}");
    assert_eq!(card["objective"]["mask_prob"], 0.3, "{card}");

    let eval = |masks: &str| {
        json(&stdout_of(&[
            "eval",
            "--model",
            &path("model"),
            "--data",
            "fashion-mnist:test",
            "--limit",
            "8",
            "--masks",
            masks,
            "--json",
        ]))
    };
    let (one, three) = (eval("1"), eval("3"));
    assert_eq!(three["masks"], 3);
    let hidden = one["tokens"].as_f64().unwrap() / (8.0 * 784.0);
    assert!(
        (0.25..0.35).contains(&hidden),
        "{one}: {hidden} of pixels hidden at p = 0.3"
    );
    assert!(
        three["tokens"].as_u64() > one["tokens"].as_u64().map(|t| 2 * t),
        "{three}"
    );

    let probe = json(&stdout_of(&[
        "probe",
        "--model",
        &path("model"),
        "--train-limit",
        "40",
        "--test-limit",
        "20",
        "--masks",
        "2",
        "--cache",
        &path("features"),
        "--json",
    ]));
    assert_eq!(probe["masks"], 2, "{probe}");
    assert_eq!(probe["layers"].as_array().unwrap().len(), 3);

    let inspected = json(&stdout_of(&[
        "inspect",
        "--model",
        &path("model"),
        "--data",
        "fashion-mnist:test",
        "--json",
        "-o",
        &path("inspect.png"),
    ]));
    assert_eq!(inspected["passes"], 3, "round(1 / 0.3)");
    assert_eq!(inspected["bits_per_pixel"].as_array().unwrap().len(), 784);
    assert!(dir.path().join("inspect.png").exists());

    let fill = stdout_of(&[
        "inpaint",
        "--model",
        &path("model"),
        "--data",
        "fashion-mnist:test",
        "--index",
        "0",
        "--mask",
        "10,10,4,4",
        "-n",
        "2",
        "--seed",
        "1",
        "--scale",
        "1",
        "-o",
        &path("fill.png"),
    ]);
    assert!(fill.contains("wrote"), "{fill}");
    let png = igpt::Raster::open(&dir.path().join("fill.png"), 1).unwrap();
    assert!(
        png.width >= 4 * 28 && png.height >= 28,
        "{}x{}",
        png.width,
        png.height
    );

    // What needs the other kind of model refuses with one clear line.
    let (model, sample_png, fill_png) = (path("model"), path("s.png"), path("f.png"));
    let refusals = [
        (
            vec!["sample", "--model", &model, "-n", "1", "-o", &sample_png],
            "sampling needs an autoregressive model",
        ),
        (
            vec![
                "inpaint",
                "--model",
                &model,
                "--data",
                "fashion-mnist:test",
                "--mask",
                "20,20,9,9",
                "-o",
                &fill_png,
            ],
            "must be non-empty and lie inside the 28x28 image",
        ),
    ];
    for (args, message) in refusals {
        let out = igpt(&args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(message), "{args:?}: {err}");
    }
    let ar = train(&[], "ar-run");
    assert!(
        ar.status.success(),
        "{}",
        String::from_utf8_lossy(&ar.stderr)
    );
    let checkpoint = dir.path().join("ar-run/checkpoint");
    let checkpoint = checkpoint.to_str().unwrap();
    let g_png = path("g.png");
    for (args, message) in [
        (
            vec![
                "inpaint",
                "--model",
                checkpoint,
                "--data",
                "fashion-mnist:test",
                "--mask",
                "1,1,2,2",
                "-o",
                &g_png,
            ],
            "inpainting needs a BERT model",
        ),
        (
            vec![
                "eval",
                "--model",
                checkpoint,
                "--data",
                "fashion-mnist:test",
                "--limit",
                "2",
                "--masks",
                "2",
            ],
            "--masks is for BERT models",
        ),
    ] {
        let out = igpt(&args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(message), "{args:?}: {err}");
    }
}

/// `--devices` splits each batch across replicas (the run says so, and resumes on one device), and
/// refuses more devices than a batch has images.
#[test]
fn train_splits_batches_across_devices() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    fit_small_palette(&path("pal"));
    let (palette, run) = (path("pal"), path("run"));
    let train = |devices: &str, steps: &str| {
        igpt(&[
            "train",
            "--preset",
            "tiny",
            "--palette",
            &palette,
            "--data",
            "fashion-mnist:train",
            "--limit",
            "32",
            "--steps",
            steps,
            "--batch",
            "4",
            "--devices",
            devices,
            "--device",
            "flex",
            "-o",
            &run,
        ])
    };
    let refused = train("0,1,2,3,4", "2");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("5 devices cannot share a batch of 4"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let out = train("0,1", "2");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("steps of 4, split across 2 replicas"),
        "{stderr}"
    );
    let resumed = igpt(&["train", "--resume", "-o", &path("run"), "--device", "flex"]);
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
}

/// `igpt shard` packs Fashion-MNIST images into tar shards with their labels; `igpt train` streams
/// them (holding the last ones out to validate on) and resumes the stream; `eval` reads them whole.
#[test]
fn training_streams_tar_shards() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    fit_small_palette(&path("pal"));
    let (shards, run) = (path("shards"), path("run"));
    let packed = igpt(&[
        "shard",
        "--data",
        "fashion-mnist:train",
        "--limit",
        "40",
        "--per-shard",
        "16",
        "-o",
        &shards,
    ]);
    let stderr = String::from_utf8_lossy(&packed.stderr);
    assert!(packed.status.success(), "{stderr}");
    assert!(
        stderr.contains("40 images of fashion-mnist:train in 3 shards"),
        "{stderr}"
    );
    let spec = format!("shards:{shards}");
    let whole = DataSpec::load(&spec.parse().unwrap()).unwrap();
    let original = DataSpec::load(&"fashion-mnist:train".parse().unwrap()).unwrap();
    assert_eq!(whole.labels[..], original.labels[..40]);
    assert_eq!(whole.images[7], original.images[7].with_channels(3));

    let out = igpt(&[
        "train",
        "--preset",
        "tiny",
        "--palette",
        &path("pal"),
        "--data",
        &spec,
        "--holdout",
        "8",
        "--shuffle-window",
        "6",
        "--steps",
        "3",
        "--batch",
        "4",
        "--eval-every",
        "3",
        "--device",
        "flex",
        "-o",
        &run,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "on 32 images of {spec} (streamed, shuffled 6 at a time)"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("validation") && stderr.contains("peak memory"),
        "{stderr}"
    );
    let resumed = igpt(&["train", "--resume", "-o", &run, "--device", "flex"]);
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{stderr}");
    assert!(
        stderr.contains("(streamed, shuffled 6 at a time)"),
        "{stderr}"
    );
    let scored = igpt(&[
        "eval",
        "--model",
        &format!("{run}/checkpoint"),
        "--data",
        &spec,
        "--device",
        "flex",
    ]);
    assert!(
        scored.status.success(),
        "{}",
        String::from_utf8_lossy(&scored.stderr)
    );

    let refused = igpt(&[
        "shard",
        "--data",
        "fashion-mnist:train",
        "--limit",
        "4",
        "-o",
        &shards,
    ]);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("already holds shards"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

/// `igpt shard` packs a folder dataset file by file (the files go in as they are): read back, the
/// shards hold the folder's images and labels in the folder's order.
#[test]
fn shard_packs_a_folder_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let fashion = DataSpec::load(&"fashion-mnist:test".parse().unwrap()).unwrap();
    for (i, image) in fashion.images[..7].iter().enumerate() {
        let class = dir.path().join("folder").join(format!("class-{}", i % 2));
        std::fs::create_dir_all(&class).unwrap();
        std::fs::write(class.join(format!("{i}.png")), image.to_png().unwrap()).unwrap();
    }
    let (folder, shards) = (dir.path().join("folder"), dir.path().join("shards"));
    let out = igpt(&[
        "shard",
        "--data",
        &format!("folder:{}", folder.display()),
        "--per-shard",
        "3",
        "-o",
        shards.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("wrote 7 images") && stderr.contains("in 3 shards"),
        "{stderr}"
    );
    let packed = DataSpec::load(&format!("shards:{}", shards.display()).parse().unwrap()).unwrap();
    let original =
        DataSpec::load(&format!("folder:{}", folder.display()).parse().unwrap()).unwrap();
    assert_eq!(packed.labels, original.labels);
    assert_eq!(packed.images, original.images);
    assert_eq!(packed.labels, [0, 0, 0, 0, 1, 1, 1]);
}
