//! Training on the CPU backend: gradients agree with finite differences, a few steps lower the loss,
//! a run stopped and resumed (in memory or streamed from shards) ends with exactly the weights of an
//! uninterrupted one, the schedule, one
//! step shared by training and fine-tuning, and a fine-tuned model that classifies and round-trips.

mod common;

use std::ops::ControlFlow;
use std::path::Path;

use burn::backend::Autodiff;
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Tensor};
use common::{stripes, tiny_model, train_config as config, train_logging_losses, weights};
use igpt::analysis::{classify, explain};
use igpt::data::augment::Augment;
use igpt::data::shards;
use igpt::data::stream::ShardStream;
use igpt::model::objective::Objective;
use igpt::pixels::tokens::{inputs_and_targets, target_log_probs};
use igpt::store::{self, StoredModel, WeightPrecision};
use igpt::train::finetune::{self, FinetuneConfig, FinetuneEvent};
use igpt::train::run::{self, Checkpoint};
use igpt::train::step::{self, Batch};
use igpt::train::{self, Batches, Event, Start, TrainConfig, TrainData};
use igpt::{ImageGpt, Precision, Raster};

type B = burn::backend::Flex;
type A = Autodiff<B>;

fn tiny<BB: Backend>(seed: u64) -> StoredModel<BB> {
    tiny_model(Objective::Autoregressive, seed)
}

#[test]
fn a_few_steps_lower_the_loss() {
    let data = stripes(64);
    let run = tempfile::tempdir().unwrap();
    let (_, state, losses) = train_logging_losses(
        run.path(),
        &config(30),
        Start::Model(tiny::<A>(1)),
        &data,
        &data[..8],
    );
    assert_eq!(state.step, 30);
    let first = losses[0];
    let last = losses[losses.len() - 3..].iter().sum::<f64>() / 3.0;
    // Uniform over 16 colours is ln 16 = 2.77 nats; stripes are far more predictable than that.
    assert!(
        (first - 16f64.ln()).abs() < 0.1,
        "a fresh model starts near uniform: {first}"
    );
    assert!(last < 0.6 * first, "loss went from {first} to {last}");
    let log = std::fs::read_to_string(run.path().join("log.csv")).unwrap();
    assert_eq!(
        log.lines().count(),
        31,
        "a header and one line per logged step"
    );
}

/// Validation runs every `eval_every` steps even when those steps are not logging or checkpoint
/// steps, and its rows reach log.csv.
#[test]
fn validation_runs_on_its_own_schedule() {
    let data = stripes(16);
    let run = tempfile::tempdir().unwrap();
    let mut validated = Vec::new();
    train::train(
        run.path(),
        &TrainConfig {
            log_every: 10,
            eval_every: 7,
            checkpoint_every: 100,
            ..config(21)
        },
        Start::Model(tiny::<A>(2)),
        &data,
        &data[..8],
        |e| {
            if let Event::Validation { step, .. } = e {
                validated.push(step);
            }
            ControlFlow::Continue(())
        },
    )
    .unwrap();
    assert_eq!(validated, [7, 14, 21]);
    let log = std::fs::read_to_string(run.path().join("log.csv")).unwrap();
    let with_val: Vec<&str> = log
        .lines()
        .skip(1)
        .filter(|row| !row.split(',').nth(6).unwrap().is_empty())
        .map(|row| row.split(',').next().unwrap())
        .collect();
    assert_eq!(with_val, ["7", "14", "21"], "{log}");
}

