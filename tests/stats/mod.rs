//! Running moments shared by the statistical tests (tests/unbiased.rs, tests/coupling.rs):
//! Welford's per-coordinate mean and sum of squared deviations, mergeable across the
//! parallel chunks of replications (Chan et al.'s pairwise update).

#[derive(Clone, Debug)]
pub struct Welford {
    pub n: f64,
    pub mean: Vec<f64>,
    pub m2: Vec<f64>,
}

impl Welford {
    pub fn new(d: usize) -> Self {
        Welford {
            n: 0.0,
            mean: vec![0.0; d],
            m2: vec![0.0; d],
        }
    }

    pub fn push(&mut self, v: &[f64]) {
        self.n += 1.0;
        for (i, &vi) in v.iter().enumerate() {
            let delta = vi - self.mean[i];
            self.mean[i] += delta / self.n;
            self.m2[i] += delta * (vi - self.mean[i]);
        }
    }

    pub fn merge(&mut self, o: &Welford) {
        let n = self.n + o.n;
        for i in 0..self.mean.len() {
            let delta = o.mean[i] - self.mean[i];
            self.m2[i] += o.m2[i] + delta * delta * self.n * o.n / n;
            self.mean[i] += delta * o.n / n;
        }
        self.n = n;
    }

    /// Standard error of the mean of coordinate `i`.
    pub fn se(&self, i: usize) -> f64 {
        (self.m2[i] / (self.n - 1.0) / self.n).sqrt()
    }
}
