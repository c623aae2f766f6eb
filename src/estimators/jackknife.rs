//! Jackknife variational inference: JVI and JVI-DReG.
//!
//! Nowozin, "Debiasing Evidence Approximations: On Importance-weighted Autoencoders and
//! Jackknife Variational Inference", ICLR 2018. The first-order jackknife removes the
//! `O(1/N)` bias of the IWAE bound:
//!
//! ```text
//! J = N L_N - (N - 1) mean_i L_{N-1}^(-i),      L_S = logsumexp(l_S) - ln |S|
//! ```
//!
//! where `L_{N-1}^(-i)` is the IWAE bound of all samples but `i`. With `w = softmax(l)` and
//! `w^(-i)` the leave-one-out softmax (over every sample except `i`), the gradient is
//!
//! ```text
//! dJ/dl_n = N w_n - (N - 1)/N sum_{i != n} w_n^(-i)
//! ```
//!
//! JVI uses it for all three pieces (`a = b = c`). JVI-DReG applies Tucker et al.'s (2019)
//! double reparameterisation to each IWAE bound in the combination: the bound over a set
//! `S` contributes `w_S^2` path weight, so
//!
//! ```text
//! b_n = N w_n^2 - (N - 1)/N sum_{i != n} (w_n^(-i))^2,      c_n = 0.
//! ```
//!
//! # Numerics
//!
//! The leave-one-out quantities are computed from the log-weights, never as
//! `w_n / (1 - w_i)`, which loses everything when one weight is ~1. With `m = max l`,
//! `e_j = exp(l_j - m)`, `S = sum_j e_j`, the leave-one-out sum `S_{-i} = S - e_i` is
//! well-conditioned for every `i` except the arg-max `k` (for `i != k`, `e_i <= e_k`, so
//! `S_{-i} >= S / 2`). The arg-max's leave-one-out softmax is recomputed directly, shifted
//! by the largest remaining log-weight. This makes a row `O(N)` (not `O(N^2)`) and exact to
//! a few ulps; the tests compare it with an `O(N^2)` direct evaluation.

use super::max_nan;

/// JVI (Nowozin 2018): `a = b = c = dJ/dl`; returns `J`.
pub fn jvi(l: &[f64], a: &mut [f64], b: &mut [f64], c: &mut [f64]) -> f64 {
    let obj = jackknife(l, a, None);
    b.copy_from_slice(a);
    c.copy_from_slice(a);
    obj
}

/// JVI-DReG: `a = dJ/dl`, `b = N w^2 - (N-1)/N sum_{i != n} (w^(-i))^2`, `c = 0`; returns `J`.
pub fn jvi_dreg(l: &[f64], a: &mut [f64], b: &mut [f64], c: &mut [f64]) -> f64 {
    let obj = jackknife(l, a, Some(b));
    c.fill(0.0);
    obj
}

/// The jackknife objective `J` alone (same numerics as [`jvi`]).
pub fn jvi_objective(l: &[f64]) -> f64 {
    let n = l.len();
    if n < 2 {
        return super::iwae_bound(l);
    }
    let p = Prepared::new(l);
    p.objective(l)
}

/// Shared per-row quantities (see the module docs, "Numerics").
struct Prepared {
    /// Global maximum `m` (`-inf` when every entry is `-inf`).
    m: f64,
    /// Every entry is `-inf`: treated as all log-weights equal (uniform weights).
    all_neg_inf: bool,
    /// Index of the arg-max.
    k: usize,
    /// `S = sum_j exp(l_j - m)`.
    s: f64,
    /// Shift for the arg-max's leave-one-out set: `max_{j != k} l_j`.
    m2: f64,
    /// The remaining samples are all `-inf`: their leave-one-out softmax is uniform.
    rest_neg_inf: bool,
    /// `S2 = sum_{j != k} exp(l_j - m2)`.
    s2: f64,
}