/// Mixed precision (products in bf16 or f16, f32 weights) learns as f32 does from the same start, and
/// the run records it; the model handed back computes in f32 again.
#[test]
fn mixed_precision_training_follows_f32() {
    let data = stripes(64);
    let losses = |precision| {
        let run = tempfile::tempdir().unwrap();
        let (trained, _, losses) = train_logging_losses(
            run.path(),
            &TrainConfig {
                precision,
                ..config(30)
            },
            Start::Model(tiny::<A>(4)),
            &data,
            &[],
        );
        assert_eq!(trained.model.precision(), Precision::F32);
        assert_eq!(run::read_config(run.path()).unwrap().precision, precision);
        losses
    };
    let f32_losses = losses(Precision::F32);
    for half in [Precision::Bf16, Precision::F16] {
        let half_losses = losses(half);
        let (first, last) = (half_losses[0], half_losses[29]);
        assert!(
            last < 0.6 * first,
            "{half:?}: loss went from {first} to {last} (f32: {f32_losses:?})"
        );
        let gap = (last - f32_losses[29]).abs();
        assert!(
            gap < 0.05,
            "{half:?} ends {gap} nats from f32 ({last} vs {})",
            f32_losses[29]
        );
        assert_ne!(
            half_losses, f32_losses,
            "{half:?} should round its products"
        );
    }
}

#[test]
fn resuming_after_a_stop_gives_the_uninterrupted_weights() {
    let data = stripes(40);
    stopped_and_resumed_equals_uninterrupted(|| TrainData::from(&data));
}

/// The same with the images streamed from tar shards (16, 16 and 4 images; a shuffle window of 6),
/// stopped mid-epoch and mid-window: step 5 ends at example 40, the 4th of the second epoch.
#[test]
fn a_streamed_run_resumes_mid_epoch_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = tiny::<B>(0).tokenizer();
    let images: Vec<Raster> = stripes(36)
        .iter()
        .map(|s| tokenizer.detokenize(s).unwrap())
        .collect();
    for (i, chunk) in images.chunks(16).enumerate() {
        let path = dir.path().join(format!("part-{i}.tar"));
        shards::write(&path, i * 16, chunk, None).unwrap();
    }
    let stream = || {
        let (stream, _) = ShardStream::open(dir.path(), tokenizer.clone(), 3, 6, None, 0).unwrap();
        assert_eq!(stream.len(), 36);
        TrainData::Stream(stream)
    };
    stopped_and_resumed_equals_uninterrupted(stream);
}

/// 12 steps in one go, and 5 steps, a stop, and a resume to 12, end with the same weights.
fn stopped_and_resumed_equals_uninterrupted<'a>(data: impl Fn() -> TrainData<'a>) {
    let whole = tempfile::tempdir().unwrap();
    let (uninterrupted, _) = train::train(
        whole.path(),
        &config(12),
        Start::Model(tiny::<A>(2)),
        data(),
        &[],
        |_| ControlFlow::Continue(()),
    )
    .unwrap();

    let split = tempfile::tempdir().unwrap();
    let (_, stopped) = train::train(
        split.path(),
        &config(12),
        Start::Model(tiny::<A>(2)),
        data(),
        &[],
        |e| match e {
            Event::Checkpoint { step: 5 } => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        },
    )
    .unwrap();
    assert_eq!(stopped.step, 5);
    assert_eq!(run::read_state(split.path()).unwrap().step, 5);
    let (resumed, state) = train::train(
        split.path(),
        &config(12),
        Start::Resume(Checkpoint::<A>::load(split.path(), &Default::default()).unwrap()),
        data(),
        &[],
        |_| ControlFlow::Continue(()),
    )
    .unwrap();
    assert_eq!(state.step, 12);
    assert_eq!(weights(&resumed.model), weights(&uninterrupted.model));

    // The checkpoint is a model directory like any other.
    let reloaded =
        store::load_dir::<B>(&run::checkpoint_dir(split.path()), &Default::default()).unwrap();
    assert_eq!(weights(&reloaded.model), weights(&resumed.model));
}

