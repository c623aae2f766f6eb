//! Estimators as data a device kernel evaluates, so GPU backends run every estimator of
//! this module without knowing any of them by name (`shaders/weights.wgsl` interprets it).

use super::{Estimator, EstimatorKind};

/// How to compute one datapoint's coefficients from its log-weights on a device.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CoefficientProgram {
    /// Each of a, b, c is p[0] / N + p[1] w + p[2] w^2 with w = softmax(l). The objective is
    /// mean(l) when `mean_objective`, else L_N = logsumexp(l) - ln N.
    Softmax {
        a: [f32; 3],
        b: [f32; 3],
        c: [f32; 3],
        mean_objective: bool,
    },
    /// Jackknife (JVI): a = dJ/dl; with `dreg`, b is the doubly reparameterised weight and
    /// c = 0, else b = c = a. The objective is J.
    Jackknife { dreg: bool },
}

impl Estimator {
    /// This estimator as a [`CoefficientProgram`].
    pub fn program(&self) -> CoefficientProgram {
        const MEAN: [f32; 3] = [1.0, 0.0, 0.0];
        const W: [f32; 3] = [0.0, 1.0, 0.0];
        const W2: [f32; 3] = [0.0, 0.0, 1.0];
        const ZERO: [f32; 3] = [0.0; 3];
        let soft = |a, b, c| CoefficientProgram::Softmax {
            a,
            b,
            c,
            mean_objective: false,
        };
        match self.kind {
            EstimatorKind::Elbo => CoefficientProgram::Softmax {
                a: MEAN,
                b: MEAN,
                c: MEAN,
                mean_objective: true,
            },
            EstimatorKind::Iwae => soft(W, W, W),
            EstimatorKind::Stl => soft(W, W, ZERO),
            EstimatorKind::IwaeDreg => soft(W, W2, ZERO),
            EstimatorKind::Rws => soft(W, ZERO, [0.0, -1.0, 0.0]),
            EstimatorKind::RwsDreg => soft(W, [0.0, 1.0, -1.0], ZERO),
            EstimatorKind::Dreg => {
                let al = self.alpha as f32;
                soft(W, [0.0, al, 1.0 - 2.0 * al], ZERO)
            }
            EstimatorKind::Jvi => CoefficientProgram::Jackknife { dreg: false },
            EstimatorKind::JviDreg => CoefficientProgram::Jackknife { dreg: true },
        }
    }
}

impl CoefficientProgram {
    /// The program over a `[batch, n]` batch, like [`Estimator::coefficients_into`].
    pub fn coefficients_into(
        &self,
        log_w: &[f32],
        batch: usize,
        n: usize,
        out: &mut super::Coefficients,
    ) {
        super::rows_into(
            |l, a, b, c| self.evaluate_row(l, a, b, c),
            log_w,
            batch,
            n,
            out,
        );
    }

    /// The program's coefficients for one datapoint, evaluated on the host in f64 exactly as
    /// the kernel does; `Jackknife` defers to [`super::jackknife`].
    pub fn evaluate_row(&self, l: &[f64], a: &mut [f64], b: &mut [f64], c: &mut [f64]) -> f64 {
        match *self {
            CoefficientProgram::Softmax {
                a: pa,
                b: pb,
                c: pc,
                mean_objective,
            } => {
                let n = l.len() as f64;
                super::softmax_into(l, a);
                for i in 0..l.len() {
                    let w = a[i];
                    let poly =
                        |p: [f32; 3]| p[0] as f64 / n + p[1] as f64 * w + p[2] as f64 * w * w;
                    a[i] = poly(pa);
                    b[i] = poly(pb);
                    c[i] = poly(pc);
                }
                if mean_objective {
                    l.iter().sum::<f64>() / n
                } else {
                    super::iwae_bound(l)
                }
            }
            CoefficientProgram::Jackknife { dreg: false } => super::jackknife::jvi(l, a, b, c),
            CoefficientProgram::Jackknife { dreg: true } => super::jackknife::jvi_dreg(l, a, b, c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The program is another statement of the coefficient table: both must agree exactly.
    #[test]
    fn every_program_reproduces_its_estimator() {
        let l = [-3.0, 0.5, -1.25, 2.0, -7.5];
        for kind in EstimatorKind::ALL {
            let est = Estimator::new(kind, 0.3);
            let (mut a, mut b, mut c) = ([0.0; 5], [0.0; 5], [0.0; 5]);
            let want = est.coefficients_row(&l, &mut a, &mut b, &mut c);
            let (mut pa, mut pb, mut pc) = ([0.0; 5], [0.0; 5], [0.0; 5]);
            let got = est.program().evaluate_row(&l, &mut pa, &mut pb, &mut pc);
            assert!(
                (got - want).abs() < 1e-12,
                "{kind}: objective {got} vs {want}"
            );
            for i in 0..5 {
                for (x, y, what) in [(pa[i], a[i], "a"), (pb[i], b[i], "b"), (pc[i], c[i], "c")] {
                    assert!(
                        (x - y).abs() < 1e-7,
                        "{kind}: {what}[{i}] program {x} vs table {y}"
                    );
                }
            }
        }
    }
}
