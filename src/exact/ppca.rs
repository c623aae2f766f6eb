//! Probabilistic PCA (Tipping & Bishop 1999) with a linear-Gaussian amortised encoder.

use super::linalg::{cholesky, cholesky_logdet, cholesky_solve};
use super::{fill_std_normals, ExactModel, LN_2PI};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Shape and construction parameters of a [`Ppca`] model (see [`Ppca::with_config`]).
#[derive(Clone, Debug, PartialEq)]
pub struct PpcaConfig {
    /// Observed dimension `D`.
    pub x_dim: usize,
    /// Latent dimension `d`.
    pub z_dim: usize,
    /// Observation noise standard deviation `s` (fixed, not part of theta).
    pub noise_sd: f64,
    /// Standard deviation of the entries of the generating `W`.
    pub w_scale: f64,
    /// Number of datapoints drawn from the generating model.
    pub n_data: usize,
    /// The encoder's standard deviations are the posterior's marginal ones times this factor
    /// (> 1 keeps the importance weights' variance finite).
    pub sd_inflation: f64,
    /// Standard deviation of the Gaussian noise added to every parameter (theta and phi).
    pub perturb_sd: f64,
}

impl Default for PpcaConfig {
    fn default() -> Self {
        PpcaConfig {
            x_dim: 5,
            z_dim: 2,
            noise_sd: 1.0,
            w_scale: 1.0,
            n_data: 64,
            sd_inflation: 1.2,
            perturb_sd: 0.01,
        }
    }
}

/// Probabilistic PCA:
///
/// ```text
/// z ~ N(0, I_d)      x | z ~ N(W z + b, s^2 I_D)      q_phi(z | x) = N(C x + e, diag(exp(2 log_sd)))
/// theta = (W: D x d row-major, b: D)   (s fixed)      phi = (C: d x D row-major, e: d, log_sd: d)
/// ```
///
/// Closed forms, with `Sigma = W W^T + s^2 I_D`, `r = x - b`, `v = Sigma^-1 r`:
///
/// ```text
/// log p(x)            = -D/2 ln(2 pi) - 1/2 ln|Sigma| - 1/2 r^T v
/// grad_b log p(x)     = v
/// grad_W log p(x)     = v (W^T v)^T - Sigma^-1 W
/// ```
///
/// Derivation of `grad_W`: `dSigma = dW W^T + W dW^T`, so
/// `d ln|Sigma| = tr(Sigma^-1 dSigma) = 2 tr(W^T Sigma^-1 dW)` (gradient `2 Sigma^-1 W`) and
/// `d(r^T Sigma^-1 r) = -v^T dSigma v = -2 v^T dW (W^T v)` (gradient `-2 v (W^T v)^T`); the
/// log-density takes `-1/2` of each. Both are checked against central finite differences in
/// the unit tests.
///
/// Per sample, with `r_z = x - W z - b`: `grad_W log p(x, z) = r_z z^T / s^2`,
/// `grad_b log p(x, z) = r_z / s^2`, `grad_z log p(x, z) = -z + W^T r_z / s^2`. The posterior
/// is `N(M^-1 W^T r / s^2, M^-1)`, `M = I_d + W^T W / s^2`.
#[derive(Clone, Debug, PartialEq)]
pub struct Ppca {
    dx: usize,
    dz: usize,
    s: f64,
    w: Vec<f64>,
    b: Vec<f64>,
    c: Vec<f64>,
    e: Vec<f64>,
    log_sd: Vec<f64>,
    data: Vec<Vec<f64>>,
}

impl Ppca {
    /// [`Ppca::with_config`] with [`PpcaConfig::default`] (`D = 5`, `d = 2`, `s = 1`, 64
    /// datapoints, encoder sds 1.2x the posterior's, perturbation 0.01).
    pub fn new(seed: u64) -> Self {
        Self::with_config(seed, &PpcaConfig::default())
    }