#[test]
fn gradients_match_finite_differences() {
    let stored = tiny::<A>(4);
    // A non-zero head, so every layer gets gradient.
    let mut model = stored.model;
    model = model.map(&mut Perturb(0));
    let data = stripes(4);
    let device = Default::default();
    let loss_of = |m: &ImageGpt<A>| {
        let (inputs, targets) =
            inputs_and_targets::<A>(data.iter().map(Vec::as_slice), 16, &device);
        target_log_probs(m.forward(inputs), targets).mean().neg()
    };
    let grads = loss_of(&model).backward();
    // Check a few entries of several parameters: embeddings, attention, MLP, head.
    struct Probe<'a> {
        grads: &'a <A as burn::tensor::backend::AutodiffBackend>::Gradients,
        found: Vec<(burn::module::ParamId, usize, f32)>,
        index: usize,
    }
    impl ModuleVisitor<A> for Probe<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<A, D>>) {
            if self.index.is_multiple_of(3) {
                let g: Vec<f32> = param
                    .val()
                    .grad(self.grads)
                    .unwrap()
                    .into_data()
                    .into_vec()
                    .unwrap();
                let at = (self.index * 7919) % g.len();
                self.found.push((param.id, at, g[at]));
            }
            self.index += 1;
        }
    }
    let mut probe = Probe {
        grads: &grads,
        found: Vec::new(),
        index: 0,
    };
    model.visit(&mut probe);
    assert!(probe.found.len() >= 5);
    for (id, at, analytic) in probe.found {
        let eps = 1e-2f32;
        let shifted = |delta: f32| {
            let m = model.clone().map(&mut Nudge { id, at, delta });
            loss_of(&m).into_scalar()
        };
        let numeric = (shifted(eps) - shifted(-eps)) / (2.0 * eps);
        let tol = 0.02 * analytic.abs().max(numeric.abs()) + 1e-4;
        assert!(
            (numeric - analytic).abs() < tol,
            "param {id} [{at}]: autodiff {analytic}, finite differences {numeric}"
        );
    }
}

/// Adds a fixed pseudo-random perturbation to every weight (the zero-initialised head included).
struct Perturb(usize);
impl burn::module::ModuleMapper<A> for Perturb {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<A, D>>) -> Param<Tensor<A, D>> {
        self.0 += 1;
        let seed = self.0;
        param.map(|t| {
            let shape = t.shape();
            let n = shape.num_elements();
            let noise: Vec<f32> = (0..n)
                .map(|i| (((i * 2654435761 + seed * 97) % 1000) as f32 / 1000.0 - 0.5) * 0.2)
                .collect();
            let noise = Tensor::<A, 1>::from_floats(noise.as_slice(), &t.device()).reshape(shape);
            (t + noise).detach().require_grad()
        })
    }
}

/// Mixed precision's gradients on the CPU: bf16 products (on the AMX tiles where the CPU has them,
/// forward and backward alike) give every parameter's gradient within bf16's rounding of f32's.
#[test]
fn bf16_gradients_follow_f32_ones() {
    // Where the CPU has AMX-BF16 (CPUID leaf 7, EDX bits 24 and 22), bf16 must run on the tiles.
    #[cfg(target_arch = "x86_64")]
    {
        let leaf = std::arch::x86_64::__cpuid_count(7, 0);
        let amx = leaf.edx & (1 << 24) != 0 && leaf.edx & (1 << 22) != 0;
        assert_eq!(
            Precision::Bf16.on_amx_tiles::<A>(burn::tensor::DType::F32),
            amx && std::is_x86_feature_detected!("avx512bf16")
        );
    }
    assert!(!Precision::F32.on_amx_tiles::<A>(burn::tensor::DType::F32));

    let data = stripes(6);
    let device = Default::default();
    let gradients = |precision| {
        // A non-zero head, so every layer gets gradient.
        let model = tiny::<A>(5)
            .model
            .map(&mut Perturb(0))
            .with_precision(precision);
        let (inputs, targets) =
            inputs_and_targets::<A>(data.iter().map(Vec::as_slice), 16, &device);
        let grads = target_log_probs(model.forward(inputs), targets)
            .mean()
            .neg()
            .backward();
        struct Collect<'a>(
            &'a <A as burn::tensor::backend::AutodiffBackend>::Gradients,
            Vec<Vec<f32>>,
        );
        impl ModuleVisitor<A> for Collect<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<A, D>>) {
                let grad = param
                    .val()
                    .grad(self.0)
                    .expect("every parameter has a gradient");
                self.1
                    .push(grad.into_data().convert::<f32>().into_vec().unwrap());
            }
        }
        let mut collect = Collect(&grads, Vec::new());
        model.visit(&mut collect);
        collect.1
    };
    let (full, half) = (gradients(Precision::F32), gradients(Precision::Bf16));
    assert_eq!(full.len(), half.len());
    for (i, (f, h)) in full.iter().zip(&half).enumerate() {
        let scale = f.iter().fold(0f32, |m, x| m.max(x.abs()));
        let gap = f.iter().zip(h).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        // bf16 keeps 8 bits: each product's operands are off by up to 2^-9 of themselves. Measured
        // at most 0.9% of the largest entry (a backward product 5% off gave 21%).
        assert!(
            gap <= 0.02 * scale,
            "parameter {i}: bf16 gradient {gap} from f32's (largest {scale})"
        );
    }
    assert_ne!(full, half, "bf16 should round its products");
}

