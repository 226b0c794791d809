//! Mutation fuzzing of every loader, on stable Rust: real files from `tests/fuzz/seeds/` (and the HF
//! fixture) are cut, bit-flipped, spliced and, for JSON, edited structurally (numbers set to extremes,
//! values retyped, keys removed). The invariant: every input gives `Ok` or a clean one-line `Err`, never
//! a panic, an abort or unbounded memory. proptest shrinks a failing input before reporting it.
//!
//! Each target runs for `IGPT_FUZZ_SECONDS` (default 5) and prints its executions; run longer by hand:
//! `IGPT_FUZZ_SECONDS=300 cargo test --release --test fuzz -- --nocapture --test-threads 1`.
//! `IGPT_FUZZ_SEED` changes the (otherwise fixed, so reproducible) random stream.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{B, fixture_dir};
use igpt::data::DataSpec;
use igpt::{ModelFiles, Raster, Tokenizer, store};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

fn seeds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/seeds")
}

fn seed(name: &str) -> Vec<u8> {
    std::fs::read(seeds_dir().join(name)).unwrap_or_else(|e| panic!("seed {name}: {e}"))
}

/// Byte-level edits, as a mutation fuzzer makes them.
#[derive(Clone, Debug)]
enum Mutation {
    FlipBit(Index, u8),
    SetByte(Index, u8),
    /// Overwrites 1, 2, 4 or 8 bytes with a boundary value (0, -1, 2^31, ...), little- or big-endian.
    Boundary(Index, u8, bool),
    Insert(Index, Vec<u8>),
    Delete(Index, u8),
    Truncate(Index),
    /// Copies a run of bytes from one place over another.
    Splice(Index, Index, u8),
}

const BOUNDARIES: [u64; 10] = [
    0,
    1,
    0x7f,
    0xff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff_ffff,
    u64::MAX,
];

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 0..8u8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, v)| Mutation::SetByte(i, v)),
        (any::<Index>(), any::<u8>(), any::<bool>())
            .prop_map(|(i, w, le)| Mutation::Boundary(i, w, le)),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<Index>(), 1..64u8).prop_map(|(i, n)| Mutation::Delete(i, n)),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), any::<Index>(), 1..32u8).prop_map(|(a, b, n)| Mutation::Splice(a, b, n)),
    ]
}

fn mutations(max: usize) -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(mutation(), 0..=max)
}

fn apply(bytes: &[u8], edits: &[Mutation]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for edit in edits {
        let len = b.len();
        let at = |i: &Index| if len == 0 { 0 } else { i.index(len) };
        match edit {
            Mutation::FlipBit(i, bit) if len > 0 => b[at(i)] ^= 1 << bit,
            Mutation::SetByte(i, v) if len > 0 => b[at(i)] = *v,
            Mutation::Boundary(i, which, little) => {
                let value = BOUNDARIES[*which as usize % BOUNDARIES.len()];
                let width = [1, 2, 4, 8][(*which as usize / BOUNDARIES.len()) % 4];
                let bytes = if *little {
                    value.to_le_bytes()[..width].to_vec()
                } else {
                    value.to_be_bytes()[8 - width..].to_vec()
                };
                let start = at(i).min(len.saturating_sub(width));
                let end = (start + width).min(len);
                b[start..end].copy_from_slice(&bytes[..end - start]);
            }
            Mutation::Insert(i, new) => {
                let pos = if len == 0 { 0 } else { i.index(len + 1) };
                b.splice(pos..pos, new.iter().copied());
            }
            Mutation::Delete(i, n) if len > 0 => {
                let start = at(i);
                b.drain(start..(start + *n as usize).min(len));
            }
            Mutation::Truncate(i) => b.truncate(at(i)),
            Mutation::Splice(from, to, n) if len > 0 => {
                let (from, to) = (at(from), at(to));
                let n = (*n as usize).min(len - from).min(len - to);
                let run = b[from..from + n].to_vec();
                b[to..to + n].copy_from_slice(&run);
            }
            _ => {}
        }
    }
    b
}

