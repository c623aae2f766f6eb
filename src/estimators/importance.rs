//! Importance-weighted estimators: ELBO, IWAE, STL, IWAE-DReG, RWS, RWS-DReG, DReG(alpha).
//!
//! Each function takes one datapoint's log-weights `l` (length `N >= 1`), writes the
//! per-sample coefficients `(a, b, c)` (decoder, path, score; ascent convention, see the
//! module table in [`super`]) and returns the objective value. `w = softmax(l)` is treated
//! as a constant throughout.
//!
//! Sources:
//! - IWAE: Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016.
//!   The full reparameterised gradient of `L_N` is `sum_n w_n d l_n`, so every piece gets `w`.
//! - STL: Roeder, Wu & Duvenaud, "Sticking the Landing", NeurIPS 2017. Drops the score
//!   term (`c = 0`), which has zero expectation but high variance.
//! - RWS: Bornschein & Bengio, "Reweighted Wake-Sleep", ICLR 2015. The wake-phi update
//!   ascends `sum_n w_n log q(z_n | x)` with `z_n` held fixed: `b = 0`, `c = -w` (since
//!   `S_n = -grad_phi log q`).
//! - IWAE-DReG, RWS-DReG, DReG(alpha): Tucker, Lawson, Gu & Maddison, "Doubly Reparameterized
//!   Gradient Estimators for Monte Carlo Objectives", ICLR 2019. Rewriting the score term
//!   through a second reparameterisation turns it into path terms with weights `w^2`
//!   (IWAE) or `w - w^2` (RWS); DReG(alpha) ascends `alpha * RWS + (1 - alpha) * IWAE`'s
//!   encoder direction, `b = alpha w + (1 - 2 alpha) w^2`.

use super::softmax_lse;

/// Writes `w = softmax(l)` into `a` and returns `L_N = logsumexp(l) - ln N`.
fn weights_into(l: &[f64], a: &mut [f64]) -> f64 {
    softmax_lse(l, a) - (l.len() as f64).ln()
}

/// ELBO averaged over the `N` samples: `a = b = c = 1/N`; objective `mean(l)`.
pub fn elbo(l: &[f64], a: &mut [f64], b: &mut [f64], c: &mut [f64]) -> f64 {
    let inv = 1.0 / l.len() as f64;
    a.fill(inv);
    b.fill(inv);
    c.fill(inv);
    l.iter().sum::<f64>() * inv
}

/// IWAE (Burda et al. 2016): `a = b = c = w`; objective `L_N`.
pub fn iwae(l: &[f64], a: &mut [f64], b: &mut [f64], c: &mut [f64]) -> f64 {
    let obj = weights_into(l, a);
    b.copy_from_slice(a);
    c.copy_from_slice(a);
    obj
}

/// STL (Roeder et al. 2017): `a = b = w`, `c = 0`; objective `L_N`.
pub fn stl(l: &[f64], a: &mut [f64], b: &mut [f64], c: &mut [f64]) -> f64 {
    let obj = weights_into(l, a);
    b.copy_from_slice(a);
    c.fill(0.0);
    obj
}

/// IWAE-DReG (Tucker et al. 2019): `a = w`, `b = w^2`, `c = 0`; objective `L_N`.
pub fn iwae_dreg(l: &[f64], a: &mut [f64], b: &mut [f64], c: &mut [f64]) -> f64 {
    dreg(0.0, l, a, b, c)
}

/// RWS wake-phi (Bornschein & Bengio 2015): `a = w`, `b = 0`, `c = -w`; objective `L_N`.
pub fn rws(l: &[f64], a: &mut [f64], b: &mut [f64], c: &mut [f64]) -> f64 {
    let obj = weights_into(l, a);
    b.fill(0.0);
    for (ci, &w) in c.iter_mut().zip(a.iter()) {
        *ci = -w;
    }
    obj
}

/// RWS-DReG (Tucker et al. 2019): `a = w`, `b = w - w^2`, `c = 0`; objective `L_N`.
pub fn rws_dreg(l: &[f64], a: &mut [f64], b: &mut [f64], c: &mut [f64]) -> f64 {
    dreg(1.0, l, a, b, c)
}