/// Moves one entry of one parameter by `delta`.
struct Nudge {
    id: burn::module::ParamId,
    at: usize,
    delta: f32,
}
impl burn::module::ModuleMapper<A> for Nudge {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<A, D>>) -> Param<Tensor<A, D>> {
        if param.id != self.id {
            return param;
        }
        let (at, delta) = (self.at, self.delta);
        param.map(|t| {
            let shape = t.shape();
            let mut v: Vec<f32> = t.into_data().into_vec().unwrap();
            v[at] += delta;
            Tensor::<A, 1>::from_floats(v.as_slice(), &Default::default()).reshape(shape)
        })
    }
}

/// A checkpoint committed without its optimizer file (a milestone that outlives its machine) resumes:
/// Adam starts afresh at the checkpoint's step and the learning rate ramps back up over the warmup's
/// length (the log says so), to weights near the uninterrupted run's but not equal to them.
#[test]
fn a_checkpoint_without_its_optimizer_resumes_with_fresh_moments() {
    let data = stripes(40);
    let cfg = TrainConfig {
        warmup: 4,
        ..config(12)
    };
    let go = |dir: &Path, start: Start<A>, stop: Option<usize>| {
        train::train(dir, &cfg, start, &data, &[], |e| match e {
            Event::Checkpoint { step } if Some(step) == stop => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        })
        .unwrap()
    };
    let whole = tempfile::tempdir().unwrap();
    let (uninterrupted, _) = go(whole.path(), Start::Model(tiny::<A>(2)), None);

    let split = tempfile::tempdir().unwrap();
    go(split.path(), Start::Model(tiny::<A>(2)), Some(5));
    let optimizer = run::checkpoint_dir(split.path()).join("optimizer.mpk");
    std::fs::remove_file(&optimizer).unwrap();
    let checkpoint = Checkpoint::<A>::load(split.path(), &Default::default()).unwrap();
    assert!(checkpoint.fresh_moments());
    assert_eq!(checkpoint.state.rewarm_from, Some(5));
    let (resumed, state) = go(split.path(), Start::Resume(checkpoint), None);
    assert_eq!(state.step, 12);
    assert_eq!(
        state.rewarm_from,
        Some(5),
        "kept, so a later resume keeps the ramp"
    );

    // The log's learning rates: the schedule's until step 5, a quarter of it at step 6 (the first
    // step from fresh moments), half at 7, three quarters at 8, all of it from 9.
    let log = std::fs::read_to_string(split.path().join("log.csv")).unwrap();
    let rates: Vec<f64> = log
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(rates.len(), 12);
    for (i, rate) in rates.iter().enumerate() {
        let step = i; // row i logs step i + 1, taken at the schedule of step i
        let ramp = if step < 5 {
            1.0
        } else {
            ((step - 5 + 1) as f64 / 4.0).min(1.0)
        };
        let expected = cfg.learning_rate(step) * ramp;
        assert!(
            (rate - expected).abs() <= 1e-6 * expected.abs().max(1e-12),
            "step {}: {rate} against {expected}",
            step + 1
        );
    }
    assert_eq!(cfg.learning_rate_after(8, Some(5)), cfg.learning_rate(8));

    // Fresh moments change the path, not where it goes: the weights differ from the uninterrupted
    // run's, and only a little.
    let (a, b) = (weights(&resumed.model), weights(&uninterrupted.model));
    assert_ne!(a, b);
    let gap = a
        .concat()
        .iter()
        .zip(b.concat())
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(gap < 0.05, "largest weight gap {gap}");
}

