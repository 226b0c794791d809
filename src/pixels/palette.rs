//! The colour palette: k-means centres in [-1, 1] space, and the mapping image <-> tokens (HF semantics).

use rand::{RngExt, SeedableRng, rngs::ChaCha8Rng};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::pixels::raster::Raster;

/// K colour centres, each `channels` values in [-1, 1] (pixel / 127.5 - 1, as HF's processor normalises).
#[derive(Clone, Debug, PartialEq)]
pub struct Palette {
    channels: usize,
    /// Row-major `[K, channels]`.
    centres: Vec<f32>,
}

/// How k-means is run. Defaults fit a 16-grey Fashion-MNIST palette in about a second.
#[derive(Clone, Debug)]
pub struct FitOptions {
    /// Pixels drawn at random (with replacement) from all images to fit on.
    pub sample: usize,
    /// Seed for sampling and k-means++: the same seed and data give the same palette everywhere.
    pub seed: u64,
    /// Lloyd iterations at most (it usually converges long before).
    pub max_iters: usize,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self {
            sample: 200_000,
            seed: 0,
            max_iters: 100,
        }
    }
}

/// HF's `preprocessor_config.json` (only the fields we read; unknown ones are ignored).
#[derive(Serialize, Deserialize)]
struct PreprocessorConfig {
    clusters: Vec<Vec<f32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<ImageSize>,
}

#[derive(Serialize, Deserialize, Clone, Copy)]
struct ImageSize {
    height: usize,
    width: usize,
}

impl Palette {
    /// A palette from `K × channels` centres in [-1, 1].
    pub fn new(channels: usize, centres: Vec<f32>) -> Result<Self> {
        if channels != 1 && channels != 3 {
            return Err(Error::invalid(format!(
                "a palette has 1 or 3 channels, not {channels}"
            )));
        }
        if centres.is_empty() || !centres.len().is_multiple_of(channels) {
            return Err(Error::invalid(format!(
                "{} palette values do not make whole {channels}-channel colours",
                centres.len()
            )));
        }
        if centres.len() / channels > u16::MAX as usize {
            return Err(Error::invalid("a palette has at most 65535 colours"));
        }
        if let Some(bad) = centres.iter().find(|v| !v.is_finite()) {
            return Err(Error::invalid(format!(
                "palette values must be finite, found {bad}"
            )));
        }
        Ok(Self { channels, centres })
    }

    /// Number of colours K.
    pub fn len(&self) -> usize {
        self.centres.len() / self.channels
    }

    pub fn is_empty(&self) -> bool {
        self.centres.is_empty()
    }

    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Centre `i` in [-1, 1].
    pub fn centre(&self, i: usize) -> &[f32] {
        &self.centres[i * self.channels..(i + 1) * self.channels]
    }