    /// Deterministic in `seed` (ChaCha8): draws a generating `W_true` (entries
    /// `N(0, w_scale^2)`) and `b_true` (entries `N(0, 1)`), then `n_data` datapoints
    /// `x = W_true z + b_true + s eps`. The model starts at `(W_true, b_true)`; the encoder
    /// starts at the exact posterior mean map for those parameters (`C = M^-1 W^T / s^2`,
    /// `e = -C b`) with `sd_j = sd_inflation * sqrt((M^-1)_jj)`. Finally every entry of `W`,
    /// `b`, `C`, `e` and `log_sd` gets independent `N(0, perturb_sd^2)` noise.
    pub fn with_config(seed: u64, cfg: &PpcaConfig) -> Self {
        let (dx, dz, s) = (cfg.x_dim, cfg.z_dim, cfg.noise_sd);
        assert!(dx >= 1 && dz >= 1 && s > 0.0, "invalid PPCA shape");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut w = vec![0.0; dx * dz];
        fill_std_normals(&mut rng, &mut w);
        w.iter_mut().for_each(|v| *v *= cfg.w_scale);
        let mut b = vec![0.0; dx];
        fill_std_normals(&mut rng, &mut b);
        let (mut z, mut eps) = (vec![0.0; dz], vec![0.0; dx]);
        let data: Vec<Vec<f64>> = (0..cfg.n_data)
            .map(|_| {
                fill_std_normals(&mut rng, &mut z);
                fill_std_normals(&mut rng, &mut eps);
                (0..dx)
                    .map(|k| b[k] + s * eps[k] + (0..dz).map(|j| w[k * dz + j] * z[j]).sum::<f64>())
                    .collect()
            })
            .collect();
        let mut perturb = |v: &mut [f64]| {
            let mut n = vec![0.0; v.len()];
            fill_std_normals(&mut rng, &mut n);
            for (vi, ni) in v.iter_mut().zip(n) {
                *vi += cfg.perturb_sd * ni;
            }
        };
        perturb(&mut w);
        perturb(&mut b);
        let mut model = Ppca {
            dx,
            dz,
            s,
            w,
            b,
            c: vec![0.0; dz * dx],
            e: vec![0.0; dz],
            log_sd: vec![0.0; dz],
            data,
        };
        model.set_encoder_to_posterior(cfg.sd_inflation);
        perturb(&mut model.c);
        perturb(&mut model.e);
        perturb(&mut model.log_sd);
        model
    }

    /// Sets the encoder to the exact posterior mean map of the current theta and the
    /// posterior's marginal standard deviations times `sd_inflation`.
    pub fn set_encoder_to_posterior(&mut self, sd_inflation: f64) {
        let (dx, dz) = (self.dx, self.dz);
        let s2 = self.s * self.s;
        let mut m = vec![0.0; dz * dz];
        for i in 0..dz {
            for j in 0..dz {
                let wtw: f64 = (0..dx)
                    .map(|k| self.w[k * dz + i] * self.w[k * dz + j])
                    .sum();
                m[i * dz + j] = wtw / s2 + if i == j { 1.0 } else { 0.0 };
            }
        }
        let l = cholesky(&m, dz).expect("I + W^T W / s^2 is positive definite");
        // C = M^-1 W^T / s^2, column k of C solves M c_k = W[k, :] / s^2.
        for k in 0..dx {
            let rhs: Vec<f64> = (0..dz).map(|j| self.w[k * dz + j] / s2).collect();
            let col = cholesky_solve(&l, dz, &rhs);
            for (j, v) in col.iter().enumerate() {
                self.c[j * dx + k] = *v;
            }
        }
        for j in 0..dz {
            self.e[j] = -(0..dx).map(|k| self.c[j * dx + k] * self.b[k]).sum::<f64>();
            let mut unit = vec![0.0; dz];
            unit[j] = 1.0;
            let var = cholesky_solve(&l, dz, &unit)[j];
            self.log_sd[j] = 0.5 * var.ln() + sd_inflation.ln();
        }
    }

    /// A PPCA model from explicit parts: `w` is `D x d` row-major with `D = b.len()`,
    /// `d = e.len()`, `c` is `d x D` row-major.
    pub fn from_parts(
        noise_sd: f64,
        w: Vec<f64>,
        b: Vec<f64>,
        c: Vec<f64>,
        e: Vec<f64>,
        log_sd: Vec<f64>,
        data: Vec<Vec<f64>>,
    ) -> Self {
        let (dx, dz) = (b.len(), e.len());
        assert!(noise_sd > 0.0, "the noise sd must be positive");
        assert_eq!(w.len(), dx * dz, "W must be D x d");
        assert_eq!(c.len(), dz * dx, "C must be d x D");
        assert_eq!(log_sd.len(), dz, "log_sd must have d entries");
        assert!(
            data.iter().all(|x| x.len() == dx),
            "datapoints must have D entries"
        );
        Ppca {
            dx,
            dz,
            s: noise_sd,
            w,
            b,
            c,
            e,
            log_sd,
            data,
        }
    }

    /// The observation noise standard deviation `s`.
    pub fn noise_sd(&self) -> f64 {
        self.s
    }

    /// The loading matrix `W` (`D x d`, row-major).
    pub fn w(&self) -> &[f64] {
        &self.w
    }

    /// The observation offset `b`.
    pub fn b(&self) -> &[f64] {
        &self.b
    }

    /// Encoder parameters `(C: d x D row-major, e, log_sd)`.
    pub fn encoder_params(&self) -> (&[f64], &[f64], &[f64]) {
        (&self.c, &self.e, &self.log_sd)
    }

    /// Mutable encoder parameters `(C, e, log_sd)`.
    pub fn encoder_params_mut(&mut self) -> (&mut [f64], &mut [f64], &mut [f64]) {
        (&mut self.c, &mut self.e, &mut self.log_sd)
    }

