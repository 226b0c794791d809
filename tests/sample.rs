//! Sampling: cached decoding draws exactly what the naive re-forward draws, greedy limits behave,
//! sampled frequencies follow the model's (filtered) softmax, and a seed fixes the images whatever the
//! batch and wherever a generation is resumed.

mod common;

use burn::tensor::activation::softmax;
use burn::tensor::{Int, Tensor, TensorData};
use common::{B, fixture_dir};
use igpt::sample::{Decoding, Generation, SamplingConfig, SamplingNoise, generate};
use igpt::{ImageGpt, store};

fn model() -> ImageGpt<B> {
    store::load_dir::<B>(&fixture_dir(), &Default::default())
        .unwrap()
        .model
}

fn run(
    model: &ImageGpt<B>,
    prefixes: Vec<Vec<u16>>,
    config: SamplingConfig,
    decoding: Decoding,
    seed: u64,
) -> Vec<Vec<u16>> {
    let mut g = Generation::new(model, prefixes, config, decoding, seed).unwrap();
    while !g.is_done() {
        g.step(model);
        if g.drawn().is_multiple_of(8) {
            g.read_back().unwrap();
        }
    }
    g.read_back().unwrap();
    g.into_sequences()
}

/// Greedy decoding by repeated full forwards and a host-side argmax: the plainest reference.
fn reference_greedy(model: &ImageGpt<B>, prefix: &[u16]) -> Vec<u16> {
    let k = model.n_colors() as i64;
    let mut seq: Vec<i64> = std::iter::once(k)
        .chain(prefix.iter().map(|&v| v as i64))
        .collect();
    while seq.len() <= model.n_positions() {
        let n = seq.len();
        let ids = Tensor::<B, 2, Int>::from_data(
            TensorData::new(seq.clone(), [1, n]),
            &Default::default(),
        );
        let logits: Vec<f32> = model.forward(ids).into_data().into_vec().unwrap();
        let last = &logits[(n - 1) * k as usize..];
        let best = (0..k as usize)
            .max_by(|&a, &b| last[a].total_cmp(&last[b]))
            .unwrap();
        seq.push(best as i64);
    }
    seq[1..].iter().map(|&v| v as u16).collect()
}

#[test]
fn cached_and_reforward_decoding_draw_the_same_tokens() {
    let model = model();
    let prefixes = vec![vec![], vec![], vec![]];
    for config in [
        SamplingConfig::greedy(),
        SamplingConfig::default(),
        SamplingConfig {
            temperature: 0.8,
            top_k: Some(5),
            top_p: Some(0.9),
        },
    ] {
        let cached = run(
            &model,
            prefixes.clone(),
            config.clone(),
            Decoding::Cached,
            7,
        );
        let naive = run(
            &model,
            prefixes.clone(),
            config.clone(),
            Decoding::Reforward,
            7,
        );
        assert_eq!(cached, naive, "{config:?}");
        assert!(cached.iter().all(|s| s.len() == 64));
    }
}

#[test]
fn greedy_matches_a_host_side_argmax_and_top_k_1_and_cold_temperature() {
    let model = model();
    let prefix: Vec<u16> = vec![3, 1, 4, 1, 5, 9, 2, 6];
    let want = reference_greedy(&model, &prefix);
    let greedy = run(
        &model,
        vec![prefix.clone()],
        SamplingConfig::greedy(),
        Decoding::Cached,
        1,
    );
    assert_eq!(greedy[0], want);
    let top1 = SamplingConfig {
        top_k: Some(1),
        ..Default::default()
    };
    assert_eq!(
        run(&model, vec![prefix.clone()], top1, Decoding::Cached, 2)[0],
        want
    );
    let cold = SamplingConfig {
        temperature: 1e-4,
        ..Default::default()
    };
    assert_eq!(
        run(&model, vec![prefix.clone()], cold, Decoding::Cached, 3)[0],
        want
    );
    assert_eq!(&greedy[0][..8], &prefix[..], "the prefix is kept as given");
}