#[test]
fn schedule_warms_up_then_decays_to_zero() {
    let c = TrainConfig {
        steps: 100,
        warmup: 10,
        lr: 1.0,
        ..config(100)
    };
    assert!((c.learning_rate(0) - 0.1).abs() < 1e-12);
    assert!((c.learning_rate(9) - 1.0).abs() < 1e-12);
    assert!((c.learning_rate(10) - 1.0).abs() < 1e-12);
    assert!((c.learning_rate(55) - 0.5).abs() < 1e-12);
    assert!(c.learning_rate(100) < 1e-12);
    let rates: Vec<f64> = (10..100).map(|s| c.learning_rate(s)).collect();
    assert!(rates.windows(2).all(|w| w[1] <= w[0]));
}

/// Horizontal (label 0) or vertical (label 1) stripes in varying shades.
fn oriented_stripes(count: usize) -> (Vec<Vec<u16>>, Vec<usize>) {
    (0..count)
        .map(|i| {
            let (a, b, vertical) = ((i % 4) as u16, 8 + (i % 3) as u16, (i / 2) % 2 == 1);
            let seq = (0..64)
                .map(|p| {
                    let line = if vertical { p % 8 } else { p / 8 };
                    if line % 2 == 0 { a } else { b }
                })
                .collect();
            (seq, vertical as usize)
        })
        .unzip()
}

fn finetune_config(steps: usize) -> FinetuneConfig {
    FinetuneConfig {
        batch: 8,
        steps,
        lr: 3e-3,
        warmup: 2,
        grad_clip: 1.0,
        eval_every: 5,
        patience: 3,
        seed: 1,
        precision: Precision::F32,
        flip: false,
        crop: 0,
        classification_only: false,
        devices: Vec::new(),
    }
}

#[test]
fn training_finetuning_and_the_benchmark_share_one_step() {
    // Training's first step is step::step on its first batch (the benchmark calls step::step itself).
    let data = stripes(16);
    let mut start = tiny::<A>(5);
    start.model = start.model.materialised(); // so the clone below holds the same draw
    let copy = start.model.clone();
    let run = tempfile::tempdir().unwrap();
    let (trained, _) = train::train(
        run.path(),
        &config(1),
        Start::Model(start),
        &data,
        &[],
        |_| ControlFlow::Continue(()),
    )
    .unwrap();
    let augment = Augment {
        flip: true,
        crop: 1,
    };
    let (sequences, _) = Batches::new(&data, 8, 3, augment).batch(0, 8).unwrap();
    let batch = Batch::new(&sequences, None, 16, &Default::default());
    let start = store::with_stable_ids(copy);
    let lr = config(1).learning_rate(0);
    let (by_hand, _) = step::step(start, &mut step::adam(), &batch, lr, 1.0);
    assert_eq!(weights(&trained.model), weights(&by_hand));

    // Fine-tuning's first step is step::step with labels (the joint loss).
    let (seqs, labels) = oriented_stripes(16);
    let mut start = tiny::<A>(6);
    start.model = start.model.with_classifier(2).materialised();
    let head_start = store::with_stable_ids(start.model.clone());
    let tuned = finetune::finetune(
        Start::Model(start),
        None,
        (&seqs, &labels),
        (&seqs[..4], &labels[..4]),
        &FinetuneConfig {
            eval_every: 1,
            ..finetune_config(1)
        },
        |_| ControlFlow::Continue(()),
    )
    .unwrap();
    let data = TrainData::InMemory {
        sequences: &seqs,
        labels: Some(&labels),
    };
    let (batch_seqs, batch_labels) = Batches::new(data, 8, 1, Augment::default())
        .batch(0, 8)
        .unwrap();
    let batch_labels = batch_labels.expect("the data is labelled");
    let batch = Batch::new(&batch_seqs, Some(&batch_labels), 16, &Default::default());
    let lr = train::schedule(3e-3, 2, 1, 0);
    let (by_hand, out) = step::step(head_start.clone(), &mut step::adam(), &batch, lr, 1.0);
    assert!(out.losses.classification.is_some());
    assert_eq!(weights(&tuned.stored.model), weights(&by_hand));

    // The from-scratch baseline's objective: L_clf alone, through the same loop and step.
    let mut start = tiny::<A>(6);
    start.model = start.model.with_classifier(2).materialised();
    let tuned_clf = finetune::finetune(
        Start::Model(start),
        None,
        (&seqs, &labels),
        (&seqs[..4], &labels[..4]),
        &FinetuneConfig {
            eval_every: 1,
            classification_only: true,
            ..finetune_config(1)
        },
        |_| ControlFlow::Continue(()),
    )
    .unwrap();
    let mut clf_batch = Batch::new(&batch_seqs, Some(&batch_labels), 16, &Default::default());
    clf_batch.classification_only = true;
    let (clf_by_hand, clf_out) = step::step(head_start, &mut step::adam(), &clf_batch, lr, 1.0);
    let total: f64 = clf_out.losses.total.into_scalar().elem();
    let classification: f64 = clf_out.losses.classification.unwrap().into_scalar().elem();
    assert_eq!(total, classification);
    assert_eq!(weights(&tuned_clf.stored.model), weights(&clf_by_hand));
    assert_ne!(weights(&clf_by_hand), weights(&by_hand));
}