    /// Cholesky factor of the marginal covariance `Sigma = W W^T + s^2 I`.
    fn marginal_chol(&self) -> Vec<f64> {
        let (dx, dz) = (self.dx, self.dz);
        let mut sig = vec![0.0; dx * dx];
        for i in 0..dx {
            for k in 0..dx {
                let v: f64 = (0..dz)
                    .map(|j| self.w[i * dz + j] * self.w[k * dz + j])
                    .sum();
                sig[i * dx + k] = v + if i == k { self.s * self.s } else { 0.0 };
            }
        }
        cholesky(&sig, dx).expect("W W^T + s^2 I is positive definite")
    }

    /// `r_z = x - W z - b`.
    fn residual(&self, x: &[f64], z: &[f64]) -> Vec<f64> {
        (0..self.dx)
            .map(|k| {
                x[k] - self.b[k]
                    - (0..self.dz)
                        .map(|j| self.w[k * self.dz + j] * z[j])
                        .sum::<f64>()
            })
            .collect()
    }
}

impl ExactModel for Ppca {
    fn x_dim(&self) -> usize {
        self.dx
    }

    fn z_dim(&self) -> usize {
        self.dz
    }

    /// Layout: `W` row-major (`D x d`), then `b` (`D`).
    fn theta_len(&self) -> usize {
        self.dx * self.dz + self.dx
    }

    fn theta(&self) -> Vec<f64> {
        let mut t = self.w.clone();
        t.extend_from_slice(&self.b);
        t
    }

    fn set_theta(&mut self, theta: &[f64]) {
        assert_eq!(theta.len(), self.theta_len());
        let (w, b) = theta.split_at(self.dx * self.dz);
        self.w.copy_from_slice(w);
        self.b.copy_from_slice(b);
    }

    fn data(&self) -> &[Vec<f64>] {
        &self.data
    }

    fn encoder(&self, x: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let mean = (0..self.dz)
            .map(|j| {
                self.e[j]
                    + (0..self.dx)
                        .map(|k| self.c[j * self.dx + k] * x[k])
                        .sum::<f64>()
            })
            .collect();
        (mean, self.log_sd.iter().map(|v| v.exp()).collect())
    }

    fn log_joint(&self, x: &[f64], z: &[f64]) -> f64 {
        let r = self.residual(x, z);
        let s2 = self.s * self.s;
        -0.5 * (self.dz + self.dx) as f64 * LN_2PI
            - 0.5 * z.iter().map(|v| v * v).sum::<f64>()
            - self.dx as f64 * self.s.ln()
            - 0.5 * r.iter().map(|v| v * v).sum::<f64>() / s2
    }

    fn log_joint_grad_theta(&self, x: &[f64], z: &[f64]) -> Vec<f64> {
        let r = self.residual(x, z);
        let inv_s2 = 1.0 / (self.s * self.s);
        let mut g = Vec::with_capacity(self.theta_len());
        for rk in &r {
            for zj in z {
                g.push(rk * zj * inv_s2);
            }
        }
        g.extend(r.iter().map(|rk| rk * inv_s2));
        g
    }

    fn log_joint_grad_z(&self, x: &[f64], z: &[f64]) -> Vec<f64> {
        let r = self.residual(x, z);
        let inv_s2 = 1.0 / (self.s * self.s);
        (0..self.dz)
            .map(|j| {
                -z[j]
                    + inv_s2
                        * (0..self.dx)
                            .map(|k| self.w[k * self.dz + j] * r[k])
                            .sum::<f64>()
            })
            .collect()
    }

    fn exact_log_px(&self, x: &[f64]) -> f64 {
        let l = self.marginal_chol();
        let r: Vec<f64> = x.iter().zip(&self.b).map(|(a, b)| a - b).collect();
        let v = cholesky_solve(&l, self.dx, &r);
        let quad: f64 = r.iter().zip(&v).map(|(a, b)| a * b).sum();
        -0.5 * self.dx as f64 * LN_2PI - 0.5 * cholesky_logdet(&l, self.dx) - 0.5 * quad
    }

    fn exact_grad_theta(&self, x: &[f64]) -> Vec<f64> {
        let (dx, dz) = (self.dx, self.dz);
        let l = self.marginal_chol();
        let r: Vec<f64> = x.iter().zip(&self.b).map(|(a, b)| a - b).collect();
        let v = cholesky_solve(&l, dx, &r);
        // W^T v (d) and Sigma^-1 W (D x d, column by column).
        let wtv: Vec<f64> = (0..dz)
            .map(|j| (0..dx).map(|k| self.w[k * dz + j] * v[k]).sum())
            .collect();
        let mut sinv_w = vec![0.0; dx * dz];
        for j in 0..dz {
            let col: Vec<f64> = (0..dx).map(|k| self.w[k * dz + j]).collect();
            let sol = cholesky_solve(&l, dx, &col);
            for k in 0..dx {
                sinv_w[k * dz + j] = sol[k];
            }
        }
        let mut g = Vec::with_capacity(self.theta_len());
        for k in 0..dx {
            for j in 0..dz {
                g.push(v[k] * wtv[j] - sinv_w[k * dz + j]);
            }
        }
        g.extend_from_slice(&v);
        g
    }
}
