//! A two-stochastic-layer linear-Gaussian model with closed-form log p(x) and gradient: the
//! exact counterpart of `--model hvae` (`--model hgauss`).

use super::linalg::{cholesky, cholesky_logdet, cholesky_solve};
use super::{fill_std_normals, LN_2PI};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// ```text
/// z2 ~ N(0, I_d2)     z1 | z2 ~ N(A z2 + a, I_d1)     x | z1 ~ N(B z1 + b, s^2 I_D)
/// theta = (A: d1 x d2 row-major, a: d1, B: D x d1 row-major, b: D)   (s fixed)
/// ```
///
/// Marginally `z1 ~ N(a, M)` with `M = A A^T + I` and `x ~ N(B a + b, Sigma)` with
/// `Sigma = B M B^T + s^2 I`. With `r = x - B a - b`, `v = Sigma^-1 r` and
/// `G = (v v^T - Sigma^-1) / 2` (the gradient of log p(x) with respect to Sigma):
///
/// ```text
/// log p(x)   = -D/2 ln(2 pi) - 1/2 ln|Sigma| - 1/2 r^T v
/// grad_b     = v                    grad_a = B^T v
/// grad_B     = v a^T + 2 G B M      grad_A = 2 B^T G B A
/// ```
///
/// (`dSigma = dB M B^T + B M dB^T + B (dA A^T + A dA^T) B^T`, and `G` is symmetric.) The
/// unit tests check them against central finite differences.
#[derive(Clone, Debug, PartialEq)]
pub struct HGauss {
    dx: usize,
    d1: usize,
    d2: usize,
    s: f64,
    a_mat: Vec<f64>,
    a: Vec<f64>,
    b_mat: Vec<f64>,
    b: Vec<f64>,
    data: Vec<Vec<f64>>,
}

impl HGauss {
    /// Observed dimension, z1's and z2's, the noise sd and the number of datapoints of
    /// [`HGauss::new`].
    pub const SHAPE: (usize, usize, usize, f64, usize) = (6, 3, 2, 1.0, 64);

    /// Deterministic in `seed` (ChaCha8): a generating theta with standard-normal entries
    /// (A scaled by 0.7 so z1's prior stays well conditioned), then the datapoints drawn from
    /// it, z2, z1, x in turn.
    pub fn new(seed: u64) -> HGauss {
        let (dx, d1, d2, s, n) = Self::SHAPE;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut draw = |len: usize, scale: f64| {
            let mut v = vec![0.0; len];
            fill_std_normals(&mut rng, &mut v);
            v.iter_mut().for_each(|x| *x *= scale);
            v
        };
        let (a_mat, a, b_mat, b) = (
            draw(d1 * d2, 0.7),
            draw(d1, 1.0),
            draw(dx * d1, 1.0),
            draw(dx, 1.0),
        );
        let mut m = HGauss {
            dx,
            d1,
            d2,
            s,
            a_mat,
            a,
            b_mat,
            b,
            data: Vec::new(),
        };
        m.data = (0..n)
            .map(|_| {
                let z2 = draw(d2, 1.0);
                let e1 = draw(d1, 1.0);
                let z1: Vec<f64> = (0..d1)
                    .map(|i| {
                        m.a[i] + e1[i] + (0..d2).map(|j| m.a_mat[i * d2 + j] * z2[j]).sum::<f64>()
                    })
                    .collect();
                let ex = draw(dx, s);
                (0..dx)
                    .map(|k| {
                        m.b[k] + ex[k] + (0..d1).map(|i| m.b_mat[k * d1 + i] * z1[i]).sum::<f64>()
                    })
                    .collect()
            })
            .collect();
        m
    }

    /// A model from explicit parts (`a_mat` d1 x d2, `b_mat` D x d1, row-major).
    pub fn from_parts(
        noise_sd: f64,
        a_mat: Vec<f64>,
        a: Vec<f64>,
        b_mat: Vec<f64>,
        b: Vec<f64>,
        data: Vec<Vec<f64>>,
    ) -> HGauss {
        let (dx, d1) = (b.len(), a.len());
        let d2 = a_mat.len() / d1.max(1);
        assert!(noise_sd > 0.0 && d1 > 0 && d2 > 0, "invalid HGauss shape");
        assert_eq!(a_mat.len(), d1 * d2, "A must be d1 x d2");
        assert_eq!(b_mat.len(), dx * d1, "B must be D x d1");
        HGauss {
            dx,
            d1,
            d2,
            s: noise_sd,
            a_mat,
            a,
            b_mat,
            b,
            data,
        }
    }

