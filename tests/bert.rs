//! The BERT objective (issue 30): a BERT model reads every visible pixel and nothing of a hidden one,
//! its loss is the reference's (per image over the hidden pixels, then over images), it trains and
//! resumes exactly, its objective survives saving, evaluation scores it under seeded masks, it
//! inpaints, and what only an autoregressive model can do is refused with a clear error.

mod common;

use std::ops::ControlFlow;

use burn::backend::Autodiff;
use burn::module::{AutodiffModule, Module, ModuleMapper, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use common::{stripes, tiny_model, train_config, weights};
use igpt::ImageGpt;
use igpt::eval::{masked_nll, sequence_nll};
use igpt::inpaint::{FillOrder, Inpainting, inpaint};
use igpt::inspect::masked::masked_surprise;
use igpt::model::ForwardOptions;
use igpt::model::objective::{MaskUse, Objective, bert_mask, mask_tensor};
use igpt::sample::{Decoding, Generation, SamplingConfig};
use igpt::store::{self, StoredModel, WeightPrecision};
use igpt::train::run::{self, Checkpoint};
use igpt::train::step::{self, Batch};
use igpt::train::{self, Event, Start};

type B = burn::backend::Flex;
type A = Autodiff<B>;

/// Steps of the BERT test run: it learns more slowly than the autoregressive one (15% of the
/// pixels give it a loss).
const STEPS: usize = 100;

fn tiny<BB: Backend>(objective: Objective, seed: u64) -> StoredModel<BB> {
    tiny_model(objective, seed)
}

fn bert() -> Objective {
    Objective::bert(0.15).unwrap()
}

/// Adds a fixed pseudo-random perturbation to every weight, so the zero-initialised head speaks.
struct Perturb(usize);
impl<BB: Backend> ModuleMapper<BB> for Perturb {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<BB, D>>) -> Param<Tensor<BB, D>> {
        self.0 += 1;
        let seed = self.0;
        param.map(|t| {
            let shape = t.shape();
            let noise: Vec<f32> = (0..shape.num_elements())
                .map(|i| (((i * 2654435761 + seed * 97) % 1000) as f32 / 1000.0 - 0.5) * 0.4)
                .collect();
            t.clone() + Tensor::<BB, 1>::from_floats(noise.as_slice(), &t.device()).reshape(shape)
        })
    }
}

fn logits(model: &ImageGpt<B>, ids: &[u16], masked: &[bool]) -> Vec<f32> {
    let device = Default::default();
    let ids = Tensor::<B, 2, Int>::from_data(
        TensorData::new(ids.iter().map(|&i| i as i64).collect(), [1, ids.len()]),
        &device,
    );
    let options = ForwardOptions {
        masked: Some(mask_tensor(&[masked.to_vec()], &device)),
        ..Default::default()
    };
    let normed = model.forward_with(ids, options).normed;
    model.logits(normed).into_data().into_vec().unwrap()
}

#[test]
fn a_bert_model_reads_every_visible_pixel_and_nothing_of_a_hidden_one() {
    let model = tiny::<B>(bert(), 1).model.map(&mut Perturb(0));
    let image = stripes(1).remove(0);
    let mut masked = vec![false; 64];
    masked[10] = true;
    let before = logits(&model, &image, &masked);
    let at = |l: &[f32], position: usize| l[position * 16..(position + 1) * 16].to_vec();

    // A hidden pixel's colour changes nothing anywhere: its embedding is zeroed.
    let mut other = image.clone();
    other[10] = (other[10] + 5) % 16;
    assert_eq!(logits(&model, &other, &masked), before);

    // The last pixel's colour reaches the first position: attention is not causal.
    let mut last = image.clone();
    last[63] = (last[63] + 5) % 16;
    assert_ne!(at(&logits(&model, &last, &masked), 0), at(&before, 0));

    // The same weights read as an autoregressive model are causal: the last input moves nothing
    // before it.
    let config = tiny::<B>(Objective::Autoregressive, 1).config;
    let ar = config
        .init::<B>(&Default::default())
        .load_record(model.clone().into_record());
    let no_mask = vec![false; 64];
    assert_eq!(
        at(&logits(&ar, &last, &no_mask), 0),
        at(&logits(&ar, &image, &no_mask), 0)
    );
}

