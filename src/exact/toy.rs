//! The linear-Gaussian toy model of Rainforth et al. (2018, "Tighter variational bounds are
//! not necessarily better", ICML) as reimplemented by Tucker et al. (2019, "Doubly
//! reparameterized gradient estimators for Monte Carlo objectives", ICLR, §6.1).

use super::{fill_std_normals, ExactModel, LN_2PI};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The Gaussian toy model, `D = 20` by default:
///
/// ```text
/// z ~ N(mu, I_D)        x | z ~ N(z, I_D)        q_phi(z | x) = N(A x + b, 2/3 I_D)
/// theta = mu (D)        phi = (A: D x D row-major, b: D)
/// ```
///
/// Closed forms: the marginal is `x ~ N(mu, 2 I_D)`, so
/// `log p(x) = -D/2 ln(4 pi) - |x - mu|^2 / 4` and `grad_mu log p(x) = (x - mu) / 2`; the
/// posterior is `N((x + mu) / 2, I_D / 2)`; per sample `D_n = grad_mu log p(x, z_n) = z_n - mu`
/// and `grad_z log p(x, z) = (mu - z) + (x - z)`.
///
/// The optimum for a dataset `{x_i}` is `mu* = mean_i x_i` (maximum likelihood),
/// `A* = I / 2`, `b* = mu* / 2` (then `q` has the posterior's mean; its variance `2/3` is
/// fixed and wider than the posterior's `1/2`, so the importance weights are bounded).
#[derive(Clone, Debug, PartialEq)]
pub struct Toy {
    dim: usize,
    mu: Vec<f64>,
    a: Vec<f64>,
    b: Vec<f64>,
    data: Vec<Vec<f64>>,
}

impl Toy {
    /// Latent and observed dimension of the paper's setup.
    pub const DIM: usize = 20;
    /// Number of datapoints drawn by the deterministic constructors (Rainforth et al. 2018).
    pub const N_DATA: usize = 1024;
    /// Standard deviation of the perturbation around the optimum in the paper's setup.
    pub const PAPER_PERTURB_SD: f64 = 0.01;
    /// The encoder's fixed variance.
    pub const Q_VAR: f64 = 2.0 / 3.0;

    /// The paper's setup, deterministic in `seed`: see [`Toy::with_perturbation`] with
    /// `perturb_sd = 0.01`.
    pub fn new(seed: u64) -> Self {
        Self::with_perturbation(seed, Self::PAPER_PERTURB_SD)
    }

    /// Deterministic in `seed` (ChaCha8): draws `mu_true ~ N(0, I_20)` and
    /// [`Toy::N_DATA`] datapoints `x_i ~ N(mu_true, 2 I)` (i.e. `z_i ~ N(mu_true, I)`,
    /// `x_i ~ N(z_i, I)`), then sets every parameter to its optimum (`mu* = mean x_i`,
    /// `A* = I/2`, `b* = mu*/2`) plus independent `N(0, perturb_sd^2)` noise on every entry
    /// of `mu`, `A` and `b`, as in Rainforth et al. (2018) / Tucker et al. (2019, §6.1),
    /// where `perturb_sd = 0.01`.
    ///
    /// Note that the noise on `A` moves the encoder mean by `(dA) x`, a sum over `D = 20`
    /// entries, so the mean offset per coordinate is about `perturb_sd * |x|`, with
    /// `|x| ~ sqrt(D (1 + 2)) ~ 7.7`: `perturb_sd = 0.1` already puts `q` far from the posterior
    /// (sd `0.71`) and the IWAE gap with 20000 samples is several nats.
    pub fn with_perturbation(seed: u64, perturb_sd: f64) -> Self {
        let dim = Self::DIM;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut mu_true = vec![0.0; dim];
        fill_std_normals(&mut rng, &mut mu_true);
        let mut noise = vec![0.0; dim];
        let data: Vec<Vec<f64>> = (0..Self::N_DATA)
            .map(|_| {
                fill_std_normals(&mut rng, &mut noise);
                mu_true
                    .iter()
                    .zip(&noise)
                    .map(|(m, e)| m + std::f64::consts::SQRT_2 * e)
                    .collect()
            })
            .collect();
        let mut mu_opt = vec![0.0; dim];
        for x in &data {
            for (m, xi) in mu_opt.iter_mut().zip(x) {
                *m += xi / data.len() as f64;
            }
        }
        let mut perturb = |v: &mut [f64]| {
            let mut e = vec![0.0; v.len()];
            fill_std_normals(&mut rng, &mut e);
            for (vi, ei) in v.iter_mut().zip(e) {
                *vi += perturb_sd * ei;
            }
        };
        let mut mu = mu_opt.clone();
        perturb(&mut mu);
        let mut a = vec![0.0; dim * dim];
        for i in 0..dim {
            a[i * dim + i] = 0.5;
        }
        perturb(&mut a);
        let mut b: Vec<f64> = mu_opt.iter().map(|m| 0.5 * m).collect();
        perturb(&mut b);
        Toy {
            dim,
            mu,
            a,
            b,
            data,
        }
    }