    pub fn x_dim(&self) -> usize {
        self.dx
    }
    /// (z1's dimension, z2's).
    pub fn z_dims(&self) -> (usize, usize) {
        (self.d1, self.d2)
    }
    pub fn noise_sd(&self) -> f64 {
        self.s
    }
    pub fn data(&self) -> &[Vec<f64>] {
        &self.data
    }
    /// (A, a, B, b).
    pub fn parts(&self) -> (&[f64], &[f64], &[f64], &[f64]) {
        (&self.a_mat, &self.a, &self.b_mat, &self.b)
    }
    /// theta flattened as (A, a, B, b).
    pub fn theta(&self) -> Vec<f64> {
        [&self.a_mat[..], &self.a, &self.b_mat, &self.b].concat()
    }
    pub fn set_theta(&mut self, theta: &[f64]) {
        let (n1, n2, n3) = (self.d1 * self.d2, self.d1, self.dx * self.d1);
        assert_eq!(theta.len(), n1 + n2 + n3 + self.dx, "theta length");
        self.a_mat.copy_from_slice(&theta[..n1]);
        self.a.copy_from_slice(&theta[n1..n1 + n2]);
        self.b_mat.copy_from_slice(&theta[n1 + n2..n1 + n2 + n3]);
        self.b.copy_from_slice(&theta[n1 + n2 + n3..]);
    }

    /// M = A A^T + I [d1 x d1].
    fn m(&self) -> Vec<f64> {
        let (d1, d2) = (self.d1, self.d2);
        let mut m = vec![0.0; d1 * d1];
        for i in 0..d1 {
            for j in 0..d1 {
                let aat: f64 = (0..d2)
                    .map(|k| self.a_mat[i * d2 + k] * self.a_mat[j * d2 + k])
                    .sum();
                m[i * d1 + j] = aat + if i == j { 1.0 } else { 0.0 };
            }
        }
        m
    }

    /// (Sigma's Cholesky factor, Sigma^-1, M, r = x - B a - b, v = Sigma^-1 r).
    #[allow(clippy::type_complexity)]
    fn pieces(&self, x: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
        let (dx, d1) = (self.dx, self.d1);
        let m = self.m();
        // B M [D x d1], then Sigma = (B M) B^T + s^2 I.
        let bm: Vec<f64> = (0..dx * d1)
            .map(|ki| {
                let (k, i) = (ki / d1, ki % d1);
                (0..d1)
                    .map(|j| self.b_mat[k * d1 + j] * m[j * d1 + i])
                    .sum()
            })
            .collect();
        let mut sigma = vec![0.0; dx * dx];
        for k in 0..dx {
            for l in 0..dx {
                let v: f64 = (0..d1)
                    .map(|i| bm[k * d1 + i] * self.b_mat[l * d1 + i])
                    .sum();
                sigma[k * dx + l] = v + if k == l { self.s * self.s } else { 0.0 };
            }
        }
        let chol = cholesky(&sigma, dx).expect("B M B^T + s^2 I is positive definite");
        let mut inv = vec![0.0; dx * dx];
        for k in 0..dx {
            let mut unit = vec![0.0; dx];
            unit[k] = 1.0;
            for (l, v) in cholesky_solve(&chol, dx, &unit).into_iter().enumerate() {
                inv[l * dx + k] = v;
            }
        }
        let r: Vec<f64> = (0..dx)
            .map(|k| {
                x[k] - self.b[k]
                    - (0..d1)
                        .map(|i| self.b_mat[k * d1 + i] * self.a[i])
                        .sum::<f64>()
            })
            .collect();
        let v = cholesky_solve(&chol, dx, &r);
        (chol, inv, m, r, v)
    }

    /// The exact marginal log p(x).
    pub fn exact_log_px(&self, x: &[f64]) -> f64 {
        let (chol, _, _, r, v) = self.pieces(x);
        let quad: f64 = r.iter().zip(&v).map(|(a, b)| a * b).sum();
        -0.5 * (self.dx as f64 * LN_2PI + cholesky_logdet(&chol, self.dx) + quad)
    }

