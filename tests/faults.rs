//! Faults during training, on the `igpt` binary and a tiny model (the HF fixture, 8x8 Fashion-MNIST):
//! `kill -9` at random moments, in the middle of checkpoint writes and between their renames; a disk
//! that fills up; a read-only run directory; a loss that becomes NaN. Each leaves a whole checkpoint,
//! and `--resume` ends with the same weights, bit for bit, as a run that was never interrupted.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{B, fixture_dir};
use igpt::{store, train::run};

/// Long enough that the eight kills below land before the run could finish (each checkpoint write
/// pauses 0.3 s under fault injection, one every 4 steps).
const STEPS: usize = 80;

/// A fresh tiny run into `run_dir`: `steps` steps of 4 images, a checkpoint every `every`.
fn fresh_args(run_dir: &Path, steps: usize, every: usize) -> Vec<String> {
    let fixture = fixture_dir();
    [
        "train",
        "--model",
        fixture.to_str().unwrap(),
        "--data",
        "fashion-mnist:train",
        "--limit",
        "64",
        "--steps",
        &steps.to_string(),
        "--batch",
        "4",
        "--checkpoint-every",
        &every.to_string(),
        "--log-every",
        "1",
        "--seed",
        "7",
        "-o",
        run_dir.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec()
}

fn resume_args(run_dir: &Path) -> Vec<String> {
    ["train", "--resume", "-o", run_dir.to_str().unwrap()]
        .map(String::from)
        .to_vec()
}

fn igpt(args: &[String]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_igpt"));
    command
        .args(args)
        .env_remove("IGPT_FAULT_CHECKPOINT_PAUSE_MS");
    command
}

fn output(args: &[String]) -> Output {
    igpt(args).output().expect("the igpt binary runs")
}

fn checkpoint_file(run_dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(run::checkpoint_dir(run_dir).join(name)).unwrap()
}

/// Where a kill lands.
#[derive(Clone, Copy, Debug)]
enum Moment {
    /// After a random delay: almost always in the middle of a training step.
    Random,
    /// While `checkpoint.new/` is half written.
    MidCheckpointWrite,
    /// Between the checkpoint's two renames, when only `checkpoint.old/` exists.
    BetweenRenames,
}

/// Waits for `moment` in `run_dir` and kills the process with SIGKILL there. False when the process
/// finished first.
fn kill_at(moment: Moment, run_dir: &Path, child: &mut Child, delay: Duration) -> bool {
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        let now = match moment {
            Moment::Random => started.elapsed() >= delay,
            Moment::MidCheckpointWrite => run_dir.join("checkpoint.new").exists(),
            Moment::BetweenRenames => {
                run_dir.join("checkpoint.old").exists() && !run::checkpoint_dir(run_dir).exists()
            }
        };
        if now {
            child.kill().unwrap(); // SIGKILL, as kill -9
            child.wait().unwrap();
            return true;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

#[test]
fn kill_9_at_random_moments_then_resume_gives_the_uninterrupted_weights() {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference");
    let out = output(&fresh_args(&reference, STEPS, 4));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // xorshift: the random delays are reproducible from the seed printed here.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    eprintln!("kill delays from seed {seed:#x}");
    let mut random_delay = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        Duration::from_millis(200 + seed % 1500)
    };
    let faulted = dir.path().join("faulted");
    let plan = [
        Moment::Random,
        Moment::MidCheckpointWrite,
        Moment::BetweenRenames,
        Moment::Random,
        Moment::MidCheckpointWrite,
        Moment::BetweenRenames,
        Moment::Random,
        Moment::Random,
    ];
    let mut kills = Vec::new();
    for moment in plan {
        let args = if run::has_checkpoint(&faulted) {
            resume_args(&faulted)
        } else {
            fresh_args(&faulted, STEPS, 4)
        };
        let mut child = igpt(&args)
            // Checkpoint writes pause half-written and between renames, so the kills can land there.
            .env("IGPT_FAULT_CHECKPOINT_PAUSE_MS", "150")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if !kill_at(moment, &faulted, &mut child, random_delay()) {
            continue; // the run finished first
        }
        // Each targeted kill left what it aimed at: a half-written checkpoint, or only the old one.
        match moment {
            Moment::MidCheckpointWrite => assert!(faulted.join("checkpoint.new").exists()),
            Moment::BetweenRenames => assert!(!run::checkpoint_dir(&faulted).exists()),
            Moment::Random => {}
        }
        let step = run::read_state(&faulted).map(|s| s.step).ok();
        kills.push(format!("{moment:?} (checkpoint at step {step:?})"));
    }
    eprintln!("{} kills: {kills:#?}", kills.len());
    assert!(
        kills.len() >= 5,
        "only {} kills landed: {kills:?}",
        kills.len()
    );

    let out = output(&resume_args(&faulted));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(run::read_state(&faulted).unwrap().step, STEPS);
    assert!(
        checkpoint_file(&faulted, store::WEIGHTS_FILE)
            == checkpoint_file(&reference, store::WEIGHTS_FILE),
        "the weights differ from the uninterrupted run's"
    );
    let optimizer = |run_dir: &Path| {
        let bytes = checkpoint_file(run_dir, "optimizer.mpk");
        canonical(rmpv::decode::read_value(&mut &bytes[..]).unwrap())
    };
    assert!(
        optimizer(&faulted) == optimizer(&reference),
        "the optimizer state differs from the uninterrupted run's"
    );
    // The log holds every step once, as the uninterrupted run's does.
    let steps = |run_dir: &Path| -> Vec<String> {
        let text = std::fs::read_to_string(run_dir.join("log.csv")).unwrap();
        text.lines()
            .skip(1)
            .map(|l| l.split(',').take(4).collect::<Vec<_>>().join(","))
            .collect()
    };
    assert_eq!(steps(&faulted), steps(&reference));
    assert_eq!(steps(&faulted).len(), STEPS);
}

/// A MessagePack value with every map's entries sorted, so equal contents compare equal whatever
/// order they were written in.
fn canonical(value: rmpv::Value) -> rmpv::Value {
    match value {
        rmpv::Value::Map(entries) => {
            let mut entries: Vec<_> = entries
                .into_iter()
                .map(|(k, v)| (canonical(k), canonical(v)))
                .collect();
            entries.sort_by_key(|(k, _)| k.to_string());
            rmpv::Value::Map(entries)
        }
        rmpv::Value::Array(items) => rmpv::Value::Array(items.into_iter().map(canonical).collect()),
        other => other,
    }
}

/// A tmpfs mounted for the length of a test (needs root, as CI has); unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` at `path`, or says why it could not (it needs root).
    fn mount(path: &Path, bytes: u64) -> Result<Self, String> {
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mounting a tmpfs failed (it needs root): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Self(path.to_path_buf()))
    }

    fn remount_read_only(&self) {
        let status = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                dir_bytes(&e.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

fn checkpoint_step_and_load(run_dir: &Path) -> usize {
    store::load_dir::<B>(&run::checkpoint_dir(run_dir), &Default::default())
        .expect("the kept checkpoint loads");
    run::read_state(run_dir).unwrap().step
}

#[test]
fn a_full_disk_or_a_read_only_directory_keeps_the_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    // How much one checkpoint needs: a 4-step run holds exactly one.
    let sizing = dir.path().join("sizing");
    let out = output(&fresh_args(&sizing, 4, 4));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let checkpoint = dir_bytes(&run::checkpoint_dir(&sizing));
    // Room for the run and one checkpoint, not for a second beside it.
    let size = dir_bytes(&sizing) + checkpoint / 2;
    let disk = match Tmpfs::mount(&dir.path().join("disk"), size) {
        Ok(disk) => disk,
        Err(reason) => return common::cannot_run(&reason),
    };
    let run_dir = disk.0.join("run");
    let out = output(&fresh_args(&run_dir, 8, 4));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "8 steps fit a disk sized for one checkpoint"
    );
    assert!(
        stderr.contains("No space left on device")
            && stderr.contains("cannot write the step 8 checkpoint")
            && stderr.contains("the previous checkpoint"),
        "{stderr}"
    );
    assert!(
        !run_dir.join("checkpoint.new").exists(),
        "the partial checkpoint was left behind"
    );
    assert_eq!(checkpoint_step_and_load(&run_dir), 4);

    disk.remount_read_only();
    let out = output(&resume_args(&run_dir));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("Read-only file system"), "{stderr}");
    assert_eq!(checkpoint_step_and_load(&run_dir), 4);
}

#[test]
fn a_loss_that_becomes_nan_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let mut args = fresh_args(&run_dir, 12, 1);
    args.extend(["--lr", "1e38", "--warmup", "0"].map(String::from));
    let out = output(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a learning rate of 1e38 trained on");
    let kept: usize = stderr
        .split("the last good checkpoint (step ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no NaN guard message: {stderr}"));
    assert!(stderr.contains("the loss became"), "{stderr}");
    assert_eq!(checkpoint_step_and_load(&run_dir), kept);
}