/// DReG(alpha) (Tucker et al. 2019): `a = w`, `b = alpha w + (1 - 2 alpha) w^2`, `c = 0`;
/// objective `L_N`. `alpha = 0` is IWAE-DReG, `alpha = 1` RWS-DReG (exactly, coefficientwise).
pub fn dreg(alpha: f64, l: &[f64], a: &mut [f64], b: &mut [f64], c: &mut [f64]) -> f64 {
    let obj = weights_into(l, a);
    let beta = 1.0 - 2.0 * alpha;
    for (bi, &w) in b.iter_mut().zip(a.iter()) {
        *bi = alpha * w + beta * (w * w);
    }
    c.fill(0.0);
    obj
}

#[cfg(test)]
mod tests {
    use super::super::{iwae_bound, logsumexp, softmax_into, Estimator, EstimatorKind};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    const IMPORTANCE: [EstimatorKind; 7] = [
        EstimatorKind::Elbo,
        EstimatorKind::Iwae,
        EstimatorKind::Stl,
        EstimatorKind::IwaeDreg,
        EstimatorKind::Rws,
        EstimatorKind::RwsDreg,
        EstimatorKind::Dreg,
    ];

    fn row(kind: EstimatorKind, alpha: f64, l: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>, f64) {
        let n = l.len();
        let (mut a, mut b, mut c) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        let obj = Estimator::new(kind, alpha).coefficients_row(l, &mut a, &mut b, &mut c);
        (a, b, c, obj)
    }

    fn random_l(rng: &mut ChaCha8Rng, n: usize, scale: f64) -> Vec<f64> {
        (0..n)
            .map(|_| scale * (rng.random::<f64>() - 0.5) - 100.0)
            .collect()
    }

