//! Linear probes (the paper's §3.2 protocol): multinomial logistic regression on standardised
//! features, fitted by L-BFGS to convergence, with the L2 strength chosen on a held-out slice of the
//! training set. The test set is scored once, by the chosen model, and never used to choose anything.

use linfa::prelude::*;
use linfa_logistic::MultiLogisticRegression;
use ndarray::{Array1, Array2};
use rand::seq::SliceRandom;
use rand::{SeedableRng, rngs::ChaCha8Rng};
use sha2::{Digest, Sha256};

use crate::analysis::features::Features;
use crate::data::Dataset as Images;
use crate::error::{Error, Result};
use crate::pixels::palette::Tokenizer;
// The report is what a card records (and the page reads), so its types live with the card.
pub use crate::store::{ConcatProbe, LayerResult, ProbeReport};

/// Labelled feature rows: `features` holds `labels.len()` rows of `dim` values.
#[derive(Clone, Copy)]
pub struct Labelled<'a> {
    pub features: &'a [f32],
    pub labels: &'a [usize],
    pub dim: usize,
}

impl<'a> Labelled<'a> {
    pub fn new(features: &'a [f32], labels: &'a [usize], dim: usize) -> Result<Self> {
        if dim == 0 || features.len() != labels.len() * dim {
            return Err(Error::invalid(format!(
                "{} feature values do not make {} rows of {dim}",
                features.len(),
                labels.len()
            )));
        }
        Ok(Self {
            features,
            labels,
            dim,
        })
    }

    fn row(&self, i: usize) -> &'a [f32] {
        &self.features[i * self.dim..(i + 1) * self.dim]
    }
}

/// How a probe is fitted.
#[derive(Clone, Debug)]
pub struct ProbeConfig {
    /// L2 strengths tried, per training image (the penalty is `l2 · n · ‖W‖² / 2` on the summed loss).
    pub l2_grid: Vec<f64>,
    /// The share of the training images held out to choose the L2 strength.
    pub val_fraction: f64,
    /// L-BFGS iterations at most per fit.
    pub max_iterations: u64,
    /// Converged when the gradient of the mean loss is this small (scikit-learn's `tol` is 1e-4).
    pub gradient_tolerance: f64,
    /// Picks the held-out images.
    pub seed: u64,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            l2_grid: vec![1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1],
            val_fraction: 0.1,
            max_iterations: 500,
            gradient_tolerance: 1e-5,
            seed: 0,
        }
    }
}

/// What a probe measured.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProbeResult {
    /// Share of test images classified correctly by the probe refitted on all training images.
    pub accuracy: f64,
    /// The chosen L2 strength's accuracy on the held-out slice of train.
    pub val_accuracy: f64,
    /// The chosen L2 strength.
    pub l2: f64,
}