#[test]
fn a_head_goes_on_the_pretrained_weights_or_for_the_baseline_on_fresh_ones() {
    let classes: Vec<String> = ["coat", "shirt", "bag"].map(String::from).into();
    let pretrained = || tiny::<B>(9);
    let body = weights(&pretrained().model);
    let headed = finetune::with_head(pretrained(), classes.clone(), None);
    assert_eq!((headed.model.n_labels(), &headed.labels), (3, &classes));
    // The pretrained weights are kept, and the head adds one tensor, of zeros.
    let kept = weights(&headed.model);
    assert_eq!(kept, weights(&pretrained().model.with_classifier(3)));
    let zeros = |ts: &[Vec<f32>]| ts.iter().filter(|t| t.iter().all(|&v| v == 0.0)).count();
    assert_eq!(
        (kept.len(), zeros(&kept)),
        (body.len() + 1, zeros(&body) + 1)
    );
    // The from-scratch baseline keeps the shape only: the weights of a fresh model of that seed.
    let fresh = finetune::with_head(pretrained(), classes.clone(), Some(4));
    let drawn = store::seeded_init::<B>(&fresh.config, 4, &Default::default());
    assert_eq!(weights(&fresh.model), weights(&drawn.with_classifier(3)));
    assert_ne!(weights(&fresh.model), kept);
}

#[test]
fn finetuning_refuses_labels_its_head_cannot_score() {
    let (seqs, labels) = oriented_stripes(16);
    let headed = || {
        let mut start = tiny::<A>(10);
        start.model = start.model.with_classifier(2);
        start
    };
    let refusal = |start, train_labels: &[usize], val: &[Vec<u16>], val_labels: &[usize]| {
        let result = finetune::finetune(
            Start::Model(start),
            None,
            (&seqs, train_labels),
            (val, val_labels),
            &finetune_config(2),
            |_| ControlFlow::Continue(()),
        );
        result.err().expect("refused").to_string()
    };
    let (val, val_labels) = (&seqs[..4], &labels[..4]);
    let no_head = refusal(tiny::<A>(10), &labels, val, val_labels);
    assert!(no_head.contains("classification head"), "{no_head}");
    let mut wrong = labels.clone();
    wrong[3] = 2;
    let train_wrong = refusal(headed(), &wrong, val, val_labels);
    assert!(
        train_wrong.contains("label 2 is outside the head's 2 classes"),
        "{train_wrong}"
    );
    let val_wrong = refusal(headed(), &labels, val, &wrong[..4]);
    assert!(val_wrong.contains("label 2 is outside"), "{val_wrong}");
    let no_val = refusal(headed(), &labels, &[], &[]);
    assert!(no_val.contains("held-out images"), "{no_val}");
}

/// The tiny model of seed 11 with a fresh head for [`oriented_stripes`]' two labels.
fn stripe_classifier() -> StoredModel<A> {
    let mut start = tiny::<A>(11);
    start.model = start.model.with_classifier(2);
    start.labels = vec!["horizontal".into(), "vertical".into()];
    start
}

