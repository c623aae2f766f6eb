//! Running moments and the normal quantile: the statistics that grad-stats, the figures and
//! the statistical tests share. Depends on nothing else in the crate.

/// Running per-coordinate mean and sum of squared deviations (Welford's update), mergeable
/// across chunks of replications (Chan et al.'s pairwise update). A scalar is dimension 1.
#[derive(Clone, Debug)]
pub struct Moments {
    n: usize,
    mean: Vec<f64>,
    m2: Vec<f64>,
}

impl Moments {
    /// Empty moments of `dim` coordinates.
    pub fn new(dim: usize) -> Self {
        Moments {
            n: 0,
            mean: vec![0.0; dim],
            m2: vec![0.0; dim],
        }
    }

    /// Adds one observation (its length is the dimension).
    pub fn push(&mut self, v: &[f64]) {
        debug_assert_eq!(v.len(), self.mean.len());
        self.n += 1;
        let n = self.n as f64;
        for (i, &vi) in v.iter().enumerate() {
            let delta = vi - self.mean[i];
            self.mean[i] += delta / n;
            self.m2[i] += delta * (vi - self.mean[i]);
        }
    }

    /// Adds another set of observations of the same dimension.
    pub fn merge(&mut self, o: &Moments) {
        let (na, nb) = (self.n as f64, o.n as f64);
        let n = na + nb;
        if n == 0.0 {
            return;
        }
        for i in 0..self.mean.len() {
            let delta = o.mean[i] - self.mean[i];
            self.m2[i] += o.m2[i] + delta * delta * na * nb / n;
            self.mean[i] += delta * nb / n;
        }
        self.n += o.n;
    }

    /// Observations pushed (and merged).
    pub fn count(&self) -> usize {
        self.n
    }

    /// Coordinates.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// The mean of coordinate `i`.
    pub fn mean(&self, i: usize) -> f64 {
        self.mean[i]
    }

    /// The sample variance (divisor n - 1) of coordinate `i`; 0 for fewer than two values.
    pub fn var(&self, i: usize) -> f64 {
        if self.n < 2 {
            0.0
        } else {
            self.m2[i] / (self.n - 1) as f64
        }
    }

    /// The standard error of coordinate `i`'s mean, sqrt(var / n).
    pub fn stderr(&self, i: usize) -> f64 {
        (self.var(i) / self.n.max(1) as f64).sqrt()
    }
}

/// How a group of coordinates' estimates spread about their mean: what `grad-stats` reports
/// per parameter group and `train --grad-var-every` logs for the encoder and the decoder.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Spread {
    /// Mean over the coordinates of each one's sample variance.
    pub mean_variance: f64,
    /// The L2 norm of the vector of the coordinates' means.
    pub mean_norm: f64,
    /// Mean over the coordinates of |mean| / sd (Rainforth et al. 2018); a coordinate with
    /// zero variance counts 0.
    pub snr: f64,
}

impl Moments {
    /// The [`Spread`] of the coordinates `coords` (none: all zeros).
    pub fn spread(&self, coords: impl IntoIterator<Item = usize>) -> Spread {
        let (mut dims, mut var_sum, mut norm_sq, mut snr) = (0usize, 0.0, 0.0, 0.0);
        for i in coords {
            let (m, v) = (self.mean(i), self.var(i));
            dims += 1;
            var_sum += v;
            norm_sq += m * m;
            snr += if v > 0.0 { m.abs() / v.sqrt() } else { 0.0 };
        }
        let d = dims.max(1) as f64;
        Spread {
            mean_variance: var_sum / d,
            mean_norm: norm_sq.sqrt(),
            snr: snr / d,
        }
    }
}

/// Standard normal quantile (Acklam's rational approximation, relative error < 1.2e-9).
/// The coefficients are kept as published.
#[allow(clippy::excessive_precision)]
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.383577518672690e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996,
        3.754408661907416,
    ];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_quantile_matches_known_values() {
        for (p, z) in [
            (0.5, 0.0),
            (0.975, 1.959963985),
            (0.995, 2.575829304),
            (1.0 - 1e-5, 4.264890794),
        ] {
            assert!(
                (normal_quantile(p) - z).abs() < 1e-6,
                "{p}: {}",
                normal_quantile(p)
            );
        }
    }

    #[test]
    fn merged_chunks_equal_one_pass() {
        let data: Vec<[f64; 2]> = (0..11).map(|i| [i as f64 * 0.7, (i * i) as f64]).collect();
        let mut one = Moments::new(2);
        data.iter().for_each(|v| one.push(v));
        let (mut a, mut b) = (Moments::new(2), Moments::new(2));
        data[..4].iter().for_each(|v| a.push(v));
        data[4..].iter().for_each(|v| b.push(v));
        a.merge(&b);
        assert_eq!(a.count(), 11);
        for i in 0..2 {
            assert!((a.mean(i) - one.mean(i)).abs() < 1e-12);
            assert!((a.var(i) - one.var(i)).abs() < 1e-9 * one.var(i));
        }
        // 0, 0.7, ..., 7.0: mean 3.5, sample variance 0.49 * 11 = 5.39.
        assert!((one.mean(0) - 3.5).abs() < 1e-12 && (one.var(0) - 5.39).abs() < 1e-12);
    }
}