impl Prepared {
    fn new(l: &[f64]) -> Self {
        let n = l.len();
        let m = max_nan(l);
        let all_neg_inf = m == f64::NEG_INFINITY;
        // First arg-max (0 when all -inf; NaN/+inf rows are handled by the caller).
        let k = l.iter().position(|&x| x == m).unwrap_or(0);
        let e = |x: f64| if all_neg_inf { 1.0 } else { (x - m).exp() };
        let s: f64 = l.iter().map(|&x| e(x)).sum();
        let m2 = l
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != k)
            .fold(f64::NEG_INFINITY, |acc, (_, &x)| acc.max(x));
        let rest_neg_inf = m2 == f64::NEG_INFINITY;
        let s2 = if rest_neg_inf {
            (n - 1) as f64
        } else {
            l.iter()
                .enumerate()
                .filter(|&(j, _)| j != k)
                .map(|(_, &x)| (x - m2).exp())
                .sum()
        };
        Prepared {
            m,
            all_neg_inf,
            k,
            s,
            m2,
            rest_neg_inf,
            s2,
        }
    }

    /// `exp(l_j - m)` with the all-`-inf` convention.
    #[inline]
    fn e(&self, x: f64) -> f64 {
        if self.all_neg_inf {
            1.0
        } else {
            (x - self.m).exp()
        }
    }

    /// Leave-`k`-out softmax weight of a sample with log-weight `x` (`x` not the arg-max).
    #[inline]
    fn w_loo_k(&self, x: f64) -> f64 {
        if self.rest_neg_inf {
            1.0 / self.s2
        } else {
            (x - self.m2).exp() / self.s2
        }
    }

    /// `ln S_{-k}` on the global scale `m`.
    fn ln_s_loo_k(&self) -> f64 {
        if self.all_neg_inf {
            self.s2.ln()
        } else {
            // -inf when all the others are -inf (then J = +inf).
            self.m2 - self.m + self.s2.ln()
        }
    }

    /// `J = N L_N - (N-1)/N sum_i L^(-i)`, with the common shift `m` taken out so that large
    /// log-weights do not cancel.
    fn objective(&self, l: &[f64]) -> f64 {
        let n = l.len() as f64;
        let mut sum_ln = self.ln_s_loo_k();
        for (i, &x) in l.iter().enumerate() {
            if i != self.k {
                sum_ln += (self.s - self.e(x)).ln();
            }
        }
        self.m + n * (self.s.ln() - n.ln()) - (n - 1.0) / n * (sum_ln - n * (n - 1.0).ln())
    }
}

/// Writes `dJ/dl` into `a` and, when given, the JVI-DReG path weights into `b`; returns `J`.
fn jackknife(l: &[f64], a: &mut [f64], b: Option<&mut [f64]>) -> f64 {
    let n = l.len();
    if n < 2 {
        // Undefined (callers validate `min_samples`); the N -> 1 form of every formula is
        // IWAE / IWAE-DReG with one sample: a = b = 1, J = l_0.
        a.fill(1.0);
        if let Some(b) = b {
            b.fill(1.0);
        }
        return super::iwae_bound(l);
    }
    let m = max_nan(l);
    if m.is_nan() || m == f64::INFINITY {
        a.fill(f64::NAN);
        if let Some(b) = b {
            b.fill(f64::NAN);
        }
        return f64::NAN;
    }
    let p = Prepared::new(l);
    let nf = n as f64;
    let scale = (nf - 1.0) / nf;

    // T1 = sum_{i != k} 1/S_{-i}, T2 = sum_{i != k} 1/S_{-i}^2. Every term lies in
    // [1/S, 2/S] (resp. its square), so removing one of them below does not cancel badly.
    let mut t1 = 0.0;
    let mut t2 = 0.0;
    for (i, &x) in l.iter().enumerate() {
        if i != p.k {
            let inv = 1.0 / (p.s - p.e(x));
            t1 += inv;
            t2 += inv * inv;
        }
    }
    let inv_s = 1.0 / p.s;
    match b {
        None => {
            for (j, (aj, &x)) in a.iter_mut().zip(l).enumerate() {
                let e = p.e(x);
                let loo = if j == p.k {
                    e * t1
                } else {
                    e * (t1 - 1.0 / (p.s - e)) + p.w_loo_k(x)
                };
                *aj = nf * (e * inv_s) - scale * loo;
            }
        }
        Some(b) => {
            for (j, ((aj, bj), &x)) in a.iter_mut().zip(b.iter_mut()).zip(l).enumerate() {
                let e = p.e(x);
                let w = e * inv_s;
                let (loo, loo2) = if j == p.k {
                    (e * t1, e * e * t2)
                } else {
                    let inv = 1.0 / (p.s - e);
                    let wk = p.w_loo_k(x);
                    (e * (t1 - inv) + wk, e * e * (t2 - inv * inv) + wk * wk)
                };
                *aj = nf * w - scale * loo;
                *bj = nf * (w * w) - scale * loo2;
            }
        }
    }
    p.objective(l)
}

#[cfg(test)]
mod tests {
    use super::super::{iwae_bound, logsumexp, softmax_into, Estimator, EstimatorKind};
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random_l(rng: &mut ChaCha8Rng, n: usize, scale: f64, offset: f64) -> Vec<f64> {
        (0..n)
            .map(|_| scale * (rng.random::<f64>() - 0.5) + offset)
            .collect()
    }