    /// The exact grad_theta log p(x), laid out as [`HGauss::theta`].
    pub fn exact_grad_theta(&self, x: &[f64]) -> Vec<f64> {
        let (dx, d1, d2) = (self.dx, self.d1, self.d2);
        let (_, inv, m, _, v) = self.pieces(x);
        // G = (v v^T - Sigma^-1) / 2.
        let g: Vec<f64> = (0..dx * dx)
            .map(|kl| 0.5 * (v[kl / dx] * v[kl % dx] - inv[kl]))
            .collect();
        // GB = G B [D x d1]; BtGB = B^T G B [d1 x d1].
        let gb: Vec<f64> = (0..dx * d1)
            .map(|ki| {
                let (k, i) = (ki / d1, ki % d1);
                (0..dx)
                    .map(|l| g[k * dx + l] * self.b_mat[l * d1 + i])
                    .sum()
            })
            .collect();
        let btgb: Vec<f64> = (0..d1 * d1)
            .map(|ij| {
                let (i, j) = (ij / d1, ij % d1);
                (0..dx)
                    .map(|k| self.b_mat[k * d1 + i] * gb[k * d1 + j])
                    .sum()
            })
            .collect();
        let grad_a_mat: Vec<f64> = (0..d1 * d2)
            .map(|ij| {
                let (i, j) = (ij / d2, ij % d2);
                2.0 * (0..d1)
                    .map(|k| btgb[i * d1 + k] * self.a_mat[k * d2 + j])
                    .sum::<f64>()
            })
            .collect();
        let grad_a: Vec<f64> = (0..d1)
            .map(|i| (0..dx).map(|k| self.b_mat[k * d1 + i] * v[k]).sum())
            .collect();
        let grad_b_mat: Vec<f64> = (0..dx * d1)
            .map(|ki| {
                let (k, i) = (ki / d1, ki % d1);
                v[k] * self.a[i]
                    + 2.0 * (0..d1).map(|j| gb[k * d1 + j] * m[j * d1 + i]).sum::<f64>()
            })
            .collect();
        [grad_a_mat, grad_a, grad_b_mat, v].concat()
    }
}

/// The inverse of a symmetric positive definite n x n matrix.
fn inv_spd(m: &[f64], n: usize) -> Vec<f64> {
    let l = cholesky(m, n).expect("positive definite");
    let mut inv = vec![0.0; n * n];
    for k in 0..n {
        let mut unit = vec![0.0; n];
        unit[k] = 1.0;
        for (r, v) in cholesky_solve(&l, n, &unit).into_iter().enumerate() {
            inv[r * n + k] = v;
        }
    }
    inv
}