/// L_gen of a BERT batch is OpenAI's: each image's mean NLL over its hidden pixels, then the mean
/// over images (not one mean over every hidden pixel of the batch, which weights images unequally).
#[test]
fn the_bert_loss_averages_each_image_s_hidden_pixels_then_the_images() {
    let model = tiny::<B>(bert(), 2).model.map(&mut Perturb(0));
    let data = stripes(3);
    let masked = bert_mask(0.3, (MaskUse::Training, 0, 0), 0..3, 64);
    let counts: Vec<usize> = masked
        .iter()
        .map(|m| m.iter().filter(|&&h| h).count())
        .collect();
    assert!(
        counts[0] != counts[1] || counts[1] != counts[2],
        "{counts:?}"
    );
    let batch = Batch::<B>::bert(&data, None, &masked, &Default::default());
    let loss: f64 = step::losses(&model, &batch).generative.into_scalar().elem();

    let mut per_image = Vec::new();
    for (image, hidden) in data.iter().zip(&masked) {
        let l = logits(&model, image, hidden);
        let mut total = 0.0;
        for (p, (&id, &h)) in image.iter().zip(hidden).enumerate() {
            if h {
                let row = &l[p * 16..(p + 1) * 16];
                let max = row.iter().copied().fold(f32::MIN, f32::max) as f64;
                let lse = max
                    + row
                        .iter()
                        .map(|&x| (x as f64 - max).exp())
                        .sum::<f64>()
                        .ln();
                total += lse - row[id as usize] as f64;
            }
        }
        per_image.push(total / hidden.iter().filter(|&&h| h).count() as f64);
    }
    let want = per_image.iter().sum::<f64>() / 3.0;
    assert!((loss - want).abs() < 1e-5, "loss {loss}, by hand {want}");
}

#[test]
fn a_bert_run_learns_resumes_exactly_and_keeps_its_objective() {
    let data = stripes(40);
    let whole = tempfile::tempdir().unwrap();
    let mut losses = Vec::new();
    let (uninterrupted, _) = train::train(
        whole.path(),
        &train_config(STEPS),
        Start::Model(tiny::<A>(bert(), 3)),
        &data,
        &data[..8],
        |e| {
            if let Event::Step { generative, .. } = e {
                losses.push(generative);
            }
            ControlFlow::Continue(())
        },
    )
    .unwrap();
    let first = losses[0];
    let last = losses[losses.len() - 3..].iter().sum::<f64>() / 3.0;
    assert!(
        (first - 16f64.ln()).abs() < 0.1,
        "a fresh model starts near uniform: {first}"
    );
    // Guessing a hidden pixel from the colours' frequencies alone scores 1.94 nats on these stripes
    // (half the pixels one of 4 colours, half one of 3): well under that, it reads its neighbours.
    assert!(last < 1.3, "masked loss went from {first} to {last}");

    let split = tempfile::tempdir().unwrap();
    train::train(
        split.path(),
        &train_config(STEPS),
        Start::Model(tiny::<A>(bert(), 3)),
        &data,
        &data[..8],
        |e| match e {
            Event::Checkpoint { step: 10 } => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        },
    )
    .unwrap();
    let checkpoint = Checkpoint::<A>::load(split.path(), &Default::default()).unwrap();
    assert_eq!(checkpoint.stored.config.objective, bert());
    let (resumed, _) = train::train(
        split.path(),
        &train_config(STEPS),
        Start::Resume(checkpoint),
        &data,
        &data[..8],
        |_| ControlFlow::Continue(()),
    )
    .unwrap();
    assert_eq!(weights(&resumed.model), weights(&uninterrupted.model));

    // The objective is written down where the model goes.
    let dir = run::checkpoint_dir(split.path());
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    assert!(config.contains("\"igpt_objective\""), "{config}");
    let reloaded = store::load_dir::<B>(&dir, &Default::default()).unwrap();
    assert_eq!(reloaded.model.objective(), bert());
    assert_eq!(reloaded.card.objective, Some(bert()));
}

