//! Exact models: latent variable models whose marginal `log p_theta(x)` and its gradient
//! `grad_theta log p_theta(x)` are known in closed form (docs/design.md §2), so that the
//! unbiasedness of a gradient estimator can be *tested* (docs/design.md §5.3).
//!
//! Both models here are linear-Gaussian and use a reparameterised diagonal Gaussian encoder
//! `q_phi(z | x) = N(mean(x), diag(sd(x)^2))`, `z = mean(x) + sd(x) * eps`:
//!
//! - [`Toy`]: the Gaussian example of Rainforth et al. (2018), reused in Tucker et al. (2019,
//!   §6.1): `z ~ N(mu, I_D)`, `x | z ~ N(z, I_D)`, `q(z | x) = N(A x + b, 2/3 I_D)`, `D = 20`.
//! - [`Ppca`]: probabilistic PCA (Tipping & Bishop 1999): `z ~ N(0, I_d)`,
//!   `x | z ~ N(W z + b, s^2 I_D)`, `q(z | x) = N(C x + e, diag(exp(2 log_sd)))`.
//!
//! Everything is `f64` and pure: the caller passes the standard normals `eps` (tests draw
//! them with a seeded `rand_chacha` generator through [`fill_std_normals`], or with
//! [`crate::rng::fill_normals`]). The estimator coefficients `a_n` of
//! [`crate::estimators`] combine with [`ExactModel::log_joint_grad_theta`] into the
//! theta-gradient estimate `g = sum_n a_n D_n`, whose expectation is compared with
//! [`ExactModel::exact_grad_theta`].
//!
//! Note on `D_n`: the original design notes wrote `D_n = grad_theta log p_theta(x | z_n)`,
//! which is the same thing for the VAE, whose prior has no parameters. In [`Toy`] the prior
//! mean *is* theta, so in general `D_n = grad_theta log p_theta(x, z_n)` (the joint), which is
//! what this module returns and what docs/design.md §1 defines (see its §7). With
//! `z_n` reparameterised through phi only, `d l_n / d theta = D_n`, and the chain rule gives
//! `grad_theta F(l) = sum_n (dF/dl_n) D_n` for any estimator value `F`.

pub mod hgauss;
mod hgauss_q;
mod linalg;
mod ppca;
mod toy;

pub use hgauss::HGauss;
pub use hgauss_q::HGaussQ;
pub use linalg::{cholesky, cholesky_logdet, cholesky_solve};
pub use ppca::{Ppca, PpcaConfig};
pub use toy::Toy;

use rand::Rng;

/// `ln(2 pi)`.
pub const LN_2PI: f64 = 1.837_877_066_409_345_5;

/// A latent variable model with a reparameterised Gaussian encoder and a closed-form
/// marginal likelihood. All vectors are `f64`; parameters are flattened row-major.
pub trait ExactModel {
    /// Dimension of an observation `x`.
    fn x_dim(&self) -> usize;
    /// Dimension of the latent `z` (and of `eps`).
    fn z_dim(&self) -> usize;
    /// Number of generative parameters theta (the length of every gradient returned).
    fn theta_len(&self) -> usize;
    /// The generative parameters theta, flattened (see the model's docs for the layout).
    fn theta(&self) -> Vec<f64>;
    /// Replaces theta (same layout as [`ExactModel::theta`]); the encoder is unchanged.
    fn set_theta(&mut self, theta: &[f64]);
    /// The model's fixed dataset (the datapoints built by its deterministic constructor).
    fn data(&self) -> &[Vec<f64>];