/// Structural edits of a JSON document.
#[derive(Clone, Debug)]
enum JsonEdit {
    /// Replaces a value (any node) with an extreme or ill-typed one.
    Replace(Index, u8),
    /// Removes an object member or array element.
    Remove(Index),
}

fn json_edits(max: usize) -> impl Strategy<Value = Vec<JsonEdit>> {
    let edit = prop_oneof![
        3 => (any::<Index>(), any::<u8>()).prop_map(|(i, v)| JsonEdit::Replace(i, v)),
        1 => any::<Index>().prop_map(JsonEdit::Remove),
    ];
    prop::collection::vec(edit, 0..=max)
}

fn extreme(which: u8) -> serde_json::Value {
    use serde_json::json;
    let values = [
        json!(0),
        json!(-1),
        json!(1),
        json!(2),
        json!(3),
        json!(65535),
        json!(65536),
        json!(4_294_967_296u64),
        json!(1u64 << 40),
        json!(9_007_199_254_740_993u64),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(1.5),
        json!(-0.0),
        json!(1e308),
        json!(null),
        json!(true),
        json!(""),
        json!("F16"),
        json!("I64"),
        json!([]),
        json!([0]),
        json!({}),
        json!([1u64 << 33, 1u64 << 33]),
    ];
    values[which as usize % values.len()].clone()
}

/// Every node of a document, as a path of keys / indices from the root.
fn paths(
    value: &serde_json::Value,
    prefix: &mut Vec<serde_json::Value>,
    out: &mut Vec<Vec<serde_json::Value>>,
) {
    out.push(prefix.clone());
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                prefix.push(k.clone().into());
                paths(v, prefix, out);
                prefix.pop();
            }
        }
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                prefix.push(i.into());
                paths(v, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn node<'a>(
    root: &'a mut serde_json::Value,
    path: &[serde_json::Value],
) -> &'a mut serde_json::Value {
    path.iter().fold(root, |v, key| match key {
        serde_json::Value::String(k) => &mut v[k.as_str()],
        other => &mut v[other.as_u64().unwrap() as usize],
    })
}

/// Applies structural edits to JSON text; text that is not JSON is returned unchanged.
fn edit_json(text: &[u8], edits: &[JsonEdit]) -> Vec<u8> {
    let Ok(mut root) = serde_json::from_slice::<serde_json::Value>(text) else {
        return text.to_vec();
    };
    for edit in edits {
        let mut all = Vec::new();
        paths(&root, &mut Vec::new(), &mut all);
        match edit {
            JsonEdit::Replace(i, which) => {
                *node(&mut root, &all[i.index(all.len())]) = extreme(*which)
            }
            JsonEdit::Remove(i) => {
                let mut path = all[i.index(all.len())].clone();
                let Some(last) = path.pop() else { continue };
                match (node(&mut root, &path), last) {
                    (serde_json::Value::Object(map), serde_json::Value::String(k)) => {
                        map.remove(&k);
                    }
                    (serde_json::Value::Array(items), i) => {
                        items.remove(i.as_u64().unwrap() as usize);
                    }
                    _ => {}
                }
            }
        }
    }
    serde_json::to_vec(&root).unwrap()
}

/// A safetensors file with its JSON header edited structurally (the length prefix follows the header).
fn edit_safetensors_header(bytes: &[u8], edits: &[JsonEdit]) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = edit_json(&bytes[8..8 + n], edits);
    [
        &(header.len() as u64).to_le_bytes()[..],
        &header,
        &bytes[8 + n..],
    ]
    .concat()
}