/// Evaluation scores the hidden pixels of seeded masks: the same masks every time, more of them
/// with more masks, and an autoregressive model's score is unchanged by any mask count.
#[test]
fn evaluation_scores_a_bert_model_under_seeded_masks() {
    let model = tiny::<B>(bert(), 4).model.map(&mut Perturb(0));
    let data = stripes(12);
    let one = sequence_nll(&model, &data, 5, |_| {}).unwrap();
    assert_eq!(one, masked_nll(&model, &data, 5, 1, |_| {}).unwrap());
    // Batching changes nothing: mask k of image i is keyed by i, not by its place in a batch.
    assert_eq!(one, masked_nll(&model, &data, 3, 1, |_| {}).unwrap());
    assert_eq!(one.masks, Some(1));
    let hidden = one.tokens as f64 / (12.0 * 64.0);
    assert!((0.05..0.3).contains(&hidden), "{hidden} of pixels hidden");
    let four = masked_nll(&model, &data, 5, 4, |_| {}).unwrap();
    assert!(four.tokens > 3 * one.tokens, "{four:?} vs {one:?}");
    assert_ne!(four.bits_per_token, one.bits_per_token);
    assert!(masked_nll(&model, &data, 5, 0, |_| {}).is_err());

    let ar = tiny::<B>(Objective::Autoregressive, 4)
        .model
        .map(&mut Perturb(0));
    let plain = sequence_nll(&ar, &data, 5, |_| {}).unwrap();
    assert_eq!(plain.masks, None);
    assert_eq!(plain.tokens, 12 * 64);
    assert_eq!(masked_nll(&ar, &data, 5, 4, |_| {}).unwrap(), plain);
}

#[test]
fn what_needs_an_autoregressive_model_refuses_a_bert_one() {
    let stored = tiny::<B>(bert(), 5);
    let config = SamplingConfig::default();
    let err = Generation::new(&stored.model, vec![vec![]], config, Decoding::Cached, 0)
        .err()
        .expect("sampling a BERT model is refused");
    assert!(
        err.to_string()
            .contains("sampling needs an autoregressive model"),
        "{err}"
    );
    let err = igpt::inspect::Inspected::trace(&stored.model, &stripes(1)[0], 8)
        .err()
        .expect("the inspector refuses a BERT model");
    assert!(err.to_string().contains("autoregressive"), "{err}");

    // Saving and loading keeps the objective; an autoregressive model's config says nothing of it.
    let dir = tempfile::tempdir().unwrap();
    stored.save_dir(dir.path(), WeightPrecision::F32).unwrap();
    let loaded = store::load_dir::<B>(dir.path(), &Default::default()).unwrap();
    assert_eq!(loaded.config.objective, bert());
    tiny::<B>(Objective::Autoregressive, 5)
        .save_dir(dir.path(), WeightPrecision::F32)
        .unwrap();
    let config = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
    assert!(!config.contains("igpt_objective"), "{config}");
}

/// A hole in the middle of image 0 of the stripes: rows 3 and 4, columns 2 to 5.
fn middle_hole() -> Vec<bool> {
    (0..64)
        .map(|p| (3..5).contains(&(p / 8)) && (2..6).contains(&(p % 8)))
        .collect()
}

#[test]
fn inpainting_fills_the_hole_and_nothing_else_the_same_way_for_a_seed() {
    for order in [FillOrder::Random, FillOrder::Confident] {
        fills_the_hole_and_nothing_else(order);
    }
}

fn fills_the_hole_and_nothing_else(order: FillOrder) {
    let model = tiny::<B>(bert(), 6).model.map(&mut Perturb(0));
    let image = stripes(1).remove(0);
    let hole = middle_hole();
    let run = |count, seed| {
        inpaint(
            &model,
            &image,
            &hole,
            count,
            (SamplingConfig::default(), seed),
            order,
            |_| {},
        )
        .unwrap()
    };
    let three = run(3, 7);
    for filled in &three {
        for (p, (&got, &was)) in filled.iter().zip(&image).enumerate() {
            if !hole[p] {
                assert_eq!(got, was, "pixel {p} outside the hole changed");
            }
        }
    }
    // Keyed noise: image 0 fills the same alone or beside others; another seed fills otherwise.
    assert_eq!(run(1, 7)[0], three[0]);
    assert_ne!(run(3, 8), three);

    // One pass per hidden pixel, each filled once.
    let mut passes = 0;
    let mut fill = Inpainting::new(&model, &image, &hole, 2, SamplingConfig::default(), 7)
        .unwrap()
        .with_order(order);
    while !fill.is_done() {
        fill.step(&model).unwrap();
        passes += 1;
    }
    assert_eq!(passes, 8);
    let mut order = fill.order()[0].clone();
    order.sort_unstable();
    let holes: Vec<usize> = (0..64).filter(|&p| hole[p]).collect();
    assert_eq!(order, holes);
    assert_eq!(fill.images()[..1], three[..1]);
}

