//! Training on the CPU backend: gradients agree with finite differences, a few steps lower the loss,
//! a run stopped and resumed ends with exactly the weights of an uninterrupted one, and the schedule.

use std::ops::ControlFlow;

use burn::backend::Autodiff;
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use igpt::eval::{inputs_and_targets, target_log_probs};
use igpt::store::{self, StoredModel};
use igpt::train::{self, Event, TrainConfig};
use igpt::{ImageGpt, ImageGptConfig, ModelCard, Palette, Precision};

type B = burn::backend::Flex;
type A = Autodiff<B>;

/// 8×8 images of horizontal stripes in two shades: easy structure for a tiny model to pick up.
fn stripes(count: usize) -> Vec<Vec<u16>> {
    (0..count)
        .map(|i| {
            let (a, b) = ((i % 4) as u16, 8 + (i % 3) as u16);
            (0..64)
                .map(|p| if (p / 8) % 2 == 0 { a } else { b })
                .collect()
        })
        .collect()
}

fn tiny<BB: Backend>(seed: u64) -> StoredModel<BB> {
    let config = ImageGptConfig::preset("tiny", 16, 64)
        .unwrap()
        .with_n_embd(32);
    let device = Default::default();
    BB::seed(&device, seed);
    StoredModel {
        model: config.init(&device),
        config,
        palette: Palette::new(1, (0..16).map(|i| i as f32 / 7.5 - 1.0).collect()).unwrap(),
        card: ModelCard {
            image_height: 8,
            image_width: 8,
            channels: 1,
            ..Default::default()
        },
    }
}

fn config(steps: usize) -> TrainConfig {
    TrainConfig {
        data: "synthetic:stripes".into(),
        limit: None,
        val: None,
        batch: 8,
        steps,
        lr: 3e-3,
        warmup: 2,
        grad_clip: 1.0,
        flip: true,
        crop: 1,
        seed: 3,
        log_every: 1,
        eval_every: 1000,
        eval_images: 8,
        checkpoint_every: 5,
        precision: Precision::F32,
        init: None,
    }
}

/// Every parameter value, in visiting order.
fn weights<BB: Backend>(model: &ImageGpt<BB>) -> Vec<Vec<f32>> {
    struct Collect(Vec<Vec<f32>>);
    impl<BB: Backend> ModuleVisitor<BB> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<BB, D>>) {
            self.0
                .push(param.val().into_data().convert::<f32>().into_vec().unwrap());
        }
    }
    let mut c = Collect(Vec::new());
    model.visit(&mut c);
    c.0
}

#[test]
fn a_few_steps_lower_the_loss() {
    let data = stripes(64);
    let run = tempfile::tempdir().unwrap();
    let mut losses = Vec::new();
    let (_, state) = train::train(
        run.path(),
        &config(30),
        tiny::<A>(1),
        false,
        &data,
        &data[..8],
        |e| {
            if let Event::Step { loss, .. } = e {
                losses.push(loss);
            }
            ControlFlow::Continue(())
        },
    )
    .unwrap();
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

/// Mixed precision (products in bf16 or f16, f32 weights) learns as f32 does from the same start, and
/// the run records it; the model handed back computes in f32 again.
#[test]
fn mixed_precision_training_follows_f32() {
    let data = stripes(64);
    let losses = |precision| {
        let run = tempfile::tempdir().unwrap();
        let mut losses = Vec::new();
        let (trained, _) = train::train(
            run.path(),
            &TrainConfig {
                precision,
                ..config(30)
            },
            tiny::<A>(4),
            false,
            &data,
            &[],
            |e| {
                if let Event::Step { loss, .. } = e {
                    losses.push(loss);
                }
                ControlFlow::Continue(())
            },
        )
        .unwrap();
        assert_eq!(trained.model.precision(), Precision::F32);
        assert_eq!(train::read_config(run.path()).unwrap().precision, precision);
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
    let whole = tempfile::tempdir().unwrap();
    let (uninterrupted, _) = train::train(
        whole.path(),
        &config(12),
        tiny::<A>(2),
        false,
        &data,
        &[],
        |_| ControlFlow::Continue(()),
    )
    .unwrap();

    let split = tempfile::tempdir().unwrap();
    let (_, stopped) = train::train(
        split.path(),
        &config(12),
        tiny::<A>(2),
        false,
        &data,
        &[],
        |e| match e {
            Event::Checkpoint { step: 5 } => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        },
    )
    .unwrap();
    assert_eq!(stopped.step, 5);
    assert_eq!(train::read_state(split.path()).unwrap().step, 5);
    // A different start model proves the weights come from the checkpoint.
    let (resumed, state) = train::train(
        split.path(),
        &config(12),
        tiny::<A>(99),
        true,
        &data,
        &[],
        |_| ControlFlow::Continue(()),
    )
    .unwrap();
    assert_eq!(state.step, 12);
    assert_eq!(weights(&resumed.model), weights(&uninterrupted.model));

    // The checkpoint is a model directory like any other.
    let reloaded =
        store::load_dir::<B>(&train::checkpoint_dir(split.path()), &Default::default()).unwrap();
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