thread_local! {
    /// Inputs a loader accepted, so the report shows the mutations are not all rejected at the door.
    static ACCEPTED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// An error must say something, on one line (the CLI prints it after `error: `).
fn clean<T>(result: igpt::Result<T>) -> Result<Option<T>, TestCaseError> {
    match result {
        Ok(v) => {
            ACCEPTED.set(ACCEPTED.get() + 1);
            Ok(Some(v))
        }
        Err(e) => {
            let message = e.to_string();
            prop_assert!(!message.trim().is_empty(), "an empty error");
            prop_assert!(!message.contains('\n'), "a multi-line error: {message}");
            Ok(None)
        }
    }
}

/// Runs `body` on inputs from `strategy` until the time budget is spent; panics with the shrunk
/// input if any case fails (a panic in the code under test is a failure too).
fn fuzz<S: Strategy>(name: &str, strategy: S, body: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let seconds: f64 = std::env::var("IGPT_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let base: u64 = std::env::var("IGPT_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let started = Instant::now();
    ACCEPTED.set(0);
    let executions = std::cell::Cell::new(0u64);
    let mut round = 0u64;
    // At least one round (32 inputs) whatever the time given: a fuzz target never passes unrun.
    while round == 0 || started.elapsed() < Duration::from_secs_f64(seconds) {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&base.to_le_bytes());
        key[8..16].copy_from_slice(&round.to_le_bytes());
        key[16..16 + name.len().min(16)].copy_from_slice(&name.as_bytes()[..name.len().min(16)]);
        let config = Config {
            cases: 32,
            failure_persistence: None,
            max_shrink_iters: 2000,
            ..Config::default()
        };
        let mut runner =
            TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &key));
        if let Err(e) = runner.run(&strategy, |value| {
            executions.set(executions.get() + 1);
            body(value)
        }) {
            panic!("fuzz target {name} failed (IGPT_FUZZ_SEED={base}, round {round}): {e}");
        }
        round += 1;
    }
    assert!(executions.get() > 0, "fuzz target {name} ran no input");
    eprintln!(
        "fuzz {name}: {} executions in {:.1} s, no failure ({} results were Ok)",
        executions.get(),
        started.elapsed().as_secs_f64(),
        ACCEPTED.get()
    );
}

fn fixture_files() -> [Vec<u8>; 4] {
    let read = |name: &str| std::fs::read(fixture_dir().join(name)).unwrap();
    [
        read(store::WEIGHTS_FILE),
        read(store::CONFIG_FILE),
        read(store::PREPROCESSOR_FILE),
        br#"{"name": "fixture", "image_height": 8, "image_width": 8, "channels": 3}"#.to_vec(),
    ]
}

/// A model directory in memory: safetensors (bytes or header edits), config.json, preprocessor and
/// card (JSON edits, then bytes), loaded, and run on two tokens when it loads.
#[test]
fn fuzz_model_directory() {
    let files = fixture_files();
    let edits = (
        0..4usize,
        any::<bool>(),
        json_edits(3),
        mutations(3),
        any::<bool>(),
    );
    fuzz(
        "model-directory",
        edits,
        |(file, header, json, bytes, no_card)| {
            let mut f = files.clone();
            f[file] = if file == 0 {
                let edited = if header {
                    edit_safetensors_header(&f[0], &json)
                } else {
                    f[0].clone()
                };
                apply(&edited, &bytes)
            } else {
                apply(&edit_json(&f[file], &json), &bytes)
            };
            let [weights, config, preprocessor, card] = f;
            let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
            let files = ModelFiles {
                weights,
                config: text(config),
                preprocessor: text(preprocessor),
                card: (!no_card).then(|| text(card)),
            };
            if let Some(stored) = clean(files.load::<B>(&Default::default()))? {
                let ids = burn::tensor::Tensor::<B, 2, burn::tensor::Int>::zeros(
                    [1, 2],
                    &Default::default(),
                );
                let logits = stored.model.forward(ids);
                prop_assert_eq!(logits.dims()[2], stored.config.n_colors);
            }
            Ok(())
        },
    );
}

fn fixture_tokenizer() -> Tokenizer {
    store::read_tokenizer(&fixture_dir()).unwrap()
}