impl HGauss {
    /// The amortised encoders closest to the exact posterior p(z1 | x) p(z2 | z1) in the
    /// linear-Gaussian family with diagonal covariances: the exact posterior means (linear in
    /// x and in z1) and the marginal posterior sds times `sd_inflation` (> 1 keeps the
    /// importance weights' variance finite). Returns (C [d1 x D], c, log_sd1, E [d2 x d1], e,
    /// log_sd2): q(z1 | x) = N(C x + c, diag(exp(2 log_sd1))), q(z2 | z1) = N(E z1 + e, ...).
    ///
    /// p(z1 | x): precision M^-1 + B^T B / s^2 =: S1^-1, mean S1 (M^-1 a + B^T (x - b) / s^2).
    /// p(z2 | z1): precision I + A^T A =: S2^-1, mean S2 A^T (z1 - a).
    #[allow(clippy::type_complexity)]
    pub fn posterior_encoders(
        &self,
        sd_inflation: f64,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
        let (dx, d1, d2) = (self.dx, self.d1, self.d2);
        let s2 = self.s * self.s;
        let m_inv = inv_spd(&self.m(), d1);
        let mut p1 = m_inv.clone();
        for i in 0..d1 {
            for j in 0..d1 {
                p1[i * d1 + j] += (0..dx)
                    .map(|k| self.b_mat[k * d1 + i] * self.b_mat[k * d1 + j])
                    .sum::<f64>()
                    / s2;
            }
        }
        let s1 = inv_spd(&p1, d1);
        // C = S1 B^T / s^2; c = S1 (M^-1 a - B^T b / s^2).
        let c_mat: Vec<f64> = (0..d1 * dx)
            .map(|ik| {
                let (i, k) = (ik / dx, ik % dx);
                (0..d1)
                    .map(|j| s1[i * d1 + j] * self.b_mat[k * d1 + j])
                    .sum::<f64>()
                    / s2
            })
            .collect();
        let rhs: Vec<f64> = (0..d1)
            .map(|j| {
                (0..d1).map(|l| m_inv[j * d1 + l] * self.a[l]).sum::<f64>()
                    - (0..dx)
                        .map(|k| self.b_mat[k * d1 + j] * self.b[k])
                        .sum::<f64>()
                        / s2
            })
            .collect();
        let c: Vec<f64> = (0..d1)
            .map(|i| (0..d1).map(|j| s1[i * d1 + j] * rhs[j]).sum())
            .collect();
        let mut p2 = vec![0.0; d2 * d2];
        for i in 0..d2 {
            for j in 0..d2 {
                p2[i * d2 + j] = (0..d1)
                    .map(|k| self.a_mat[k * d2 + i] * self.a_mat[k * d2 + j])
                    .sum::<f64>()
                    + if i == j { 1.0 } else { 0.0 };
            }
        }
        let sv2 = inv_spd(&p2, d2);
        // E = S2 A^T; e = -E a.
        let e_mat: Vec<f64> = (0..d2 * d1)
            .map(|ij| {
                let (i, j) = (ij / d1, ij % d1);
                (0..d2)
                    .map(|l| sv2[i * d2 + l] * self.a_mat[j * d2 + l])
                    .sum()
            })
            .collect();
        let e: Vec<f64> = (0..d2)
            .map(|i| -(0..d1).map(|j| e_mat[i * d1 + j] * self.a[j]).sum::<f64>())
            .collect();
        let log_sd = |s: &[f64], n: usize| -> Vec<f64> {
            (0..n)
                .map(|i| 0.5 * s[i * n + i].ln() + sd_inflation.ln())
                .collect()
        };
        (c_mat, c, log_sd(&s1, d1), e_mat, e, log_sd(&sv2, d2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// log p(x) against a Monte-Carlo-free check: the joint integrated by hand is hard, so
    /// compare with the PPCA form it reduces to when A = 0 (then x ~ N(B a + b, B B^T + s^2 I)),
    /// and the gradient against central finite differences at a generic theta.
    #[test]
    fn closed_forms_match_ppca_and_finite_differences() {
        let m = HGauss::new(4);
        let x = m.data()[0].clone();
        // A = 0: PPCA with W = B and b' = B a + b.
        let mut flat = m.clone();
        let mut th = flat.theta();
        let (d1, d2) = flat.z_dims();
        th[..d1 * d2].fill(0.0);
        flat.set_theta(&th);
        let (_, a, bm, b) = flat.parts();
        let dx = flat.x_dim();
        let shifted: Vec<f64> = (0..dx)
            .map(|k| b[k] + (0..d1).map(|i| bm[k * d1 + i] * a[i]).sum::<f64>())
            .collect();
        let ppca = crate::exact::Ppca::from_parts(
            flat.noise_sd(),
            bm.to_vec(),
            shifted,
            vec![0.0; d1 * dx],
            vec![0.0; d1],
            vec![0.0; d1],
            Vec::new(),
        );
        let want = crate::exact::ExactModel::exact_log_px(&ppca, &x);
        assert!(
            (flat.exact_log_px(&x) - want).abs() < 1e-10,
            "{} vs {want}",
            flat.exact_log_px(&x)
        );

        let theta = m.theta();
        let h = 1e-6;
        let mut worst = 0.0f64;
        let got = m.exact_grad_theta(&x);
        for i in 0..theta.len() {
            let mut p = m.clone();
            let mut t = theta.clone();
            t[i] += h;
            p.set_theta(&t);
            let up = p.exact_log_px(&x);
            t[i] -= 2.0 * h;
            p.set_theta(&t);
            let fd = (up - p.exact_log_px(&x)) / (2.0 * h);
            worst = worst.max((fd - got[i]).abs() / (1.0 + fd.abs()));
        }
        println!("worst relative gradient error {worst:e}");
        assert!(worst < 1e-6, "closed-form gradient off by {worst}");
    }
}
