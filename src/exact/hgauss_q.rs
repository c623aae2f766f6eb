//! The exact two-layer model together with its hierarchical encoder, as an [`ExactModel`]
//! whose latent is z = (z1, z2): what the coupled chains need (Fisher's identity on
//! `--model hgauss`). The proposal is q(z1, z2 | x) = q(z1 | x) q(z2 | z1),
//!
//! ```text
//! z1 = C x + c + sd1 * eps1,      z2 = E z1 + e + sd2 * eps2,
//! log q = log N(z1; C x + c, sd1^2) + log N(z2; E z1 + e, sd2^2),
//! ```
//!
//! the same encoders `grad-stats --model hgauss` sets in the backend
//! ([`HGauss::posterior_encoders`]), here in f64. `sample` and `log_q` implement the
//! hierarchy; [`ExactModel::encoder`] can only return a diagonal Gaussian, so it gives q's
//! marginal means and standard deviations (not a proposal: z1 and z2 are correlated under q).

use super::{diag_normal_logpdf, ExactModel, HGauss, LN_2PI};

#[derive(Clone, Debug, PartialEq)]
pub struct HGaussQ {
    model: HGauss,
    /// q(z1 | x) = N(C x + c, diag(sd1^2)); C is d1 x D row-major.
    c_mat: Vec<f64>,
    c: Vec<f64>,
    sd1: Vec<f64>,
    /// q(z2 | z1) = N(E z1 + e, diag(sd2^2)); E is d2 x d1 row-major.
    e_mat: Vec<f64>,
    e: Vec<f64>,
    sd2: Vec<f64>,
}

fn affine(m: &[f64], x: &[f64], b: &[f64]) -> Vec<f64> {
    let n = x.len();
    b.iter()
        .enumerate()
        .map(|(i, bi)| bi + (0..n).map(|j| m[i * n + j] * x[j]).sum::<f64>())
        .collect()
}

impl HGaussQ {
    /// Both encoders at the posterior's means with `sd_inflation` times its marginal sds.
    pub fn at_posterior(model: HGauss, sd_inflation: f64) -> HGaussQ {
        let (c_mat, c, ls1, e_mat, e, ls2) = model.posterior_encoders(sd_inflation);
        let exp = |v: Vec<f64>| v.into_iter().map(f64::exp).collect();
        HGaussQ {
            model,
            c_mat,
            c,
            sd1: exp(ls1),
            e_mat,
            e,
            sd2: exp(ls2),
        }
    }

    pub fn model(&self) -> &HGauss {
        &self.model
    }

    /// (r1 = z1 - A z2 - a, rx = x - B z1 - b).
    fn residuals(&self, x: &[f64], z: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let (d1, _) = self.model.z_dims();
        let (z1, z2) = z.split_at(d1);
        let (a_mat, a, b_mat, b) = self.model.parts();
        let m1 = affine(a_mat, z2, a);
        let mx = affine(b_mat, z1, b);
        (
            z1.iter().zip(&m1).map(|(z, m)| z - m).collect(),
            x.iter().zip(&mx).map(|(x, m)| x - m).collect(),
        )
    }
}

impl ExactModel for HGaussQ {
    fn x_dim(&self) -> usize {
        self.model.x_dim()
    }
    fn z_dim(&self) -> usize {
        let (d1, d2) = self.model.z_dims();
        d1 + d2
    }
    fn theta_len(&self) -> usize {
        self.model.theta().len()
    }
    fn theta(&self) -> Vec<f64> {
        self.model.theta()
    }
    fn set_theta(&mut self, theta: &[f64]) {
        self.model.set_theta(theta)
    }
    fn data(&self) -> &[Vec<f64>] {
        self.model.data()
    }

    /// q's marginal means and standard deviations (see the module docs: not the proposal).
    fn encoder(&self, x: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let (d1, d2) = self.model.z_dims();
        let m1 = affine(&self.c_mat, x, &self.c);
        let m2 = affine(&self.e_mat, &m1, &self.e);
        let sd2: Vec<f64> = (0..d2)
            .map(|i| {
                let v: f64 = (0..d1)
                    .map(|j| (self.e_mat[i * d1 + j] * self.sd1[j]).powi(2))
                    .sum();
                (v + self.sd2[i] * self.sd2[i]).sqrt()
            })
            .collect();
        ([m1, m2].concat(), [self.sd1.clone(), sd2].concat())
    }

    fn log_joint(&self, x: &[f64], z: &[f64]) -> f64 {
        let (d1, _) = self.model.z_dims();
        let s = self.model.noise_sd();
        let (r1, rx) = self.residuals(x, z);
        let sq = |v: &[f64]| v.iter().map(|u| u * u).sum::<f64>();
        -0.5 * (z.len() + x.len()) as f64 * LN_2PI
            - 0.5 * sq(&z[d1..])
            - 0.5 * sq(&r1)
            - x.len() as f64 * s.ln()
            - 0.5 * sq(&rx) / (s * s)
    }