    /// Fits K centres with k-means (k-means++ init) on a seeded random sample of the images' pixels.
    pub fn fit(images: &[Raster], k: usize, channels: usize, options: &FitOptions) -> Result<Self> {
        if images.is_empty() {
            return Err(Error::invalid("cannot fit a palette on no images"));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
        let images: Vec<Raster> = images.iter().map(|im| im.with_channels(channels)).collect();
        let total: usize = images.iter().map(|im| im.width * im.height).sum();
        // Cumulative pixel counts let us draw a uniform pixel across images of different sizes.
        let ends: Vec<usize> = images
            .iter()
            .scan(0, |acc, im| {
                *acc += im.width * im.height;
                Some(*acc)
            })
            .collect();
        let n = options.sample.max(k);
        // k-means on the sample's distinct colours weighted by their counts: the same objective as on
        // the sample itself, at the cost of the distinct colours only (a 512-colour palette in seconds).
        let mut counts: std::collections::HashMap<u32, f64> = std::collections::HashMap::new();
        for _ in 0..n {
            let p = rng.random_range(0..total);
            let i = ends.partition_point(|&end| end <= p);
            let start = if i == 0 { 0 } else { ends[i - 1] };
            let px = &images[i].pixels[(p - start) * channels..(p - start + 1) * channels];
            let key = px.iter().fold(0u32, |key, &v| key << 8 | v as u32);
            *counts.entry(key).or_default() += 1.0;
        }
        let mut distinct: Vec<(u32, f64)> = counts.into_iter().collect();
        distinct.sort_unstable_by_key(|&(key, _)| key); // a fixed order, so the seed fixes the result
        let points: Vec<f32> = distinct
            .iter()
            .flat_map(|&(key, _)| {
                (0..channels)
                    .rev()
                    .map(move |c| normalise((key >> (8 * c)) as u8))
            })
            .collect();
        let weights: Vec<f64> = distinct.iter().map(|&(_, count)| count).collect();
        Self::fit_points(&points, &weights, channels, k, options.max_iters, &mut rng)
    }

    /// Weighted k-means on points already in [-1, 1] (`weights[i]` copies of point i); centres come
    /// back sorted by brightness (sum of channels), so token order follows intensity, which makes
    /// grey palettes read naturally. With fewer distinct points than K, some centres repeat.
    pub(crate) fn fit_points(
        points: &[f32],
        weights: &[f64],
        channels: usize,
        k: usize,
        max_iters: usize,
        rng: &mut ChaCha8Rng,
    ) -> Result<Self> {
        let n = points.len() / channels;
        if k == 0 || n == 0 || weights.len() != n {
            return Err(Error::invalid(format!(
                "k-means needs K >= 1 and points, one weight each (K = {k}, {n} points, {} weights)",
                weights.len()
            )));
        }
        let point = |i: usize| &points[i * channels..(i + 1) * channels];
        let mut centres = kmeans_plus_plus(points, weights, channels, k, rng);
        let mut assignment = vec![usize::MAX; n];
        for _ in 0..max_iters {
            let mut changed = false;
            let mut sums = vec![0f64; k * channels];
            let mut counts = vec![0f64; k];
            for (i, slot) in assignment.iter_mut().enumerate() {
                let (c, _) = nearest(&centres, channels, point(i));
                if *slot != c {
                    *slot = c;
                    changed = true;
                }
                counts[c] += weights[i];
                for (s, &v) in sums[c * channels..].iter_mut().zip(point(i)) {
                    *s += weights[i] * v as f64;
                }
            }
            for c in 0..k {
                if counts[c] == 0.0 {
                    // An empty cluster takes over the point worst served by its centre.
                    let far = (0..n)
                        .max_by(|&a, &b| {
                            let da = distance(
                                &centres[assignment[a] * channels..][..channels],
                                point(a),
                            );
                            let db = distance(
                                &centres[assignment[b] * channels..][..channels],
                                point(b),
                            );
                            da.total_cmp(&db)
                        })
                        .expect("n >= k > 0");
                    centres[c * channels..(c + 1) * channels].copy_from_slice(point(far));
                    assignment[far] = c;
                    changed = true;
                } else {
                    for ch in 0..channels {
                        centres[c * channels + ch] = (sums[c * channels + ch] / counts[c]) as f32;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        let mut order: Vec<usize> = (0..k).collect();
        let brightness = |c: usize| {
            centres[c * channels..(c + 1) * channels]
                .iter()
                .sum::<f32>()
        };
        order.sort_by(|&a, &b| brightness(a).total_cmp(&brightness(b)));
        let sorted = order
            .iter()
            .flat_map(|&c| centres[c * channels..(c + 1) * channels].iter().copied())
            .collect();
        Self::new(channels, sorted)
    }

    /// Token ids of an image in raster order: resized (bilinear) to `width × height` when needed, converted
    /// to the palette's channels, each pixel mapped to the nearest centre by squared distance in [-1, 1].
    pub fn tokenize(&self, image: &Raster, width: usize, height: usize) -> Vec<u16> {
        let image = image.with_channels(self.channels).resized(width, height);
        let mut px = vec![0f32; self.channels];
        image
            .pixels
            .chunks_exact(self.channels)
            .map(|p| {
                for (dst, &v) in px.iter_mut().zip(p) {
                    *dst = normalise(v);
                }
                nearest(&self.centres, self.channels, &px).0 as u16
            })
            .collect()
    }

    /// The image a token sequence stands for: each id painted with its centre's colour.
    pub fn detokenize(&self, ids: &[u16], width: usize, height: usize) -> Result<Raster> {
        if ids.len() != width * height {
            return Err(Error::invalid(format!(
                "{} tokens cannot fill a {width}x{height} image",
                ids.len()
            )));
        }
        let mut pixels = Vec::with_capacity(ids.len() * self.channels);
        for &id in ids {
            let id = id as usize;
            if id >= self.len() {
                return Err(Error::invalid(format!(
                    "token {id} is not a colour of this {}-colour palette",
                    self.len()
                )));
            }
            pixels.extend(self.centre(id).iter().map(|&v| denormalise(v)));
        }
        Raster::new(width, height, self.channels, pixels)
    }

    /// Parses HF's `preprocessor_config.json`: the palette, and the image size it declares (if any).
    pub(crate) fn from_preprocessor_json(text: &str) -> Result<(Self, Option<(usize, usize)>)> {
        let config: PreprocessorConfig = serde_json::from_str(text)
            .map_err(|e| Error::invalid(format!("not an ImageGPT preprocessor config: {e}")))?;
        let channels = config.clusters.first().map_or(0, Vec::len);
        if config.clusters.iter().any(|c| c.len() != channels) {
            return Err(Error::invalid(
                "palette clusters must all have the same number of channels",
            ));
        }
        let palette = Self::new(channels, config.clusters.concat())?;
        Ok((palette, config.size.map(|s| (s.height, s.width))))
    }

    /// HF's `preprocessor_config.json` for this palette and image size, so HF's processor can read it too.
    pub fn to_preprocessor_json(&self, height: usize, width: usize) -> String {
        let mut value = serde_json::to_value(PreprocessorConfig {
            clusters: self
                .centres
                .chunks(self.channels)
                .map(<[f32]>::to_vec)
                .collect(),
            size: Some(ImageSize { height, width }),
        })
        .expect("plain data serialises");
        let extra = serde_json::json!({
            "image_processor_type": "ImageGPTImageProcessor",
            "do_resize": true,
            "do_normalize": true,
            "do_color_quantize": true,
            "resample": 2,
        });
        if let (Some(obj), Some(extra)) = (value.as_object_mut(), extra.as_object()) {
            obj.extend(extra.clone());
        }
        serde_json::to_string_pretty(&value).expect("plain data serialises")
    }
}

/// A palette with the image size a model reads: turns images into token sequences and back.
#[derive(Clone, Debug, PartialEq)]
pub struct Tokenizer {
    pub palette: Palette,
    pub height: usize,
    pub width: usize,
}

impl Tokenizer {
    pub fn tokenize(&self, image: &Raster) -> Vec<u16> {
        self.palette.tokenize(image, self.width, self.height)
    }

    pub fn detokenize(&self, ids: &[u16]) -> Result<Raster> {
        self.palette.detokenize(ids, self.width, self.height)
    }

    pub fn channels(&self) -> usize {
        self.palette.channels()
    }
}

/// [0, 255] -> [-1, 1], as HF's processor (rescale by 1/255, then normalise with mean 0.5, std 0.5).
fn normalise(v: u8) -> f32 {
    v as f32 / 127.5 - 1.0
}

/// [-1, 1] -> [0, 255], rounded and clamped.
fn denormalise(v: f32) -> u8 {
    ((v + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8
}

fn distance(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Index and squared distance of the centre nearest to `p` (the first one on ties, like numpy's argmin).
fn nearest(centres: &[f32], channels: usize, p: &[f32]) -> (usize, f32) {
    let mut best = (0, f32::INFINITY);
    for (i, c) in centres.chunks_exact(channels).enumerate() {
        let d = distance(c, p);
        if d < best.1 {
            best = (i, d);
        }
    }
    best
}

/// k-means++ seeding: each new centre is a point drawn with probability proportional to its squared
/// distance from the nearest centre chosen so far (Arthur & Vassilvitskii 2007).
/// k-means++ seeding, each point counted `weights[i]` times.
fn kmeans_plus_plus(
    points: &[f32],
    weights: &[f64],
    channels: usize,
    k: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<f32> {
    let n = points.len() / channels;
    let point = |i: usize| &points[i * channels..(i + 1) * channels];
    let mut centres = Vec::with_capacity(k * channels);
    let first = {
        let mut target = rng.random::<f64>() * weights.iter().sum::<f64>();
        weights
            .iter()
            .position(|&w| {
                target -= w;
                target < 0.0
            })
            .unwrap_or(n - 1)
    };
    centres.extend_from_slice(point(first));
    // Each point's squared distance to its nearest centre so far, times its weight.
    let mut best: Vec<f64> = (0..n)
        .map(|i| weights[i] * distance(&centres, point(i)) as f64)
        .collect();
    while centres.len() < k * channels {
        let total: f64 = best.iter().sum();
        let chosen = if total > 0.0 {
            let mut target = rng.random::<f64>() * total;
            best.iter()
                .position(|&d| {
                    target -= d;
                    target < 0.0
                })
                .unwrap_or(n - 1)
        } else {
            // Fewer distinct points than K: any point will do (the centre duplicates one already chosen).
            rng.random_range(0..n)
        };
        let start = centres.len();
        centres.extend_from_slice(point(chosen));
        for (i, b) in best.iter_mut().enumerate() {
            *b = b.min(weights[i] * distance(&centres[start..], point(i)) as f64);
        }
    }
    centres
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_well_separated_centres() {
        let truth = [-0.8f32, -0.2, 0.3, 0.9];
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let points: Vec<f32> = (0..4000)
            .map(|i| truth[i % 4] + (rng.random::<f32>() - 0.5) * 0.05)
            .collect();
        let palette =
            Palette::fit_points(&points, &vec![1.0; points.len()], 1, 4, 100, &mut rng).unwrap();
        for (i, t) in truth.iter().enumerate() {
            assert!((palette.centre(i)[0] - t).abs() < 0.01, "{palette:?}");
        }
    }

    #[test]
    fn fit_is_deterministic_for_a_seed() {
        let img = Raster::new(4, 4, 3, (0..48).map(|v| (v * 5) as u8).collect()).unwrap();
        let opts = FitOptions {
            sample: 500,
            seed: 3,
            max_iters: 50,
        };
        let a = Palette::fit(std::slice::from_ref(&img), 5, 3, &opts).unwrap();
        let b = Palette::fit(std::slice::from_ref(&img), 5, 3, &opts).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 5);
    }

    #[test]
    fn detokenize_then_tokenize_is_identity() {
        let palette = Palette::new(1, vec![-1.0, -0.5, 0.0, 0.5, 1.0]).unwrap();
        let ids: Vec<u16> = (0..12).map(|i| (i % 5) as u16).collect();
        let img = palette.detokenize(&ids, 4, 3).unwrap();
        assert_eq!(palette.tokenize(&img, 4, 3), ids);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(Palette::new(2, vec![0.0; 4]).is_err());
        assert!(Palette::new(3, vec![0.0; 4]).is_err());
        let palette = Palette::new(1, vec![0.0, 1.0]).unwrap();
        assert!(palette.detokenize(&[0, 2], 2, 1).is_err());
        assert!(palette.detokenize(&[0], 2, 1).is_err());
        assert!(Palette::from_preprocessor_json("{}").is_err());
    }

    #[test]
    fn preprocessor_json_round_trips() {
        let palette = Palette::new(3, vec![-1.0, 0.25, 0.5, 1.0, 0.0, -0.75]).unwrap();
        let text = palette.to_preprocessor_json(28, 32);
        let (back, size) = Palette::from_preprocessor_json(&text).unwrap();
        assert_eq!(back, palette);
        assert_eq!(size, Some((28, 32)));
    }
}
