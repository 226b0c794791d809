//! Linear probes: near-perfect on a linearly separable set, near chance when the labels carry nothing.

use igpt::analysis::probe::{Labelled, LayerResult, ProbeConfig, ProbeReport, probe};
use rand::{RngExt, SeedableRng, rngs::ChaCha8Rng};

const CLASSES: usize = 4;
const DIM: usize = 12;

/// `n` points drawn uniformly from [-1, 1]^DIM.
fn points(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n * DIM).map(|_| rng.random_range(-1.0..1.0)).collect()
}

/// Labels by a linear rule: which of `CLASSES` random directions (drawn from `rule`) scores highest.
fn linear_labels(x: &[f32], rule: u64) -> Vec<usize> {
    let directions = points(CLASSES, rule);
    x.chunks(DIM)
        .map(|row| {
            let score = |c: usize| -> f32 {
                let w = &directions[c * DIM..(c + 1) * DIM];
                row.iter().zip(w).map(|(a, b)| a * b).sum()
            };
            (0..CLASSES)
                .max_by(|&a, &b| score(a).total_cmp(&score(b)))
                .unwrap()
        })
        .collect()
}

fn random_labels(n: usize, seed: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(0..CLASSES)).collect()
}

#[test]
fn a_linearly_separable_set_is_learned() {
    let (train_x, test_x) = (points(2000, 1), points(500, 2));
    let (train_y, test_y) = (linear_labels(&train_x, 99), linear_labels(&test_x, 99));
    let result = probe(
        Labelled::new(&train_x, &train_y, DIM).unwrap(),
        Labelled::new(&test_x, &test_y, DIM).unwrap(),
        &ProbeConfig::default(),
    )
    .unwrap();
    assert!(result.accuracy >= 0.97, "accuracy {}", result.accuracy);
    assert!(
        result.val_accuracy >= 0.95,
        "held-out {}",
        result.val_accuracy
    );
}

#[test]
fn shuffled_labels_give_chance() {
    let (train_x, test_x) = (points(2000, 3), points(1000, 4));
    let (train_y, test_y) = (random_labels(2000, 5), random_labels(1000, 6));
    let result = probe(
        Labelled::new(&train_x, &train_y, DIM).unwrap(),
        Labelled::new(&test_x, &test_y, DIM).unwrap(),
        &ProbeConfig::default(),
    )
    .unwrap();
    let chance = 1.0 / CLASSES as f64;
    assert!(
        (result.accuracy - chance).abs() < 0.06,
        "accuracy {} is not near chance {chance}",
        result.accuracy
    );
}

#[test]
fn mismatched_rows_are_refused() {
    assert!(Labelled::new(&[0.0; 10], &[0, 1], 4).is_err());
    let x = points(50, 1);
    let y = linear_labels(&x, 99);
    let train = Labelled::new(&x, &y, DIM).unwrap();
    let narrow = Labelled::new(&x[..50 * 6], &y, 6).unwrap();
    assert!(probe(train, narrow, &ProbeConfig::default()).is_err());
}

/// The report's best layer is chosen on the held-out slice of train, never on test: here layer 2 has
/// the best test accuracy and layer 1 the best held-out one, and layer 1 is reported (ties go to the
/// earlier layer, as for the random-weights net's layers 0 and 1).
#[test]
fn the_best_layer_is_chosen_on_held_out_train_not_on_test() {
    let row = |layer, accuracy, val_accuracy| LayerResult {
        layer,
        accuracy,
        val_accuracy,
        l2: 1e-5,
    };
    let layers = [row(0, 0.80, 0.79), row(1, 0.82, 0.84), row(2, 0.90, 0.83)];
    let random = [row(0, 0.70, 0.75), row(1, 0.72, 0.75), row(2, 0.60, 0.70)];
    let report = ProbeReport::new(
        &layers,
        &random,
        row(0, 0.835, 0.83),
        ("fashion-mnist:train", 1000),
        ("fashion-mnist:test", 500),
    );
    assert_eq!((report.best_layer, report.best_accuracy), (1, 0.82));
    assert_eq!(report.random_init_best, 0.70);
    assert_eq!(report.raw_pixels, 0.835);
    assert_eq!(report.layers, layers);
}