/// A fine-tuning with a run folder, stopped at a checkpoint and resumed, ends with the weights, the
/// best check and the step count of one never stopped, and of one with no run folder.
#[test]
fn a_stopped_finetuning_resumes_to_the_uninterrupted_weights_and_best() {
    let (seqs, labels) = oriented_stripes(48);
    let (fit, held_out) = ((&seqs[..40], &labels[..40]), (&seqs[40..], &labels[40..]));
    let config = FinetuneConfig {
        patience: 100,
        ..finetune_config(20)
    };
    let go = |start, run: Option<&Path>, stop_at: usize| {
        finetune::finetune(start, run, fit, held_out, &config, |event| match event {
            FinetuneEvent::Checkpoint { step } if step == stop_at => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        })
        .unwrap()
    };
    let plain = go(Start::Model(stripe_classifier()), None, 0);
    let whole = tempfile::tempdir().unwrap();
    let uninterrupted = go(Start::Model(stripe_classifier()), Some(whole.path()), 0);
    let split = tempfile::tempdir().unwrap();
    let stopped = go(Start::Model(stripe_classifier()), Some(split.path()), 10);
    assert_eq!(stopped.steps, 10);
    let checkpoint = Checkpoint::<A>::load(split.path(), &Default::default()).unwrap();
    assert_eq!(checkpoint.state.step, 10);
    assert!(
        checkpoint.state.best.is_some(),
        "the checks so far are kept"
    );
    let resumed = go(Start::Resume(checkpoint), Some(split.path()), 0);
    for (name, run) in [("uninterrupted", &uninterrupted), ("resumed", &resumed)] {
        assert_eq!(
            weights(&run.stored.model),
            weights(&plain.stored.model),
            "{name}"
        );
        assert_eq!(
            (run.best_step, run.best_val_accuracy, run.steps),
            (plain.best_step, plain.best_val_accuracy, plain.steps),
            "{name}"
        );
    }
    // The best weights are the run folder's `best/`, with the state of their step.
    let best = store::load_dir::<B>(&run::best_dir(split.path()), &Default::default()).unwrap();
    assert_eq!(weights(&best.model), weights(&plain.stored.model.valid()));
}

/// Fine-tuning on two replicas (`--devices 0,1`) follows one device with the same batch: the
/// classification loss is a mean over the batch's images as the generative one is, so the shards'
/// weighted gradients sum to one device's, up to f32 rounding.
#[cfg(feature = "collective")]
#[test]
fn a_finetuning_on_two_replicas_follows_one_device() {
    let (seqs, labels) = oriented_stripes(48);
    let (fit, held_out) = ((&seqs[..40], &labels[..40]), (&seqs[40..], &labels[40..]));
    let initial = weights(&stripe_classifier().model);
    let go = |devices: &[u16]| {
        let config = FinetuneConfig {
            devices: devices.to_vec(),
            patience: 100,
            ..finetune_config(20)
        };
        let run = finetune::finetune(
            Start::Model(stripe_classifier()),
            None,
            fit,
            held_out,
            &config,
            |_| ControlFlow::Continue(()),
        );
        run.unwrap()
    };
    let (one, two) = (go(&[]), go(&[0, 1]));
    assert_eq!((one.steps, one.best_step), (two.steps, two.best_step));
    let (one, two) = (weights(&one.stored.model), weights(&two.stored.model));
    let gap = common::weight_gap(&one, &two);
    eprintln!("fine-tuned on 2 replicas: weights within {gap:.1e} of one device's (relative)");
    assert!(
        gap < 1e-4,
        "weights differ by {gap:e} (relative to the largest)"
    );
    // The weights moved: the runs did train.
    assert!(common::weight_gap(&initial, &one) > 1e-3);
}