    fn log_joint_grad_theta(&self, x: &[f64], z: &[f64]) -> Vec<f64> {
        let (d1, _) = self.model.z_dims();
        let s2 = self.model.noise_sd().powi(2);
        let (z1, z2) = z.split_at(d1);
        let (r1, rx) = self.residuals(x, z);
        let mut g = Vec::with_capacity(self.theta_len());
        g.extend(r1.iter().flat_map(|r| z2.iter().map(move |v| r * v)));
        g.extend(&r1);
        g.extend(rx.iter().flat_map(|r| z1.iter().map(move |v| r * v / s2)));
        g.extend(rx.iter().map(|r| r / s2));
        g
    }

    fn log_joint_grad_z(&self, x: &[f64], z: &[f64]) -> Vec<f64> {
        let (d1, d2) = self.model.z_dims();
        let s2 = self.model.noise_sd().powi(2);
        let (a_mat, _, b_mat, _) = self.model.parts();
        let (r1, rx) = self.residuals(x, z);
        let g1 = (0..d1).map(|j| {
            -r1[j]
                + (0..rx.len())
                    .map(|k| b_mat[k * d1 + j] * rx[k])
                    .sum::<f64>()
                    / s2
        });
        let g2 =
            (0..d2).map(|k| -z[d1 + k] + (0..d1).map(|i| a_mat[i * d2 + k] * r1[i]).sum::<f64>());
        g1.chain(g2).collect()
    }

    fn exact_log_px(&self, x: &[f64]) -> f64 {
        self.model.exact_log_px(x)
    }
    fn exact_grad_theta(&self, x: &[f64]) -> Vec<f64> {
        self.model.exact_grad_theta(x)
    }

    fn log_q(&self, x: &[f64], z: &[f64]) -> f64 {
        let (d1, _) = self.model.z_dims();
        let (z1, z2) = z.split_at(d1);
        let m1 = affine(&self.c_mat, x, &self.c);
        let m2 = affine(&self.e_mat, z1, &self.e);
        diag_normal_logpdf(z1, &m1, &self.sd1) + diag_normal_logpdf(z2, &m2, &self.sd2)
    }

    fn sample(&self, x: &[f64], eps: &[f64]) -> (Vec<f64>, f64) {
        assert_eq!(eps.len(), self.z_dim(), "eps must have z_dim entries");
        let (d1, _) = self.model.z_dims();
        let m1 = affine(&self.c_mat, x, &self.c);
        let z1: Vec<f64> = (0..d1).map(|i| m1[i] + self.sd1[i] * eps[i]).collect();
        let m2 = affine(&self.e_mat, &z1, &self.e);
        let z2 = m2
            .iter()
            .zip(&self.sd2)
            .zip(&eps[d1..])
            .map(|((m, s), e)| m + s * e);
        let z: Vec<f64> = z1.iter().copied().chain(z2).collect();
        let log_q = -0.5 * eps.len() as f64 * LN_2PI
            - self
                .sd1
                .iter()
                .chain(&self.sd2)
                .map(|s| s.ln())
                .sum::<f64>()
            - 0.5 * eps.iter().map(|e| e * e).sum::<f64>();
        let l = self.log_joint(x, &z) - log_q;
        (z, l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exact::{draw_samples, fill_std_normals};
    use rand::SeedableRng;

    fn fd(at: &[f64], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
        (0..at.len())
            .map(|i| {
                let (mut p, mut m) = (at.to_vec(), at.to_vec());
                p[i] += 1e-5;
                m[i] -= 1e-5;
                (f(&p) - f(&m)) / 2e-5
            })
            .collect()
    }

    fn close(a: &[f64], b: &[f64], tol: f64, what: &str) {
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= tol + 1e-6 * y.abs(),
                "{what}[{i}]: {x} vs {y}"
            );
        }
    }

    #[test]
    fn joint_gradients_sampling_and_the_bound_agree_with_the_closed_forms() {
        let q = HGaussQ::at_posterior(HGauss::new(1), 1.2);
        let x = q.data()[0].clone();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut eps = vec![0.0; q.z_dim()];
        fill_std_normals(&mut rng, &mut eps);
        let (z, l) = q.sample(&x, &eps);
        // log w = log p(x, z) - log q(z | x), with log q from the hierarchy's densities.
        assert!((l - (q.log_joint(&x, &z) - q.log_q(&x, &z))).abs() < 1e-9);
        let theta = q.theta();
        let by_theta = fd(&theta, |t| {
            let mut m = q.clone();
            m.set_theta(t);
            m.log_joint(&x, &z)
        });
        close(
            &q.log_joint_grad_theta(&x, &z),
            &by_theta,
            1e-6,
            "grad_theta",
        );
        close(
            &q.log_joint_grad_z(&x, &z),
            &fd(&z, |z| q.log_joint(&x, z)),
            1e-6,
            "grad_z",
        );
        // log p(x, z) integrates to p(x): the IWAE bound with many samples approaches the
        // exact log p(x) from below.
        let (lw, _) = draw_samples(&q, &x, 20_000, &mut rng);
        let (lb, lpx) = (crate::estimators::iwae_bound(&lw), q.exact_log_px(&x));
        assert!(
            lb <= lpx + 0.02 && lb > lpx - 0.2,
            "IWAE {lb} vs log p(x) {lpx}"
        );
    }
}
