//! The first few principal components of a small matrix of rows (hidden states of one image), by
//! subspace iteration on the centred rows themselves: never forms the d×d covariance, so it costs a
//! few passes over the data, which matters in the browser's single CPU thread.

/// Projects the `n` rows of `rows` (`n × d`, row-major) onto their first `k` principal components:
/// returns `n × k` scores, components ordered by explained variance. Each component's sign is fixed so
/// that its largest loading is positive (the same data give the same picture).
pub(crate) fn principal_scores(rows: &[f32], d: usize, k: usize) -> Vec<f32> {
    match Principal::fit(rows, d, k) {
        Some(principal) => principal.scores(rows),
        None => Vec::new(),
    }
}

/// The first principal components of some rows: their mean, and the components as unit vectors with
/// the variance along each, largest first. Fitted on some rows, it projects any others (the feature
/// atlas fits on a sample and scores a whole split).
pub(crate) struct Principal {
    mean: Vec<f32>,
    pub components: Vec<Vec<f32>>,
    /// Variance of the fitted rows along each component (the atlas reads it; the browser's layer
    /// features do not).
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    pub variances: Vec<f32>,
}

impl Principal {
    /// The first `k` components of the `n × d` rows (fewer when d or n is smaller); None without rows.
    pub fn fit(rows: &[f32], d: usize, k: usize) -> Option<Self> {
        if d == 0 || rows.is_empty() {
            return None;
        }
        let n = rows.len() / d;
        let k = k.min(d).min(n);
        let mut mean = vec![0.0f64; d];
        for row in rows.chunks_exact(d) {
            for (m, &x) in mean.iter_mut().zip(row) {
                *m += x as f64;
            }
        }
        let mean: Vec<f32> = mean.iter().map(|m| (m / n as f64) as f32).collect();
        let centred: Vec<f32> = rows
            .chunks_exact(d)
            .flat_map(|row| row.iter().zip(&mean).map(|(&x, m)| x - m))
            .collect();
        // Start from fixed, well-spread directions; 25 rounds of V ← orth(Xᵀ X V) (the picture needs
        // the leading directions, not digits: by then they have settled).
        let mut basis: Vec<Vec<f32>> = (0..k)
            .map(|j| {
                (0..d)
                    .map(|i| ((i * 7 + j * 13) % 17) as f32 - 7.5)
                    .collect()
            })
            .collect();
        orthonormalise(&mut basis);
        for _ in 0..25 {
            basis = covariance_times(&centred, d, &basis);
            orthonormalise(&mut basis);
        }
        // Order by variance (the Rayleigh quotient), then fix signs.
        let spread = covariance_times(&centred, d, &basis);
        let mut ranked: Vec<(f32, Vec<f32>)> = basis
            .into_iter()
            .zip(&spread)
            .map(|(v, cv)| (dot(&v, cv), v))
            .collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
        let variances = ranked.iter().map(|(v, _)| v / n as f32).collect();
        let components = ranked
            .into_iter()
            .map(|(_, v)| {
                let largest = v
                    .iter()
                    .copied()
                    .fold(0.0f32, |m, x| if x.abs() > m.abs() { x } else { m });
                let sign = if largest < 0.0 { -1.0 } else { 1.0 };
                v.into_iter().map(|x| x * sign).collect()
            })
            .collect();
        Some(Self {
            mean,
            components,
            variances,
        })
    }

    /// Each row's coordinates along the components: `n × k`, row-major.
    pub fn scores(&self, rows: &[f32]) -> Vec<f32> {
        let d = self.mean.len();
        let mut centred = vec![0.0f32; d];
        let mut out = Vec::with_capacity(rows.len() / d * self.components.len());
        for row in rows.chunks_exact(d) {
            for ((c, &x), m) in centred.iter_mut().zip(row).zip(&self.mean) {
                *c = x - m;
            }
            out.extend(self.components.iter().map(|v| dot(&centred, v)));
        }
        out
    }
}

/// Xᵀ(X v) for every v of `basis`, in one pass over the `n × d` rows X.
fn covariance_times(rows: &[f32], d: usize, basis: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let mut out = vec![vec![0.0f32; d]; basis.len()];
    for row in rows.chunks_exact(d) {
        for (v, o) in basis.iter().zip(out.iter_mut()) {
            let s = dot(row, v);
            for (o, &x) in o.iter_mut().zip(row) {
                *o += s * x;
            }
        }
    }
    out
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Gram–Schmidt, in place; a vector that vanishes (rank-deficient data) is left at zero.
fn orthonormalise(basis: &mut [Vec<f32>]) {
    for j in 0..basis.len() {
        for i in 0..j {
            let projection = dot(&basis[i], &basis[j]);
            let earlier = basis[i].clone();
            for (x, e) in basis[j].iter_mut().zip(&earlier) {
                *x -= projection * e;
            }
        }
        let norm = dot(&basis[j], &basis[j]).sqrt();
        if norm > 1e-12 {
            basis[j].iter_mut().for_each(|x| *x /= norm);
        } else {
            basis[j].iter_mut().for_each(|x| *x = 0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Points spread 10, 3 and 1 along three orthogonal directions of a 5-d space (and not at the
    /// origin): the scores recover each spread, in order, up to sign.
    #[test]
    fn recovers_known_axes_in_order() {
        let axes = [
            [0.6, 0.8, 0.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0, 0.0],
            [0.8, -0.6, 0.0, 0.0, 0.0],
        ];
        let spreads = [10.0, 3.0, 1.0];
        let mut rows = Vec::new();
        let mut coords = Vec::new();
        for i in 0..200usize {
            // Walsh functions of i: zero mean and mutually uncorrelated, so these are the axes.
            let c: Vec<f64> = (0..3)
                .map(|a| {
                    let sign = if ((i % 8) & (1 << a)).count_ones() == 1 {
                        -1.0
                    } else {
                        1.0
                    };
                    spreads[a] * sign
                })
                .collect();
            rows.extend((0..5).map(|x| {
                let v: f64 = c.iter().zip(&axes).map(|(ca, axis)| ca * axis[x]).sum();
                (v + 5.0) as f32
            }));
            coords.push(c);
        }
        let scores = principal_scores(&rows, 5, 3);
        for a in 0..3 {
            let mean: f64 = coords.iter().map(|c| c[a]).sum::<f64>() / 200.0;
            let (mut same, mut flipped) = (0.0f64, 0.0f64);
            for (i, c) in coords.iter().enumerate() {
                let s = scores[i * 3 + a] as f64;
                same = same.max((s - (c[a] - mean)).abs());
                flipped = flipped.max((s + (c[a] - mean)).abs());
            }
            assert!(
                same.min(flipped) < 1e-3,
                "component {a}: off by {}",
                same.min(flipped)
            );
        }
    }
}