#[test]
fn a_finetuned_model_classifies_saves_and_loads_identically() {
    let (seqs, labels) = oriented_stripes(96);
    let train_part = 80; // and 16 held out
    let mut start = tiny::<A>(7);
    start.model = start.model.with_classifier(2);
    start.labels = vec!["horizontal".into(), "vertical".into()];
    let tuned = finetune::finetune(
        Start::Model(start),
        None,
        (&seqs[..train_part], &labels[..train_part]),
        (&seqs[train_part..], &labels[train_part..]),
        &finetune_config(60),
        |_| ControlFlow::Continue(()),
    )
    .unwrap();
    assert!(
        tuned.best_val_accuracy >= 0.9,
        "held-out accuracy {} on an easy task",
        tuned.best_val_accuracy
    );
    let model = tuned.stored.model.valid();
    let held_out = (&seqs[train_part..], &labels[train_part..]);
    let scores = classify::score(&model, held_out.0, held_out.1, 8, |_| {}).unwrap();
    assert_eq!(scores.accuracy, tuned.best_val_accuracy);

    // What is written scores as what was fitted.
    let dir = tempfile::tempdir().unwrap();
    let mut scored = 0;
    let written = tuned
        .save_and_score(dir.path(), WeightPrecision::F32, held_out, |n| scored += n)
        .unwrap();
    assert_eq!((written.accuracy, scored), (scores.accuracy, 16));
    let loaded = store::load_dir::<B>(dir.path(), &Default::default()).unwrap();
    assert_eq!(loaded.labels, ["horizontal", "vertical"]);
    assert_eq!(loaded.model.n_labels(), 2);
    // The same labels, and probabilities equal up to float rounding (the reloaded head is stored
    // transposed, as HF's, so its products round differently).
    let probabilities = |m: &ImageGpt<B>| classify::class_probabilities(m, &seqs, 5).unwrap();
    let (before, after) = (probabilities(&model), probabilities(&loaded.model));
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b[1] > b[0], a[1] > a[0]);
        assert!(
            b.iter().zip(a).all(|(x, y)| (x - y).abs() < 1e-6),
            "{b:?} vs {a:?}"
        );
    }
    // It still generates: the same next-colour logits.
    let device = Default::default();
    let (inputs, _) = inputs_and_targets::<B>(seqs[..3].iter().map(Vec::as_slice), 16, &device);
    let logits = |m: &ImageGpt<B>| {
        m.forward(inputs.clone())
            .into_data()
            .into_vec::<f32>()
            .unwrap()
    };
    let (before, after) = (logits(&model), logits(&loaded.model));
    assert!(before.iter().zip(&after).all(|(x, y)| (x - y).abs() < 1e-5));

    // Which pixels moved the label: the positions' shares add up to the logits, exactly as the
    // head's mean over positions does, and give the same probabilities as classifying does.
    let classified = classify::class_probabilities(&model, &seqs[..6], 6).unwrap();
    for (seq, p) in seqs.iter().zip(&classified) {
        let explained = explain::Explanation::new(&model, seq, 8).unwrap();
        assert_eq!(explained.pixel_shares.len(), seq.len());
        assert!(
            explained
                .probabilities
                .iter()
                .zip(p)
                .all(|(x, y)| (x - y).abs() < 1e-5)
        );
        assert_eq!(explained.class, usize::from(p[1] > p[0]));
        let gap = explained.logits[explained.class] - explained.logits.iter().sum::<f32>() / 2.0;
        let shared = explained.pixel_shares.iter().sum::<f32>() + explained.start_share;
        assert!((gap - shared).abs() < 1e-4, "{gap} vs {shared}");
        assert!(gap > 0.0 && explained.pixel_shares.iter().any(|&s| s != 0.0));
        assert_eq!(
            explained.pixel_shares.last(),
            Some(&0.0),
            "no state sees the last pixel"
        );
    }

    // HF's config fields for ImageGPTForImageClassification.
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["num_labels"], 2);
    assert_eq!(config["id2label"]["1"], "vertical");
    assert_eq!(config["label2id"]["horizontal"], 0);

    // A model without a head refuses to classify rather than guess.
    let plain = tiny::<B>(8).model;
    assert!(classify::class_probabilities(&plain, &seqs[..2], 2).is_err());
    assert!(explain::Explanation::new(&plain, &seqs[0], 8).is_err());
}