/// Decoding each image format (PNG grey / RGB / RGBA, JPEG, GIF, BMP, WebP), then tokenizing.
#[test]
fn fuzz_image_decoding_and_tokenizing() {
    let names = [
        "fashion.png",
        "fashion-rgb.png",
        "fashion-rgba.png",
        "fashion.jpg",
        "fashion.gif",
        "fashion.bmp",
        "fashion.webp",
    ];
    let images: Vec<Vec<u8>> = names.iter().map(|n| seed(n)).collect();
    let tokenizer = fixture_tokenizer();
    fuzz(
        "image",
        (0..names.len(), mutations(4), 1..=3usize),
        |(which, edits, channels)| {
            let bytes = apply(&images[which], &edits);
            let channels = if channels == 2 { 3 } else { channels };
            if let Some(image) = clean(Raster::decode(&bytes, channels))? {
                let ids = tokenizer.tokenize(&image.with_channels(3));
                prop_assert_eq!(ids.len(), 64);
            }
            Ok(())
        },
    );
}

/// A colour font glyph's PNG bitmap, as the emoji dataset reads it: decoded (size-capped), laid on
/// white, squared and area-averaged to 32x32. (The font's tables are read by ttf-parser, which is
/// fuzzed upstream; a whole 11 MB font per case would be too slow here.)
#[test]
fn fuzz_emoji_glyph_bitmaps() {
    let glyph = seed("emoji-glyph.png");
    fuzz("emoji-glyph", mutations(4), |edits| {
        let bytes = apply(&glyph, &edits);
        if let Some(image) = clean(igpt::data::square_on_white(&bytes, 32))? {
            prop_assert_eq!((image.width, image.height), (32, 32));
        }
        Ok(())
    });
}

/// Writes `files` into a fresh directory and loads `spec_of(dir)` from it.
fn load_files(files: &[(&str, Vec<u8>)], spec_of: impl Fn(&Path) -> String) -> igpt::Result<usize> {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    let spec: DataSpec = spec_of(dir.path()).parse()?;
    Ok(spec.load()?.len())
}

/// IDX images (gzipped) and labels (raw): 16 real Fashion-MNIST test images. Mutations hit either
/// file, and the gzip one both before and after compression.
#[test]
fn fuzz_idx_raw_and_gzip() {
    let images_gz = seed("t10k-images-idx3-ubyte.gz");
    let labels = seed("t10k-labels-idx1-ubyte");
    let images_raw = {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&images_gz[..])
            .read_to_end(&mut out)
            .unwrap();
        out
    };
    let gzip = |bytes: &[u8]| {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    };
    fuzz("idx", (0..3usize, mutations(4)), |(target, edits)| {
        let files = match target {
            0 => [
                ("t10k-images-idx3-ubyte.gz", apply(&images_gz, &edits)),
                ("t10k-labels-idx1-ubyte", labels.clone()),
            ],
            1 => [
                (
                    "t10k-images-idx3-ubyte.gz",
                    gzip(&apply(&images_raw, &edits)),
                ),
                ("t10k-labels-idx1-ubyte", labels.clone()),
            ],
            _ => [
                ("t10k-images-idx3-ubyte.gz", images_gz.clone()),
                ("t10k-labels-idx1-ubyte", apply(&labels, &edits)),
            ],
        };
        if let Some(n) = clean(load_files(&files, |d| format!("idx:{}:test", d.display())))? {
            prop_assert!(n > 0);
        }
        Ok(())
    });
}

/// CIFAR-10 binary batches (4 records built from real Fashion-MNIST images) and their class names.
#[test]
fn fuzz_cifar_batches() {
    let batch = seed("test_batch.bin");
    let names = seed("batches.meta.txt");
    fuzz(
        "cifar",
        (any::<bool>(), mutations(4)),
        |(names_file, edits)| {
            let files = if names_file {
                [
                    ("test_batch.bin", batch.clone()),
                    ("batches.meta.txt", apply(&names, &edits)),
                ]
            } else {
                [
                    ("test_batch.bin", apply(&batch, &edits)),
                    ("batches.meta.txt", names.clone()),
                ]
            };
            if let Some(n) = clean(load_files(&files, |d| {
                format!("cifar:{}:test", d.display())
            }))? {
                prop_assert!(n > 0);
            }
            Ok(())
        },
    );
}