    /// Encoder `q_phi(z | x) = N(mean, diag(sd^2))`: returns `(mean, sd)`.
    fn encoder(&self, x: &[f64]) -> (Vec<f64>, Vec<f64>);
    /// `log p_theta(x, z) = log p(z) + log p_theta(x | z)`.
    fn log_joint(&self, x: &[f64], z: &[f64]) -> f64;
    /// `grad_theta log p_theta(x, z)` with `z` held fixed: the per-sample decoder piece `D_n`.
    fn log_joint_grad_theta(&self, x: &[f64], z: &[f64]) -> Vec<f64>;
    /// `grad_z log p_theta(x, z)` (the `g_z` of docs/design.md §1's path term).
    fn log_joint_grad_z(&self, x: &[f64], z: &[f64]) -> Vec<f64>;
    /// The exact marginal `log p_theta(x)`.
    fn exact_log_px(&self, x: &[f64]) -> f64;
    /// The exact `grad_theta log p_theta(x)`.
    fn exact_grad_theta(&self, x: &[f64]) -> Vec<f64>;

    /// `log q_phi(z | x)`.
    fn log_q(&self, x: &[f64], z: &[f64]) -> f64 {
        let (mean, sd) = self.encoder(x);
        diag_normal_logpdf(z, &mean, &sd)
    }

    /// One reparameterised sample `z = mean(x) + sd(x) * eps` and its log-weight
    /// `l = log p_theta(x, z) - log q_phi(z | x)`.
    fn sample(&self, x: &[f64], eps: &[f64]) -> (Vec<f64>, f64) {
        assert_eq!(eps.len(), self.z_dim(), "eps must have z_dim entries");
        let (mean, sd) = self.encoder(x);
        let z: Vec<f64> = mean
            .iter()
            .zip(&sd)
            .zip(eps)
            .map(|((m, s), e)| m + s * e)
            .collect();
        // log q(z | x) with z = mean + sd * eps is computed from eps directly (exact, cheaper).
        let log_q: f64 = -0.5 * (z.len() as f64) * LN_2PI
            - sd.iter().map(|s| s.ln()).sum::<f64>()
            - 0.5 * eps.iter().map(|e| e * e).sum::<f64>();
        let l = self.log_joint(x, &z) - log_q;
        (z, l)
    }
}

/// `log N(z; mean, diag(sd^2))`.
pub fn diag_normal_logpdf(z: &[f64], mean: &[f64], sd: &[f64]) -> f64 {
    assert!(z.len() == mean.len() && z.len() == sd.len());
    let mut s = -0.5 * (z.len() as f64) * LN_2PI;
    for ((zi, mi), si) in z.iter().zip(mean).zip(sd) {
        let u = (zi - mi) / si;
        s -= 0.5 * u * u + si.ln();
    }
    s
}