#[test]
fn same_seed_same_images_other_seed_other_images() {
    let model = model();
    let a = generate(
        &model,
        vec![vec![]; 4],
        SamplingConfig::default(),
        11,
        8,
        |_, _| {},
    )
    .unwrap();
    let b = generate(
        &model,
        vec![vec![]; 4],
        SamplingConfig::default(),
        11,
        16,
        |_, _| {},
    )
    .unwrap();
    let c = generate(
        &model,
        vec![vec![]; 4],
        SamplingConfig::default(),
        12,
        8,
        |_, _| {},
    )
    .unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
}

/// The noise is keyed by (seed, image, position): an image is the same drawn alone or in a batch, and
/// a generation started again from any of its own prefixes (as the page does after a lost GPU)
/// finishes with the same tokens.
#[test]
fn a_seeded_image_is_the_same_alone_in_a_batch_and_resumed() {
    let model = model();
    let config = SamplingConfig::default();
    let batch = run(
        &model,
        vec![vec![]; 3],
        config.clone(),
        Decoding::Cached,
        21,
    );
    let alone = run(&model, vec![vec![]], config.clone(), Decoding::Cached, 21);
    assert_eq!(alone[0], batch[0]);
    assert_ne!(
        batch[0], batch[1],
        "images of one batch draw different noise"
    );
    for cut in [1, 17, 40, 63] {
        let prefixes = batch.iter().map(|s| s[..cut].to_vec()).collect();
        let resumed = run(&model, prefixes, config.clone(), Decoding::Cached, 21);
        assert_eq!(resumed, batch, "resumed after {cut} tokens");
    }
}

/// The noise is standard Gumbel: its mean is the Euler–Mascheroni constant and its variance π²/6.
#[test]
fn sampling_noise_is_standard_gumbel() {
    let values: Vec<f32> = SamplingNoise::new(9)
        .gumbel::<B>(0..64, 3, 1000, &Default::default())
        .into_data()
        .into_vec()
        .unwrap();
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
    let variance = values
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    let (euler, pi2_6) = (0.577_215_66, std::f64::consts::PI.powi(2) / 6.0);
    // Standard errors at n = 64,000: about 0.005 for the mean and 0.02 for the variance.
    assert!((mean - euler).abs() < 0.03, "mean {mean}");
    assert!((variance - pi2_6).abs() < 0.1, "variance {variance}");
    assert!(values.iter().all(|v| v.is_finite()));
}

/// The model's logits for the first pixel, given only SOS, sharpened (x4) so some colours are rare.
fn first_pixel_logits() -> Tensor<B, 2> {
    let sos =
        Tensor::<B, 2, Int>::from_data(TensorData::new(vec![16i64], [1, 1]), &Default::default());
    model().forward(sos).reshape([1, 16]) * 4.0
}

/// Frequencies of `n` draws from one row of logits.
fn frequencies(logits: &Tensor<B, 2>, config: &SamplingConfig, n: usize) -> Vec<f64> {
    let k = logits.dims()[1];
    let drawn: Vec<i64> = config
        .draw(
            logits.clone().expand([n, k]),
            &SamplingNoise::new(5),
            0..n,
            0,
        )
        .into_data()
        .convert::<i64>()
        .into_vec()
        .unwrap();
    let mut counts = vec![0f64; k];
    for id in drawn {
        counts[id as usize] += 1.0;
    }
    counts.iter().map(|c| c / n as f64).collect()
}

