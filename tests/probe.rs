//! Linear probes: near-perfect on a linearly separable set, near chance when the labels carry nothing.

use igpt::analysis::features::Features;
use igpt::analysis::probe::{
    Labelled, LayerResult, ProbeConfig, ProbeReport, concat_window, probe,
};
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

/// Two layers that each hold half of the label (one bit of four classes): each alone is near 50%,
/// the two end to end near 100%, as the paper's probe of several layers at once can find.
#[test]
fn layers_probed_together_read_what_each_holds_alone() {
    let n = 600;
    let labels = random_labels(n, 7);
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let mut noise = |bit: bool| -> Vec<f32> {
        let sign = if bit { 1.0 } else { -1.0 };
        vec![
            sign + rng.random_range(-0.5..0.5),
            rng.random_range(-1.0..1.0),
        ]
    };
    let (mut low, mut high) = (Vec::new(), Vec::new());
    for &l in &labels {
        low.extend(noise(l & 1 == 1));
        high.extend(noise(l & 2 == 2));
    }
    let features = Features {
        layers: vec![low, high],
        count: n,
        width: 2,
    };
    let split = |values: &[f32], dim: usize, rows: std::ops::Range<usize>| {
        values[rows.start * dim..rows.end * dim].to_vec()
    };
    let accuracy = |values: Vec<f32>, dim: usize| {
        let (train, test) = (split(&values, dim, 0..400), split(&values, dim, 400..n));
        probe(
            Labelled::new(&train, &labels[..400], dim).unwrap(),
            Labelled::new(&test, &labels[400..], dim).unwrap(),
            &ProbeConfig::default(),
        )
        .unwrap()
        .accuracy
    };
    let alone = [0, 1].map(|l| accuracy(features.layers[l].clone(), 2));
    let together = accuracy(features.concatenated(&[0, 1]), 4);
    assert!(alone.iter().all(|&a| a < 0.6), "{alone:?}");
    assert!(together > 0.95, "{together}");
    // Image 1's row: its layer-0 features, then its layer-1 features.
    let rows = features.concatenated(&[0, 1]);
    assert_eq!(
        rows[4..8],
        [features.row(0, 1), features.row(1, 1)].concat()[..]
    );
}

#[test]
fn the_concatenated_layers_centre_on_the_best_one_and_stay_inside_the_model() {
    assert_eq!(concat_window(5, 5, 9), [3, 4, 5, 6, 7]);
    assert_eq!(concat_window(8, 5, 9), [4, 5, 6, 7, 8]);
    assert_eq!(concat_window(0, 3, 9), [0, 1, 2]);
    assert_eq!(concat_window(1, 4, 9), [0, 1, 2, 3]);
    assert_eq!(concat_window(4, 20, 9), (0..9).collect::<Vec<_>>());
}
