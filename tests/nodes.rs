//! Data parallelism across processes (`igpt train --nodes`), as 2 processes on 127.0.0.1: they train as
//! one process with the same batch does (the same losses and weights within f32 rounding over 20
//! steps), and a node killed mid-run takes the other down with a message while the last checkpoint
//! stays whole, and resumes in one process to where a one-process run ends.
#![cfg(feature = "collective")]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{B, weight_gap, weights};
use igpt::store;
use igpt::train::run;

fn igpt() -> Command {
    Command::new(env!("CARGO_BIN_EXE_igpt"))
}

/// A port nothing listens on now, with the next two free as well (the nodes' own ports).
fn free_port() -> u16 {
    loop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        if port < 60000
            && (1..=2).all(|i| std::net::TcpListener::bind(("127.0.0.1", port + i)).is_ok())
        {
            return port;
        }
    }
}

/// The settings every run here shares: a tiny fresh model on 64 Fashion-MNIST images.
fn train_args(palette: &Path, run: &Path, steps: usize) -> Vec<String> {
    let args = format!(
        "train --preset tiny --palette {} --data fashion-mnist:train --limit 64 --steps {steps} \
         --batch 8 --log-every 1 --eval-every 1000 --checkpoint-every 2 --device flex -o {}",
        palette.display(),
        run.display()
    );
    args.split(' ').map(String::from).collect()
}

fn node(palette: &Path, run: &Path, steps: usize, rank: u32, port: u16, timeout: u64) -> Child {
    igpt()
        .args(train_args(palette, run, steps))
        .args(["--nodes", "2", "--node-rank", &rank.to_string()])
        .args(["--coordinator", &format!("127.0.0.1:{port}")])
        .args(["--node-timeout", &timeout.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs `command` to its end and fails the test, with its stderr, unless it succeeds.
fn run_to_success(command: &mut Command) {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn palette(dir: &Path) -> std::path::PathBuf {
    let palette = dir.join("pal");
    run_to_success(
        igpt()
            .args([
                "palette",
                "--data",
                "fashion-mnist:train",
                "--limit",
                "300",
                "-o",
            ])
            .arg(&palette),
    );
    palette
}

/// Every logged step's loss.
fn losses(run: &Path) -> Vec<f64> {
    let log = std::fs::read_to_string(run.join("log.csv")).unwrap();
    log.lines()
        .skip(1)
        .map(|line| line.split(',').nth(2).unwrap().parse().unwrap())
        .collect()
}

#[test]
fn two_processes_train_as_one_with_the_same_batch() {
    let dir = tempfile::tempdir().unwrap();
    let palette = palette(dir.path());
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    run_to_success(igpt().args(train_args(&palette, &one, 20)));

    let port = free_port();
    let first = node(&palette, &two, 20, 0, port, 60);
    std::thread::sleep(Duration::from_millis(300));
    let second = node(&palette, &two, 20, 1, port, 60);
    for (rank, child) in [first, second].into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "node {rank}: {stderr}");
        assert!(
            stderr.contains(&format!("split across 2 nodes (this is node {rank})")),
            "{stderr}"
        );
    }

    let (single, split) = (losses(&one), losses(&two));
    assert_eq!(single.len(), 20);
    assert_eq!(split.len(), 20, "node 0 logs every step, node 1 nothing");
    for (a, b) in single.iter().zip(&split) {
        assert!(
            (a - b).abs() <= 1e-5 * a.abs(),
            "losses {single:?} against {split:?}"
        );
    }
    let gap = checkpoint_gap(&one, &two);
    eprintln!("2 processes against 1: weights within {gap:.1e} (relative)");
    assert!(
        gap <= 1e-4,
        "weights differ by {gap:e} (relative to the largest)"
    );
}

/// The largest difference between two runs' checkpointed weights, relative to the largest weight.
fn checkpoint_gap(a: &Path, b: &Path) -> f32 {
    let load = |run: &Path| {
        let stored = store::load_dir::<B>(&run::checkpoint_dir(run), &Default::default()).unwrap();
        weights(&stored.model)
    };
    weight_gap(&load(a), &load(b))
}

#[test]
fn a_killed_node_stops_the_run_and_keeps_the_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let palette = palette(dir.path());
    let run_dir = dir.path().join("run");
    let port = free_port();
    let first = node(&palette, &run_dir, 60, 0, port, 5);
    std::thread::sleep(Duration::from_millis(300));
    let mut second = node(&palette, &run_dir, 60, 1, port, 5);
    // Let the run take a few checkpoints, then kill node 1 outright.
    let started = Instant::now();
    while run::read_state(&run_dir).map_or(true, |s| s.step < 4) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the run did not get going"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    second.kill().unwrap();
    second.wait().unwrap();
    let killed_at = Instant::now();
    let out = first.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "node 0 went on alone: {stderr}");
    // Node 0 learns of it from its closed connections, or else from its watchdog.
    assert!(
        stderr.contains("node 0 of 2 lost the other nodes")
            || stderr.contains("node 0 of 2 waited 5 s for the other nodes"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(killed_at.elapsed() < Duration::from_secs(60));
    // The checkpoint is whole: it loads, optimizer and all, at an even step (one every 2).
    let state = run::read_state(&run_dir).unwrap();
    assert!(state.step >= 4 && state.step.is_multiple_of(2), "{state:?}");
    run::Checkpoint::<burn::backend::Autodiff<B>>::load(&run_dir, &Default::default()).unwrap();

    // Resumed in one process (the node count is not part of the run), it ends where a run in one
    // process from the start ends.
    run_to_success(
        igpt()
            .args(["train", "--resume", "--device", "flex", "-o"])
            .arg(&run_dir),
    );
    assert_eq!(run::read_state(&run_dir).unwrap().step, 60);
    let alone = dir.path().join("alone");
    run_to_success(igpt().args(train_args(&palette, &alone, 60)));
    let gap = checkpoint_gap(&alone, &run_dir);
    eprintln!(
        "killed at step {}, resumed alone: weights within {gap:.1e} (relative)",
        state.step
    );
    assert!(
        gap <= 1e-4,
        "weights differ by {gap:e} (relative to the largest)"
    );
}