/// A digest of everything [`probe`]'s result depends on: the features, the labels and the fitting
/// settings. The fit is deterministic, so a result can be kept under it: the random-init twin's and
/// raw pixels' probes are the same for every milestone of a run.
pub fn fingerprint(train: Labelled, test: Labelled, config: &ProbeConfig) -> String {
    let mut digest = Sha256::new();
    digest.update(format!("igpt probe v1 {config:?}\0").as_bytes());
    for set in [train, test] {
        digest.update((set.dim as u64).to_le_bytes());
        let values = set.features.iter().flat_map(|v| v.to_le_bytes());
        digest.update(values.collect::<Vec<u8>>());
        let labels = set.labels.iter().flat_map(|&l| (l as u64).to_le_bytes());
        digest.update(labels.collect::<Vec<u8>>());
    }
    digest.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Fits a probe on `train` and scores it on `test`.
pub fn probe(train: Labelled, test: Labelled, config: &ProbeConfig) -> Result<ProbeResult> {
    if train.dim != test.dim {
        return Err(Error::invalid(format!(
            "train rows have {} features, test rows {}",
            train.dim, test.dim
        )));
    }
    if config.l2_grid.is_empty() || !(0.0..1.0).contains(&config.val_fraction) {
        return Err(Error::invalid(
            "a probe needs L2 strengths to try and a held-out fraction below 1",
        ));
    }
    let n = train.labels.len();
    if n < 2 || test.labels.is_empty() {
        return Err(Error::invalid(
            "a probe needs at least 2 training images and 1 test image",
        ));
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(config.seed));
    let held = ((n as f64 * config.val_fraction).round() as usize).clamp(1, n - 1);
    let (fit_rows, val_rows) = order.split_at(n - held);

    // Strongest penalty first, each fit starting where the last one ended (a warm start): the
    // weakly penalised fits, which take the most iterations from zero, begin near their optimum.
    let mut grid = config.l2_grid.clone();
    grid.sort_by(|a, b| b.total_cmp(a));
    let mut best: Option<(f64, f64, Array2<f64>)> = None; // (val accuracy, l2, weights)
    let mut start = None;
    let scaler = Standardiser::fit(train, fit_rows);
    for &l2 in &grid {
        let model = fit(train, fit_rows, &scaler, l2, start.take(), config)?;
        let accuracy = score(&model, train, val_rows, &scaler);
        let weights = weights(&model);
        if best.as_ref().is_none_or(|(a, ..)| accuracy > *a) {
            best = Some((accuracy, l2, weights.clone()));
        }
        start = Some(weights);
    }
    let (val_accuracy, l2, weights) = best.expect("the grid is not empty");
    let all: Vec<usize> = (0..n).collect();
    let scaler = Standardiser::fit(train, &all);
    let model = fit(train, &all, &scaler, l2, Some(weights), config)?;
    let test_rows: Vec<usize> = (0..test.labels.len()).collect();
    Ok(ProbeResult {
        accuracy: score(&model, test, &test_rows, &scaler),
        val_accuracy,
        l2,
    })
}

type Fitted = linfa_logistic::MultiFittedLogisticRegression<f64, usize>;

fn fit(
    data: Labelled,
    rows: &[usize],
    scaler: &Standardiser,
    l2: f64,
    start: Option<Array2<f64>>,
    config: &ProbeConfig,
) -> Result<Fitted> {
    let x = scaler.matrix(data, rows);
    let y = Array1::from_iter(rows.iter().map(|&i| data.labels[i]));
    let n = rows.len() as f64;
    let mut regression = MultiLogisticRegression::default()
        .alpha(l2 * n)
        .max_iterations(config.max_iterations)
        // The loss is summed over images: stop once the mean gradient is this small.
        .gradient_tolerance(config.gradient_tolerance * n);
    // A start from another fit applies only when it has the same classes (a held-out slice may
    // lack one that the whole training set has).
    if let Some(start) = start.filter(|w| w.ncols() == distinct(&y)) {
        regression = regression.initial_params(start);
    }
    regression
        .fit(&Dataset::new(x, y))
        .map_err(|e| Error::invalid(format!("the probe did not fit: {e}")))
}

/// A fit's weights with its intercepts as the last row: the layout linfa starts a fit from.
fn weights(model: &Fitted) -> Array2<f64> {
    let mut w = model.params().clone();
    w.push_row(model.intercept().view())
        .expect("one intercept per class");
    w
}

fn distinct(labels: &Array1<usize>) -> usize {
    labels
        .iter()
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

fn score(model: &Fitted, data: Labelled, rows: &[usize], scaler: &Standardiser) -> f64 {
    if rows.is_empty() {
        return 0.0;
    }
    let predicted = model.predict(&scaler.matrix(data, rows));
    let right = rows
        .iter()
        .zip(predicted.iter())
        .filter(|&(&i, &p)| data.labels[i] == p)
        .count();
    right as f64 / rows.len() as f64
}

/// Per-feature mean and standard deviation of the rows a probe is fitted on.
struct Standardiser {
    mean: Vec<f64>,
    inv_std: Vec<f64>,
}

impl Standardiser {
    fn fit(data: Labelled, rows: &[usize]) -> Self {
        let n = rows.len().max(1) as f64;
        let mut mean = vec![0.0; data.dim];
        let mut square = vec![0.0; data.dim];
        for &i in rows {
            for (j, &v) in data.row(i).iter().enumerate() {
                mean[j] += v as f64;
                square[j] += (v as f64) * (v as f64);
            }
        }
        let inv_std = mean
            .iter_mut()
            .zip(&square)
            .map(|(m, s)| {
                *m /= n;
                let std = (s / n - *m * *m).max(0.0).sqrt();
                // A constant feature (a border pixel that is always black) carries nothing.
                if std > 1e-12 { 1.0 / std } else { 0.0 }
            })
            .collect();
        Self { mean, inv_std }
    }

    fn matrix(&self, data: Labelled, rows: &[usize]) -> Array2<f64> {
        Array2::from_shape_fn((rows.len(), data.dim), |(r, j)| {
            (data.row(rows[r])[j] as f64 - self.mean[j]) * self.inv_std[j]
        })
    }
}

impl ProbeReport {
    /// The report of probes on a model's `layers`, the same net with random weights
    /// (`random_layers`, the same layers) and the raw pixels; the best layer of each is chosen on the
    /// held-out slice of train, never on test. `train` and `test` are (spec, images).
    pub fn new(
        layers: &[LayerResult],
        random_layers: &[LayerResult],
        raw_pixels: LayerResult,
        (train_data, train_images): (&str, usize),
        (test_data, test_images): (&str, usize),
    ) -> Self {
        let best = best_by_validation(layers);
        Self {
            layers: layers.to_vec(),
            best_layer: best.layer,
            best_accuracy: best.accuracy,
            raw_pixels: raw_pixels.accuracy,
            random_init_best: best_by_validation(random_layers).accuracy,
            random_init_layers: random_layers.to_vec(),
            train_images,
            test_images,
            train_data: train_data.to_string(),
            test_data: test_data.to_string(),
            masks: None,
            concat: None,
        }
    }
}

/// `size` consecutive layers of `0..depth` centred on `center` (shifted inward at either end; all of
/// them when `size` reaches `depth`).
pub fn concat_window(center: usize, size: usize, depth: usize) -> Vec<usize> {
    let size = size.clamp(1, depth);
    let start = center.saturating_sub(size / 2).min(depth - size);
    (start..start + size).collect()
}

/// The raw-pixel baseline's "features": every pixel value of the image as the model sees it (its size
/// and channels), before the palette.
pub fn raw_pixels(data: &Images, tokenizer: &Tokenizer) -> Features {
    let (w, h, c) = (tokenizer.width, tokenizer.height, tokenizer.channels());
    let values = data
        .images
        .iter()
        .flat_map(|im| im.with_channels(c).resized(w, h).pixels)
        .map(f32::from)
        .collect();
    Features {
        layers: vec![values],
        count: data.len(),
        width: w * h * c,
    }
}

/// A probe's result as the report's row for `layer`.
pub fn layer_result(layer: usize, r: ProbeResult) -> LayerResult {
    LayerResult {
        layer,
        accuracy: r.accuracy,
        val_accuracy: r.val_accuracy,
        l2: r.l2,
    }
}

/// The layer whose probe scored best on the held-out slice (the earlier layer on a tie).
pub(crate) fn best_by_validation(layers: &[LayerResult]) -> LayerResult {
    *layers
        .iter()
        .reduce(|a, b| {
            if b.val_accuracy > a.val_accuracy {
                b
            } else {
                a
            }
        })
        .expect("at least one layer is probed")
}