    #[test]
    fn iwae_with_one_sample_is_elbo() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..20 {
            let l = random_l(&mut rng, 1, 400.0);
            let iw = row(EstimatorKind::Iwae, 0.0, &l);
            let el = row(EstimatorKind::Elbo, 0.0, &l);
            assert_eq!((&iw.0, &iw.1, &iw.2), (&el.0, &el.1, &el.2));
            assert_eq!(iw.0, vec![1.0]);
            assert!(
                (iw.3 - el.3).abs() <= 1e-12 * el.3.abs(),
                "{} vs {}",
                iw.3,
                el.3
            );
            assert!((el.3 - l[0]).abs() <= 1e-12 * l[0].abs());
        }
    }

    #[test]
    fn coefficients_match_table() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for n in [1usize, 2, 3, 7, 50] {
            let l = random_l(&mut rng, n, 10.0);
            let mut w = vec![0.0; n];
            softmax_into(&l, &mut w);
            let alpha = rng.random::<f64>() * 1.5 - 0.25;
            let nf = n as f64;
            for kind in IMPORTANCE {
                let (a, b, c, obj) = row(kind, alpha, &l);
                for j in 0..n {
                    let wj = w[j];
                    let (ea, eb, ec) = match kind {
                        EstimatorKind::Elbo => (1.0 / nf, 1.0 / nf, 1.0 / nf),
                        EstimatorKind::Iwae => (wj, wj, wj),
                        EstimatorKind::Stl => (wj, wj, 0.0),
                        EstimatorKind::IwaeDreg => (wj, wj * wj, 0.0),
                        EstimatorKind::Rws => (wj, 0.0, -wj),
                        EstimatorKind::RwsDreg => (wj, wj - wj * wj, 0.0),
                        EstimatorKind::Dreg => {
                            (wj, alpha * wj + (1.0 - 2.0 * alpha) * wj * wj, 0.0)
                        }
                        _ => unreachable!(),
                    };
                    assert!((a[j] - ea).abs() < 1e-14, "{kind} a");
                    assert!((b[j] - eb).abs() < 1e-14, "{kind} b");
                    assert!((c[j] - ec).abs() < 1e-14, "{kind} c");
                }
                let want = if kind == EstimatorKind::Elbo {
                    l.iter().sum::<f64>() / nf
                } else {
                    iwae_bound(&l)
                };
                assert!((obj - want).abs() < 1e-12, "{kind}: {obj} vs {want}");
            }
        }
    }

    #[test]
    fn weights_sum_to_one() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut cases: Vec<Vec<f64>> = vec![
            vec![-1e4, 0.0, 3.0, -1e300],
            vec![-1e4, 0.0, 3.0, f64::NEG_INFINITY],
            vec![0.0, -800.0, -1600.0],
            vec![1e5, 1e5, 1e5],
            vec![-1e5; 4],
        ];
        for n in [1, 2, 5, 100, 1000] {
            cases.push(random_l(&mut rng, n, 1.0));
            cases.push(random_l(&mut rng, n, 2000.0));
        }
        for l in &cases {
            for kind in [
                EstimatorKind::Iwae,
                EstimatorKind::Stl,
                EstimatorKind::IwaeDreg,
                EstimatorKind::Rws,
                EstimatorKind::RwsDreg,
                EstimatorKind::Dreg,
                EstimatorKind::Elbo,
            ] {
                let (a, b, _, _) = row(kind, 0.3, l);
                let s: f64 = a.iter().sum();
                assert!((s - 1.0).abs() < 1e-12, "{kind} {l:?}: sum a = {s}");
                assert!(a.iter().all(|&x| x >= 0.0));
                if kind == EstimatorKind::Iwae || kind == EstimatorKind::Stl {
                    assert_eq!(a, b);
                }
            }
        }
    }

    #[test]
    fn dreg_alpha_endpoints() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        for n in [1usize, 2, 4, 33] {
            for scale in [1.0, 50.0, 3000.0] {
                let l = random_l(&mut rng, n, scale);
                let d0 = row(EstimatorKind::Dreg, 0.0, &l);
                let iw = row(EstimatorKind::IwaeDreg, 0.0, &l);
                let d1 = row(EstimatorKind::Dreg, 1.0, &l);
                let rw = row(EstimatorKind::RwsDreg, 0.0, &l);
                for (x, y) in [(&d0, &iw), (&d1, &rw)] {
                    for j in 0..n {
                        assert!((x.0[j] - y.0[j]).abs() <= 1e-12);
                        assert!((x.1[j] - y.1[j]).abs() <= 1e-12);
                        assert!((x.2[j] - y.2[j]).abs() <= 1e-12);
                    }
                    assert_eq!(x.3, y.3);
                }
                // alpha = 1/2 is STL's path weight scaled by 1/2 (Tucker et al. App. on STL).
                let dh = row(EstimatorKind::Dreg, 0.5, &l);
                let st = row(EstimatorKind::Stl, 0.0, &l);
                for j in 0..n {
                    assert!((dh.1[j] - 0.5 * st.1[j]).abs() <= 1e-15);
                }
            }
        }
    }

    /// The IWAE coefficients are the gradient of `L_N` with respect to `l`.
    #[test]
    fn iwae_coefficients_are_gradient_of_bound() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let h = 1e-5;
        for n in [1usize, 2, 3, 6, 20] {
            for scale in [1.0, 10.0] {
                let l = random_l(&mut rng, n, scale);
                let (a, b, c, obj) = row(EstimatorKind::Iwae, 0.0, &l);
                assert!((obj - iwae_bound(&l)).abs() < 1e-12);
                for j in 0..n {
                    let mut lp = l.clone();
                    let mut lm = l.clone();
                    lp[j] += h;
                    lm[j] -= h;
                    let fd = (iwae_bound(&lp) - iwae_bound(&lm)) / (2.0 * h);
                    assert!((a[j] - fd).abs() < 1e-7, "n={n} j={j}: {} vs {fd}", a[j]);
                    assert_eq!(a[j], b[j]);
                    assert_eq!(a[j], c[j]);
                }
                // And the ELBO's are the gradient of the mean.
                let (ea, _, _, eobj) = row(EstimatorKind::Elbo, 0.0, &l);
                let mean = l.iter().sum::<f64>() / n as f64;
                assert!((eobj - mean).abs() < 1e-12);
                assert!(ea.iter().all(|&x| x == 1.0 / n as f64));
            }
        }
        // Objective is the stable logsumexp minus ln N, also for huge values.
        let l = [1000.0, 1000.0, 1000.0];
        assert!((row(EstimatorKind::Iwae, 0.0, &l).3 - 1000.0).abs() < 1e-12);
        assert!((logsumexp(&l) - 1000.0 - 3f64.ln()).abs() < 1e-12);
    }
}