/// A tar shard of 4 samples (the fuzz seed `fashion.png` and three of its crops, with `.cls`
/// labels), read whole (`shards:DIR`) and streamed as training reads it.
#[test]
fn fuzz_tar_shards() {
    let image = Raster::decode(&seed("fashion.png"), 3).unwrap();
    let images: Vec<Raster> = (0..4)
        .map(|i| image.resized(8 - i, 8 - i).resized(8, 8))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seed.tar");
    igpt::data::shards::write(&path, 0, &images, Some(&[0, 1, 2, 1])).unwrap();
    let shard = std::fs::read(&path).unwrap();
    let tokenizer = fixture_tokenizer();
    fuzz(
        "shards",
        (any::<bool>(), mutations(4)),
        |(streamed, edits)| {
            let files = [("part-0.tar", apply(&shard, &edits))];
            if !streamed {
                if let Some(n) = clean(load_files(&files, |d| format!("shards:{}", d.display())))? {
                    prop_assert!(n > 0);
                }
                return Ok(());
            }
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(files[0].0), &files[0].1).unwrap();
            let opened =
                igpt::data::stream::ShardStream::open(dir.path(), tokenizer.clone(), 1, 3, None, 0);
            if let Some((mut stream, _)) = clean(opened)? {
                for g in 0..2 * stream.len() {
                    if let Some(ids) = clean(stream.get(g))? {
                        prop_assert_eq!(ids.len(), 64);
                    }
                }
            }
            Ok(())
        },
    );
}

/// Token-id JSON, as `igpt eval --ids` reads it, scored by the fixture model when it parses.
#[test]
fn fuzz_token_id_json() {
    let text = seed("ids.json");
    let model = store::load_dir::<B>(&fixture_dir(), &Default::default())
        .unwrap()
        .model;
    fuzz(
        "token-ids",
        (json_edits(3), mutations(3)),
        |(json, bytes)| {
            let edited = apply(&edit_json(&text, &json), &bytes);
            if let Some(ids) = clean(igpt::pixels::tokens::parse_ids(&String::from_utf8_lossy(
                &edited,
            )))? && ids.len() <= 8
            {
                clean(igpt::eval::sequence_nll(&model, &ids, 4, |_| {}))?;
            }
            Ok(())
        },
    );
}