#[test]
fn sampled_frequencies_follow_the_softmax() {
    let logits = first_pixel_logits();
    let n = 40_000;
    for temperature in [1.0f32, 2.0] {
        let probs: Vec<f32> = softmax(logits.clone() / temperature, 1)
            .into_data()
            .into_vec()
            .unwrap();
        let config = SamplingConfig {
            temperature,
            ..Default::default()
        };
        let freq = frequencies(&logits, &config, n);
        for (i, (f, p)) in freq.iter().zip(&probs).enumerate() {
            // 5 standard errors of a binomial proportion.
            let tol = 5.0 * ((*p as f64) * (1.0 - *p as f64) / n as f64).sqrt() + 1e-3;
            assert!(
                (f - *p as f64).abs() < tol,
                "T={temperature} colour {i}: {f} vs {p}"
            );
        }
    }

    // Filters: only the allowed colours appear, in their renormalised proportions.
    let probs: Vec<f32> = softmax(logits.clone(), 1).into_data().into_vec().unwrap();
    let mut order: Vec<usize> = (0..16).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    let top_p = 0.6f32;
    let nucleus = 1 + order
        .iter()
        .scan(0.0f32, |acc, &i| {
            *acc += probs[i];
            Some(*acc)
        })
        .position(|c| c >= top_p)
        .unwrap();
    for (config, kept) in [
        (
            SamplingConfig {
                top_k: Some(3),
                ..Default::default()
            },
            3,
        ),
        (
            SamplingConfig {
                top_p: Some(top_p),
                ..Default::default()
            },
            nucleus,
        ),
    ] {
        let freq = frequencies(&logits, &config, n);
        let mass: f32 = order[..kept].iter().map(|&i| probs[i]).sum();
        for (rank, &i) in order.iter().enumerate() {
            if rank < kept {
                let p = (probs[i] / mass) as f64;
                let tol = 5.0 * (p * (1.0 - p) / n as f64).sqrt() + 1e-3;
                assert!(
                    (freq[i] - p).abs() < tol,
                    "{config:?} colour {i}: {} vs {p}",
                    freq[i]
                );
            } else {
                assert_eq!(freq[i], 0.0, "{config:?} drew filtered colour {i}");
            }
        }
    }
}

/// What the inspector shows (`SamplingConfig::probabilities`) is what `draw` draws: for each setting,
/// the frequencies of many draws match it, a colour it gives 0 is never drawn, and greedy is the
/// argmax alone.
#[test]
fn probabilities_are_what_draw_draws() {
    let logits = first_pixel_logits();
    let n = 40_000;
    let settings = [
        SamplingConfig::zero_as_off(1.0, 0, 0.0),
        SamplingConfig::zero_as_off(2.0, 0, 0.0),
        SamplingConfig::zero_as_off(0.7, 3, 0.0),
        SamplingConfig::zero_as_off(1.0, 0, 0.6),
        SamplingConfig::greedy(),
    ];
    for config in settings {
        let probs: Vec<f32> = config
            .probabilities(logits.clone())
            .into_data()
            .into_vec()
            .unwrap();
        let total: f32 = probs.iter().sum();
        assert!(
            (total - 1.0).abs() < 1e-5,
            "{config:?}: they sum to {total}"
        );
        let freq = frequencies(&logits, &config, n);
        for (i, (f, p)) in freq.iter().zip(&probs).enumerate() {
            let p = *p as f64;
            if p == 0.0 {
                assert_eq!(*f, 0.0, "{config:?}: colour {i} has p 0 and was drawn");
                continue;
            }
            let tol = 5.0 * (p * (1.0 - p) / n as f64).sqrt() + 1e-3;
            assert!(
                (f - p).abs() < tol,
                "{config:?} colour {i}: drawn {f}, shown {p}"
            );
        }
    }
    let greedy: Vec<f32> = SamplingConfig::greedy()
        .probabilities(logits.clone())
        .into_data()
        .into_vec()
        .unwrap();
    let argmax = logits
        .argmax(1)
        .into_data()
        .convert::<i64>()
        .into_vec::<i64>()
        .unwrap()[0];
    assert_eq!(greedy.iter().filter(|&&p| p == 1.0).count(), 1);
    assert_eq!(greedy[argmax as usize], 1.0);
}

#[test]
fn bad_settings_are_refused() {
    let model = model();
    let bad = [
        SamplingConfig {
            temperature: -1.0,
            ..Default::default()
        },
        SamplingConfig {
            top_k: Some(0),
            ..Default::default()
        },
        SamplingConfig {
            top_k: Some(17),
            ..Default::default()
        },
        SamplingConfig {
            top_p: Some(1.5),
            ..Default::default()
        },
    ];
    for config in bad {
        assert!(Generation::new(&model, vec![vec![]], config, Decoding::Cached, 0).is_err());
    }
    let full = vec![vec![0u16; 64]];
    assert!(Generation::new(&model, full, SamplingConfig::default(), Decoding::Cached, 0).is_err());
    let ragged = vec![vec![0u16; 3], vec![0u16; 4]];
    assert!(
        Generation::new(
            &model,
            ragged,
            SamplingConfig::default(),
            Decoding::Cached,
            0
        )
        .is_err()
    );
}
