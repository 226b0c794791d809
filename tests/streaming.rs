//! Data that streams: a shard dataset eight times larger than this test's memory budget goes through
//! a whole epoch of the training stream within the budget, and a dataset four times bigger again
//! takes no more memory than a small one. Each epoch streams in a fresh process (this test binary
//! run again), whose peak resident set (Linux's VmHWM) is the measurement.

use std::path::Path;

use igpt::data::shards;
use igpt::data::stream::ShardStream;
use igpt::{Palette, Raster, Tokenizer};
use rand::{RngExt, SeedableRng, rngs::ChaCha8Rng};

/// How much the stream may add to the process's peak resident memory.
const BUDGET_BYTES: u64 = 32 << 20;
/// Images per shard, and the shuffle window (the stream holds about three windows).
const PER_SHARD: usize = 1000;
const WINDOW: usize = 1024;

#[test]
fn streaming_memory_stays_within_budget_and_flat_as_the_dataset_grows() {
    let dir = tempfile::tempdir().unwrap();
    let (small, big) = (dir.path().join("small"), dir.path().join("big"));
    // 32x32 RGB noise: PNG cannot compress it, so each image is about 3 KB on disk.
    let small_bytes = write_noise_shards(&small, 20, 1);
    let big_bytes = write_noise_shards(&big, 80, 2);
    assert!(
        big_bytes >= 8 * BUDGET_BYTES,
        "the big dataset ({big_bytes} bytes) must dwarf the budget"
    );
    // Each epoch streams in a process of its own, so neither inherits the other's heap.
    let small_peak = peak_growth_in_a_fresh_process(&small, 20 * PER_SHARD);
    let big_peak = peak_growth_in_a_fresh_process(&big, 80 * PER_SHARD);
    eprintln!(
        "streamed {:.0} MB: peak grew {:.1} MB; {:.0} MB: {:.1} MB (budget {:.1} MB)",
        small_bytes as f64 / 1e6,
        small_peak as f64 / 1e6,
        big_bytes as f64 / 1e6,
        big_peak as f64 / 1e6,
        BUDGET_BYTES as f64 / 1e6
    );
    assert!(
        big_peak <= BUDGET_BYTES,
        "streaming {big_bytes} bytes grew the peak by {big_peak} bytes"
    );
    assert!(
        big_peak <= small_peak + BUDGET_BYTES / 4,
        "4x the data took {big_peak} bytes at peak against {small_peak}: memory grows with the dataset"
    );
}

/// Runs [`one_epoch`] in a child process (this test binary again) on `dir`; returns its peak growth.
fn peak_growth_in_a_fresh_process(dir: &Path, images: usize) -> u64 {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "one_epoch", "--ignored", "--nocapture"])
        .env("IGPT_STREAM_DIR", dir)
        .env("IGPT_STREAM_IMAGES", images.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("peak growth: "))
        .unwrap_or_else(|| panic!("no measurement in {stdout}"))
        .parse()
        .unwrap()
}

/// One epoch of a shard dataset through the stream, measured: run by the test above in a process of
/// its own (`IGPT_STREAM_DIR`, `IGPT_STREAM_IMAGES`); run alone, it measures a small dataset of its own.
#[test]
#[ignore = "run in a child process by streaming_memory_stays_within_budget_and_flat_as_the_dataset_grows"]
fn one_epoch() {
    let own = tempfile::tempdir().unwrap();
    let (dir, images) = match std::env::var_os("IGPT_STREAM_DIR") {
        Some(dir) => {
            let images = std::env::var("IGPT_STREAM_IMAGES")
                .unwrap()
                .parse()
                .unwrap();
            (dir.into(), images)
        }
        None => {
            write_noise_shards(own.path(), 4, 3);
            (own.path().to_path_buf(), 4 * PER_SHARD)
        }
    };
    let tokenizer = Tokenizer {
        palette: Palette::new(3, (0..16 * 3).map(|i| (i % 7) as f32 / 3.0 - 1.0).collect())
            .unwrap(),
        width: 32,
        height: 32,
    };
    let start = peak_resident();
    let (mut stream, _) = ShardStream::open(&dir, tokenizer, 7, WINDOW, None, 0).unwrap();
    assert_eq!(stream.len(), images);
    for g in 0..images {
        assert_eq!(stream.get(g).unwrap().len(), 32 * 32);
    }
    drop(stream);
    let growth = peak_resident().saturating_sub(start);
    println!("peak growth: {growth}");
    assert!(
        growth <= BUDGET_BYTES,
        "the stream grew the peak by {growth} bytes"
    );
}

/// Writes `shards` shards of noise images; returns the bytes written.
fn write_noise_shards(dir: &Path, shards: usize, seed: u64) -> u64 {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut written = 0;
    for s in 0..shards {
        let images: Vec<Raster> = (0..PER_SHARD)
            .map(|_| {
                let pixels = (0..32 * 32 * 3).map(|_| rng.random::<u8>()).collect();
                Raster::new(32, 32, 3, pixels).unwrap()
            })
            .collect();
        let path = dir.join(format!("noise-{s:04}.tar"));
        shards::write(&path, s * PER_SHARD, &images, None).unwrap();
        written += std::fs::metadata(&path).unwrap().len();
    }
    written
}

/// Linux's VmHWM, the most resident memory the process has held.
fn peak_resident() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}