/// Dataset specs: mutated real ones and arbitrary strings. A spec that parses prints back to itself.
#[test]
fn fuzz_dataset_spec_parser() {
    let specs: Vec<String> = String::from_utf8(seed("specs.txt"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let input = prop_oneof![
        (0..specs.len(), mutations(3)).prop_map(move |(i, edits)| {
            String::from_utf8_lossy(&apply(specs[i].as_bytes(), &edits)).into_owned()
        }),
        ".{0,40}",
    ];
    fuzz("dataset-spec", input, |text| {
        if let Some(spec) = clean(text.parse::<DataSpec>())? {
            let again: DataSpec = spec
                .to_string()
                .parse()
                .map_err(|e| TestCaseError::fail(format!("{spec} does not parse back: {e}")))?;
            prop_assert_eq!(again, spec);
        }
        Ok(())
    });
}

/// Writes the seed corpus in `tests/fuzz/seeds/` from real files (Fashion-MNIST and the page's
/// example images). Run by hand when a seed is added: `cargo test --release --test fuzz -- --ignored`.
#[test]
#[ignore]
fn write_seed_corpus() {
    use std::io::{Read, Write};
    let dir = seeds_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, bytes: &[u8]| std::fs::write(dir.join(name), bytes).unwrap();
    let fashion = Path::new(igpt::data::FASHION_MNIST_DIR);
    let gunzip = |name: &str| {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(fashion.join(name)).unwrap())
            .read_to_end(&mut out)
            .unwrap();
        out
    };
    let (n, side) = (16usize, 28usize);
    let images = gunzip("t10k-images-idx3-ubyte.gz");
    let labels = gunzip("t10k-labels-idx1-ubyte.gz");
    let mut idx = vec![0, 0, 8, 3];
    for d in [n, side, side] {
        idx.extend((d as u32).to_be_bytes());
    }
    idx.extend(&images[16..16 + n * side * side]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&idx).unwrap();
    write("t10k-images-idx3-ubyte.gz", &gz.finish().unwrap());
    let mut idx = vec![0, 0, 8, 1];
    idx.extend((n as u32).to_be_bytes());
    idx.extend(&labels[8..8 + n]);
    write("t10k-labels-idx1-ubyte", &idx);

    // CIFAR-10 records: label byte, then 32x32 red, green and blue planes (the image centred, tinted).
    let mut cifar = Vec::new();
    for i in 0..4 {
        cifar.push(labels[8 + i]);
        for (plane, scale) in [1.0, 0.6, 0.3].into_iter().enumerate() {
            let _ = plane;
            for y in 0..32 {
                for x in 0..32 {
                    let (sy, sx) = (y as isize - 2, x as isize - 2);
                    let v = if (0..28).contains(&sy) && (0..28).contains(&sx) {
                        images[16 + i * 784 + sy as usize * 28 + sx as usize]
                    } else {
                        0
                    };
                    cifar.push((v as f32 * scale) as u8);
                }
            }
        }
    }
    write("test_batch.bin", &cifar);
    write(
        "batches.meta.txt",
        b"airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n",
    );

    let example = image::open(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("www/examples/fashion-mnist-test-0.png"),
    )
    .unwrap();
    let grey = example.to_luma8();
    let rgb = image::DynamicImage::ImageLuma8(grey.clone()).to_rgb8();
    let rgba = image::RgbaImage::from_fn(28, 28, |x, y| {
        let v = grey.get_pixel(x, y)[0];
        image::Rgba([v, v / 2, 255 - v, if v > 0 { 255 } else { 0 }])
    });
    let encode = |img: image::DynamicImage, format| {
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    };
    use image::DynamicImage::{ImageLuma8, ImageRgb8, ImageRgba8};
    use image::ImageFormat as F;
    for (name, img, format) in [
        ("fashion.png", ImageLuma8(grey), F::Png),
        ("fashion-rgb.png", ImageRgb8(rgb.clone()), F::Png),
        ("fashion-rgba.png", ImageRgba8(rgba.clone()), F::Png),
        ("fashion.jpg", ImageRgb8(rgb.clone()), F::Jpeg),
        ("fashion.gif", ImageRgba8(rgba), F::Gif),
        ("fashion.bmp", ImageRgb8(rgb.clone()), F::Bmp),
        ("fashion.webp", ImageRgb8(rgb), F::WebP),
    ] {
        write(name, &encode(img, format));
    }

    // One colour glyph's PNG bitmap (the emoji dataset's input), as the font stores it.
    let font = std::fs::read(igpt::data::NOTO_COLOR_EMOJI).unwrap();
    let face = ttf_parser::Face::parse(&font, 0).unwrap();
    let glyph = (0..face.number_of_glyphs())
        .find_map(|id| face.glyph_raster_image(ttf_parser::GlyphId(id), u16::MAX))
        .unwrap();
    write("emoji-glyph.png", glyph.data);

    let ids = common::expected().input_ids;
    write("ids.json", serde_json::to_string(&ids).unwrap().as_bytes());
    write(
        "specs.txt",
        b"fashion-mnist:test\nfashion-mnist:/data/fmnist:train\nidx:/data/mnist:test\ncifar:/data/cifar-10-batches-bin:train\nfolder:/data/emoji\nemoji:test\nemoji:/fonts/Twemoji.ttf:train\n",
    );
}