    /// A toy model from explicit parameters (`a` is `dim x dim` row-major) and data.
    pub fn from_parts(mu: Vec<f64>, a: Vec<f64>, b: Vec<f64>, data: Vec<Vec<f64>>) -> Self {
        let dim = mu.len();
        assert_eq!(a.len(), dim * dim, "A must be dim x dim");
        assert_eq!(b.len(), dim, "b must have dim entries");
        assert!(
            data.iter().all(|x| x.len() == dim),
            "datapoints must have dim entries"
        );
        Toy {
            dim,
            mu,
            a,
            b,
            data,
        }
    }

    /// The prior mean `mu` (= theta).
    pub fn mu(&self) -> &[f64] {
        &self.mu
    }

    /// The encoder matrix `A` (`dim x dim`, row-major).
    pub fn a(&self) -> &[f64] {
        &self.a
    }

    /// The encoder offset `b`.
    pub fn b(&self) -> &[f64] {
        &self.b
    }

    /// Mutable encoder parameters `(A, b)`.
    pub fn encoder_params_mut(&mut self) -> (&mut [f64], &mut [f64]) {
        (&mut self.a, &mut self.b)
    }

    /// The true posterior mean `(x + mu) / 2` (the variance is `1/2`).
    pub fn posterior_mean(&self, x: &[f64]) -> Vec<f64> {
        x.iter().zip(&self.mu).map(|(a, b)| 0.5 * (a + b)).collect()
    }
}

impl ExactModel for Toy {
    fn x_dim(&self) -> usize {
        self.dim
    }

    fn z_dim(&self) -> usize {
        self.dim
    }

    fn theta_len(&self) -> usize {
        self.dim
    }

    fn theta(&self) -> Vec<f64> {
        self.mu.clone()
    }

    fn set_theta(&mut self, theta: &[f64]) {
        assert_eq!(theta.len(), self.dim);
        self.mu.copy_from_slice(theta);
    }

    fn data(&self) -> &[Vec<f64>] {
        &self.data
    }

    fn encoder(&self, x: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let d = self.dim;
        let mean = (0..d)
            .map(|i| {
                self.b[i]
                    + self.a[i * d..(i + 1) * d]
                        .iter()
                        .zip(x)
                        .map(|(a, x)| a * x)
                        .sum::<f64>()
            })
            .collect();
        (mean, vec![Self::Q_VAR.sqrt(); d])
    }

    fn log_joint(&self, x: &[f64], z: &[f64]) -> f64 {
        let mut s = -(self.dim as f64) * LN_2PI;
        for i in 0..self.dim {
            let u = z[i] - self.mu[i];
            let v = x[i] - z[i];
            s -= 0.5 * (u * u + v * v);
        }
        s
    }

    fn log_joint_grad_theta(&self, _x: &[f64], z: &[f64]) -> Vec<f64> {
        z.iter().zip(&self.mu).map(|(z, m)| z - m).collect()
    }

    fn log_joint_grad_z(&self, x: &[f64], z: &[f64]) -> Vec<f64> {
        (0..self.dim)
            .map(|i| (self.mu[i] - z[i]) + (x[i] - z[i]))
            .collect()
    }

    fn exact_log_px(&self, x: &[f64]) -> f64 {
        // N(x; mu, 2 I): -D/2 ln(2 pi * 2) - |x - mu|^2 / 4.
        let q: f64 = x.iter().zip(&self.mu).map(|(a, b)| (a - b) * (a - b)).sum();
        -0.5 * self.dim as f64 * (LN_2PI + 2f64.ln()) - 0.25 * q
    }

    fn exact_grad_theta(&self, x: &[f64]) -> Vec<f64> {
        x.iter().zip(&self.mu).map(|(a, b)| 0.5 * (a - b)).collect()
    }
}