    fn without(l: &[f64], i: usize) -> Vec<f64> {
        l.iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, &x)| x)
            .collect()
    }

    /// Textbook J: N L_N - (N-1)/N sum_i L_{N-1}^(-i).
    fn naive_j(l: &[f64]) -> f64 {
        let n = l.len() as f64;
        let loo: f64 = (0..l.len()).map(|i| iwae_bound(&without(l, i))).sum();
        n * iwae_bound(l) - (n - 1.0) / n * loo
    }

    /// O(N^2) direct evaluation: leave-one-out softmaxes from logsumexp of each subset.
    fn direct(l: &[f64]) -> (Vec<f64>, Vec<f64>, f64) {
        let j = naive_j(l);
        // The coefficients are shift invariant; shifting by the maximum first keeps
        // `l - lse` free of the rounding error of large offsets.
        let m = l.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x));
        let l: Vec<f64> = l.iter().map(|&x| x - m).collect();
        let l = &l[..];
        let n = l.len();
        let nf = n as f64;
        let lse = logsumexp(l);
        let mut a = vec![0.0; n];
        let mut b = vec![0.0; n];
        for j in 0..n {
            let w = (l[j] - lse).exp();
            a[j] = nf * w;
            b[j] = nf * w * w;
        }
        for i in 0..n {
            let sub = without(l, i);
            let mut w = vec![0.0; n - 1];
            softmax_into(&sub, &mut w);
            let others = (0..n).filter(|&j| j != i);
            for (j, wj) in others.zip(&w) {
                a[j] -= (nf - 1.0) / nf * wj;
                b[j] -= (nf - 1.0) / nf * wj * wj;
            }
        }
        (a, b, j)
    }

    fn row(kind: EstimatorKind, l: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>, f64) {
        let n = l.len();
        let (mut a, mut b, mut c) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        let obj = Estimator::new(kind, 0.0).coefficients_row(l, &mut a, &mut b, &mut c);
        (a, b, c, obj)
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let h = 1e-5;
        for n in [2usize, 3, 4, 7, 16] {
            for scale in [0.5, 4.0, 12.0] {
                let l = random_l(&mut rng, n, scale, -3.0);
                let (a, b, c, obj) = row(EstimatorKind::Jvi, &l);
                assert_eq!(a, b);
                assert_eq!(a, c);
                assert!((obj - naive_j(&l)).abs() < 1e-10);
                for j in 0..n {
                    let mut lp = l.clone();
                    let mut lm = l.clone();
                    lp[j] += h;
                    lm[j] -= h;
                    let fd = (naive_j(&lp) - naive_j(&lm)) / (2.0 * h);
                    assert!(
                        (a[j] - fd).abs() < 1e-7,
                        "n={n} scale={scale} j={j}: {} vs fd {fd}",
                        a[j]
                    );
                }
            }
        }
    }

    #[test]
    fn objective_matches_naive_formula() {
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        for n in [2usize, 3, 5, 10, 64] {
            for (scale, offset) in [(1.0, 0.0), (10.0, -90.0), (30.0, 500.0)] {
                let l = random_l(&mut rng, n, scale, offset);
                let want = naive_j(&l);
                let tol = 1e-12 * (1.0 + want.abs()) * n as f64;
                let got = row(EstimatorKind::Jvi, &l).3;
                assert!((got - want).abs() < tol, "n={n}: {got} vs {want}");
                assert_eq!(row(EstimatorKind::JviDreg, &l).3, got);
                assert_eq!(jvi_objective(&l), got);
            }
        }
        // Hand value: l = (0, 0): J = 2 * 0 - 1/2 * (0 + 0) = 0; with l = (ln 3, 0):
        // L_2 = ln 2, L^(-0) = 0, L^(-1) = ln 3, J = 2 ln 2 - (ln 3)/2.
        assert!(row(EstimatorKind::Jvi, &[0.0, 0.0]).3.abs() < 1e-15);
        let j = row(EstimatorKind::Jvi, &[3f64.ln(), 0.0]).3;
        assert!((j - (2.0 * 2f64.ln() - 0.5 * 3f64.ln())).abs() < 1e-15);
    }

    /// JVI-DReG's path weights equal the formula with w_n^(-i) = w_n / (1 - w_i) on
    /// well-conditioned inputs.
    #[test]
    fn dreg_weights_match_naive_formula() {
        let mut rng = ChaCha8Rng::seed_from_u64(13);
        for n in [2usize, 3, 5, 9, 40] {
            for _ in 0..5 {
                let l = random_l(&mut rng, n, 3.0, 1.0);
                let mut w = vec![0.0; n];
                softmax_into(&l, &mut w);
                let nf = n as f64;
                let (a, b, c, _) = row(EstimatorKind::JviDreg, &l);
                let ja = row(EstimatorKind::Jvi, &l).0;
                assert_eq!(a, ja);
                assert!(c.iter().all(|&x| x == 0.0));
                for j in 0..n {
                    let mut s1 = 0.0;
                    let mut s2 = 0.0;
                    for i in (0..n).filter(|&i| i != j) {
                        let wl = w[j] / (1.0 - w[i]);
                        s1 += wl;
                        s2 += wl * wl;
                    }
                    let want_a = nf * w[j] - (nf - 1.0) / nf * s1;
                    let want_b = nf * w[j] * w[j] - (nf - 1.0) / nf * s2;
                    assert!((a[j] - want_a).abs() < 1e-12, "a n={n}");
                    assert!(
                        (b[j] - want_b).abs() < 1e-12,
                        "b n={n}: {} vs {want_b}",
                        b[j]
                    );
                }
            }
        }
        // N = 2: w^(-i) = 1, so b_n = 2 w_n^2 - 1/2.
        let l = [0.3, -0.4];
        let mut w = [0.0; 2];
        softmax_into(&l, &mut w);
        let b = row(EstimatorKind::JviDreg, &l).1;
        for j in 0..2 {
            assert!((b[j] - (2.0 * w[j] * w[j] - 0.5)).abs() < 1e-15);
        }
    }

    /// The O(N) evaluation agrees with an O(N^2) direct one, including where one weight is
    /// ~1 and `w_n / (1 - w_i)` would be useless.
    #[test]
    fn fast_path_matches_direct_on_extreme_inputs() {
        let mut rng = ChaCha8Rng::seed_from_u64(14);
        let mut cases: Vec<Vec<f64>> = vec![
            vec![0.0, -800.0, -1600.0],
            vec![-1600.0, -800.0, 0.0],
            vec![0.0, -40.0, -41.0, -45.0],
            vec![0.0, -40.0],
            vec![5.0, 5.0, -60.0, -60.5],
            vec![1e5, 1e5 - 1e-6, 1e5 - 30.0],
            vec![0.0, f64::NEG_INFINITY, -1.0, -2.0],
            vec![-1e4, 0.0, 3.0, -1e300],
        ];
        for n in [2usize, 3, 8, 30] {
            for scale in [1.0, 60.0, 1500.0] {
                cases.push(random_l(&mut rng, n, scale, -50.0));
            }
            // One dominating sample among nearly equal ones.
            let mut l = random_l(&mut rng, n, 1e-3, -200.0);
            l[n / 2] = 0.0;
            cases.push(l);
        }
        for l in &cases {
            let (da, db, dj) = direct(l);
            let (a, b, _, j) = row(EstimatorKind::JviDreg, l);
            let nf = l.len() as f64;
            for k in 0..l.len() {
                assert!(
                    (a[k] - da[k]).abs() < 1e-13 * nf,
                    "{l:?} a[{k}]: {} vs {}",
                    a[k],
                    da[k]
                );
                assert!(
                    (b[k] - db[k]).abs() < 1e-13 * nf,
                    "{l:?} b[{k}]: {} vs {}",
                    b[k],
                    db[k]
                );
            }
            if dj.is_finite() {
                assert!(
                    (j - dj).abs() < 1e-12 * (1.0 + dj.abs()),
                    "{l:?}: J {j} vs {dj}"
                );
            }
            assert!(j.is_finite());
        }
    }

    #[test]
    fn shift_equivariance_and_gradient_sum() {
        // J(l + t) = J(l) + t, hence sum_n dJ/dl_n = 1.
        let mut rng = ChaCha8Rng::seed_from_u64(15);
        for n in [2usize, 3, 6, 100] {
            for scale in [1.0, 100.0] {
                let l = random_l(&mut rng, n, scale, 0.0);
                let (a, _, _, j) = row(EstimatorKind::Jvi, &l);
                let s: f64 = a.iter().sum();
                assert!((s - 1.0).abs() < 1e-11, "n={n}: sum {s}");
                let t = 1234.5;
                let shifted: Vec<f64> = l.iter().map(|x| x + t).collect();
                let (a2, _, _, j2) = row(EstimatorKind::Jvi, &shifted);
                assert!((j2 - j - t).abs() < 1e-9, "{j2} vs {j} + {t}");
                for k in 0..n {
                    assert!((a2[k] - a[k]).abs() < 1e-12);
                }
            }
        }
        // Equal log-weights (and all -inf): a = 1/N, JVI-DReG b = 0.
        for l in [vec![-7.0; 5], vec![f64::NEG_INFINITY; 5]] {
            let (a, b, _, _) = row(EstimatorKind::JviDreg, &l);
            for k in 0..5 {
                assert!((a[k] - 0.2).abs() < 1e-15, "{a:?}");
                assert!(b[k].abs() < 1e-15, "{b:?}");
            }
        }
    }
}