/// A BERT model trained on stripes fills a hole in a striped image with the stripes, in either
/// order: the point of the whole path (objective, training, masked passes, filling).
#[test]
fn a_bert_model_trained_on_stripes_fills_a_hole_with_stripes() {
    let data = stripes(40);
    let run = tempfile::tempdir().unwrap();
    let (trained, _) = train::train(
        run.path(),
        &train_config(3 * STEPS),
        Start::Model(tiny::<A>(bert(), 3)),
        &data,
        &[],
        |_| ControlFlow::Continue(()),
    )
    .unwrap();
    let model = trained.model.valid();
    let hole = middle_hole();
    for order in [FillOrder::Random, FillOrder::Confident] {
        let mut right = 0;
        for image in &data[..4] {
            let filled = inpaint(
                &model,
                image,
                &hole,
                1,
                (SamplingConfig::greedy(), 0),
                order,
                |_| {},
            )
            .unwrap()
            .remove(0);
            right += (0..64)
                .filter(|&p| hole[p] && filled[p] == image[p])
                .count();
        }
        // 32 hidden pixels; guessing each image's two colours at random would get about half.
        assert!(
            right >= 30,
            "{order:?}: {right} of 32 hidden pixels restored"
        );
    }

    let ar = tiny::<B>(Objective::Autoregressive, 3).model;
    let err = Inpainting::new(&ar, &data[0], &hole, 1, SamplingConfig::default(), 0)
        .err()
        .expect("an autoregressive model cannot inpaint");
    assert!(err.to_string().contains("needs a BERT model"), "{err}");
}

/// A BERT model's surprise at a pixel is its true colour's bits when hidden: with a masking rate of
/// 1/64 on 64 pixels each of the 64 passes hides exactly one pixel, which the model's logits with
/// that one pixel hidden give by hand.
#[test]
fn masked_surprise_is_each_pixel_s_bits_when_hidden() {
    let objective = Objective::bert(1.0 / 64.0).unwrap();
    let model = tiny::<B>(objective, 7).model.map(&mut Perturb(0));
    let image = stripes(2).remove(1);
    let surprise = masked_surprise(&model, &image, 8, 0).unwrap();
    assert_eq!(surprise.passes, 64);
    for pixel in [0, 17, 63] {
        let mut hidden = vec![false; 64];
        hidden[pixel] = true;
        let l = logits(&model, &image, &hidden);
        let row = &l[pixel * 16..(pixel + 1) * 16];
        let max = row.iter().copied().fold(f32::MIN, f32::max);
        let lse = max + row.iter().map(|&x| (x - max).exp()).sum::<f32>().ln();
        let bits = (lse - row[image[pixel] as usize]) / std::f32::consts::LN_2;
        let got = surprise.bits_per_pixel[pixel];
        assert!((got - bits).abs() < 1e-4, "pixel {pixel}: {got} vs {bits}");
    }
    let mean = surprise.bits_per_pixel.iter().sum::<f32>() as f64 / 64.0;
    assert!((mean - surprise.mean_bits).abs() < 1e-5);
    // At the usual rate, every pixel is still scored once, in round(1 / 0.15) = 7 passes.
    let usual = tiny::<B>(bert(), 7).model.map(&mut Perturb(0));
    let seven = masked_surprise(&usual, &image, 8, 0).unwrap();
    assert_eq!(seven.passes, 7);
    assert!(
        seven
            .bits_per_pixel
            .iter()
            .all(|&b| b > 0.0 && b.is_finite())
    );

    let ar = tiny::<B>(Objective::Autoregressive, 7).model;
    assert!(masked_surprise(&ar, &image, 8, 0).is_err());
    assert!(masked_surprise(&model, &image[..63], 8, 0).is_err());
}