/// One standard normal from `rng` (Box-Muller in `f64`, the sine branch discarded).
pub fn std_normal(rng: &mut impl Rng) -> f64 {
    // 1 - U with U in [0, 1) lies in (0, 1], so the logarithm is finite.
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Fills `out` with independent standard normals from `rng` (Box-Muller in `f64`, both
/// branches used).
pub fn fill_std_normals(rng: &mut impl Rng, out: &mut [f64]) {
    for pair in out.chunks_mut(2) {
        let u1 = 1.0 - rng.random::<f64>();
        let u2 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
        pair[0] = r * c;
        if pair.len() > 1 {
            pair[1] = r * s;
        }
    }
}

/// `n` samples for datapoint `x`: returns `(l, dtheta)` with `l[i]` the log-weight of sample
/// `i` and `dtheta[i * theta_len .. (i + 1) * theta_len]` its `D_i`. The `eps` are drawn
/// from `rng` with [`fill_std_normals`].
pub fn draw_samples(
    model: &(impl ExactModel + ?Sized),
    x: &[f64],
    n: usize,
    rng: &mut impl Rng,
) -> (Vec<f64>, Vec<f64>) {
    let dz = model.z_dim();
    let p = model.theta_len();
    let mut eps = vec![0.0; dz];
    let mut l = Vec::with_capacity(n);
    let mut d = Vec::with_capacity(n * p);
    for _ in 0..n {
        fill_std_normals(rng, &mut eps);
        let (z, li) = model.sample(x, &eps);
        l.push(li);
        d.extend(model.log_joint_grad_theta(x, &z));
    }
    (l, d)
}

/// `g = sum_n a_n D_n` for `D` laid out as in [`draw_samples`].
pub fn combine(a: &[f64], dtheta: &[f64], theta_len: usize) -> Vec<f64> {
    assert_eq!(a.len() * theta_len, dtheta.len(), "a and D disagree in N");
    let mut g = vec![0.0; theta_len];
    for (an, dn) in a.iter().zip(dtheta.chunks(theta_len)) {
        for (gi, di) in g.iter_mut().zip(dn) {
            *gi += an * di;
        }
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// Central finite differences of `f` at `v` in every coordinate.
    pub(crate) fn fd_grad(v: &[f64], h: f64, mut f: impl FnMut(&[f64]) -> f64) -> Vec<f64> {
        let mut w = v.to_vec();
        (0..v.len())
            .map(|i| {
                w[i] = v[i] + h;
                let fp = f(&w);
                w[i] = v[i] - h;
                let fm = f(&w);
                w[i] = v[i];
                (fp - fm) / (2.0 * h)
            })
            .collect()
    }

    fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= tol * (1.0 + w.abs()),
                "{what}[{i}]: got {g}, want {w}"
            );
        }
    }

    /// Checks every closed form of a model against finite differences and against each
    /// other, on its first datapoints and random z.
    fn check_model<M: ExactModel + Clone>(model: &M, seed: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let theta0 = model.theta();
        assert_eq!(theta0.len(), model.theta_len());
        for x in model.data().iter().take(3) {
            assert_eq!(x.len(), model.x_dim());
            // exact_grad_theta = d exact_log_px / d theta.
            let fd = fd_grad(&theta0, 1e-5, |th| {
                let mut m = model.clone();
                m.set_theta(th);
                m.exact_log_px(x)
            });
            assert_close(&model.exact_grad_theta(x), &fd, 1e-6, "exact_grad_theta");

            let mut z = vec![0.0; model.z_dim()];
            fill_std_normals(&mut rng, &mut z);
            // log_joint_grad_theta = d log_joint / d theta.
            let fd = fd_grad(&theta0, 1e-5, |th| {
                let mut m = model.clone();
                m.set_theta(th);
                m.log_joint(x, &z)
            });
            assert_close(
                &model.log_joint_grad_theta(x, &z),
                &fd,
                1e-6,
                "log_joint_grad_theta",
            );
            // log_joint_grad_z = d log_joint / d z.
            let fd = fd_grad(&z, 1e-5, |zz| model.log_joint(x, zz));
            assert_close(&model.log_joint_grad_z(x, &z), &fd, 1e-6, "grad_z");

            // sample: z = mean + sd eps and l = log p(x, z) - log q(z | x).
            let mut eps = vec![0.0; model.z_dim()];
            fill_std_normals(&mut rng, &mut eps);
            let (zs, l) = model.sample(x, &eps);
            let (mean, sd) = model.encoder(x);
            for i in 0..zs.len() {
                assert!((zs[i] - (mean[i] + sd[i] * eps[i])).abs() < 1e-12);
            }
            let want = model.log_joint(x, &zs) - model.log_q(x, &zs);
            assert!((l - want).abs() < 1e-9, "{l} vs {want}");

            // Identity p(x) = p(x, z) / p(z | x) cannot be used without the posterior, but
            // the IWAE bound with many samples must approach log p(x) from below.
            let (lw, _) = draw_samples(model, x, 20_000, &mut rng);
            let lb = crate::estimators::iwae_bound(&lw);
            let lpx = model.exact_log_px(x);
            assert!(
                lb <= lpx + 0.05 && lb > lpx - 0.5,
                "IWAE {lb} vs log p(x) {lpx}"
            );
        }
    }

    #[test]
    fn toy_closed_forms_match_finite_differences() {
        check_model(&Toy::new(1), 11);
        check_model(&Toy::with_perturbation(2, 0.03), 12);
    }

    #[test]
    fn ppca_closed_forms_match_finite_differences() {
        check_model(&Ppca::new(3), 13);
        let cfg = PpcaConfig {
            perturb_sd: 0.2,
            ..PpcaConfig::default()
        };
        check_model(&Ppca::with_config(4, &cfg), 14);
    }

    #[test]
    fn toy_posterior_identity() {
        // log p(x) = log p(x, z) - log p(z | x) for every z, with the known posterior
        // N((x + mu) / 2, I / 2): an independent check of exact_log_px.
        let toy = Toy::new(5);
        let x = &toy.data()[0];
        let mu = toy.theta();
        let pm: Vec<f64> = x.iter().zip(&mu).map(|(a, b)| 0.5 * (a + b)).collect();
        let psd = vec![0.5f64.sqrt(); x.len()];
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        for _ in 0..5 {
            let mut z = vec![0.0; toy.z_dim()];
            fill_std_normals(&mut rng, &mut z);
            let v = toy.log_joint(x, &z) - diag_normal_logpdf(&z, &pm, &psd);
            assert!((v - toy.exact_log_px(x)).abs() < 1e-10);
        }
    }

    #[test]
    fn ppca_posterior_identity() {
        // log p(x) = log p(x, z) - log N(z; M^-1 W^T (x - b) / s^2, M^-1), M = I + W^T W / s^2.
        let m = Ppca::new(7);
        let (dx, dz) = (m.x_dim(), m.z_dim());
        let x = &m.data()[1];
        let s2 = m.noise_sd() * m.noise_sd();
        let w = m.w();
        let mut prec = vec![0.0; dz * dz];
        for i in 0..dz {
            for j in 0..dz {
                let mut v = if i == j { 1.0 } else { 0.0 };
                for k in 0..dx {
                    v += w[k * dz + i] * w[k * dz + j] / s2;
                }
                prec[i * dz + j] = v;
            }
        }
        let l = cholesky(&prec, dz).unwrap();
        let rhs: Vec<f64> = (0..dz)
            .map(|i| {
                (0..dx)
                    .map(|k| w[k * dz + i] * (x[k] - m.b()[k]) / s2)
                    .sum()
            })
            .collect();
        let mean = cholesky_solve(&l, dz, &rhs);
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let mut z = vec![0.0; dz];
        fill_std_normals(&mut rng, &mut z);
        // log N(z; mean, M^-1) = -d/2 ln 2pi + 1/2 ln|M| - 1/2 (z - mean)^T M (z - mean).
        let dzv: Vec<f64> = z.iter().zip(&mean).map(|(a, b)| a - b).collect();
        let mut quad = 0.0;
        for i in 0..dz {
            for j in 0..dz {
                quad += dzv[i] * prec[i * dz + j] * dzv[j];
            }
        }
        let log_post = -0.5 * dz as f64 * LN_2PI + 0.5 * cholesky_logdet(&l, dz) - 0.5 * quad;
        let v = m.log_joint(x, &z) - log_post;
        assert!(
            (v - m.exact_log_px(x)).abs() < 1e-9,
            "{v} vs {}",
            m.exact_log_px(x)
        );
    }

    #[test]
    fn normals_have_unit_moments() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut v = vec![0.0; 200_001];
        fill_std_normals(&mut rng, &mut v);
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
        // 6-sigma bounds: SE(mean) = 1/sqrt(n), SE(var) = sqrt(2/n).
        assert!(mean.abs() < 6.0 / n.sqrt(), "{mean}");
        assert!((var - 1.0).abs() < 6.0 * (2.0 / n).sqrt(), "{var}");
        let x = std_normal(&mut rng);
        assert!(x.is_finite());
    }
}
