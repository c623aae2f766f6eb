//! Estimators as data a device kernel evaluates, so GPU backends run every estimator of
//! this module without knowing any of them by name (`shaders/weights.wgsl` interprets it).

use super::{Estimator, EstimatorKind};

/// One term of a [`CoefficientProgram::Subsets`] program: `weight` times the IWAE bound of
/// each subset it names, L_S = logsumexp(l_S) - ln |S|.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SubsetTerm {
    /// false: the prefix of samples [0, size); true: every aligned block of `size` samples
    /// (size must divide N).
    pub blocks: bool,
    pub size: u32,
    pub weight: f64,
}

/// How the encoder's coefficients (b, c) follow from a subset program's decoder
/// coefficients a.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EncoderRule {
    /// IWAE-DReG on the aligned blocks of `size` samples, averaged over blocks:
    /// b_n = (N / size)^-1 (w_n within its block)^2, c = 0 (size = N: DReG on all samples).
    DregBlocks { size: u32 },
    /// Unbiased RWS (Shi & Cornish 2021): b = 0, c = -a.
    UnbiasedRws,
    /// Minimise E[estimate^2] (SUMO's variance objective, Luo et al. 2020):
    /// b = c = -2 estimate a.
    Variance,
    /// The last `size` samples are the encoder's own: IWAE on them (b = c = their softmax
    /// within the tail, a = 0), while the terms and a cover the first N - size samples
    /// (b = c = 0 there), so the decoder and the encoder learn from independent draws.
    IwaeTail { size: u32 },
}

impl EncoderRule {
    /// Samples at the end of a draw that belong to the encoder alone.
    pub fn tail(&self) -> usize {
        match *self {
            EncoderRule::IwaeTail { size } => size as usize,
            _ => 0,
        }
    }
}

/// How to compute one datapoint's coefficients from its log-weights on a device.
#[derive(Clone, Debug, PartialEq)]
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
    /// A signed combination of IWAE bounds over subsets of the samples (SUMO's nested
    /// prefixes, MLMC's dyadic blocks): objective = sum_t weight_t sum_S L_S and
    /// a_n = sum_t weight_t w_n^(S(n)), the softmax within the subset of term t holding n.
    Subsets {
        terms: Vec<SubsetTerm>,
        encoder: EncoderRule,
    },
}

impl Estimator {
    /// This fixed-size estimator as a [`CoefficientProgram`] (SUMO and MLMC: see `draw`).
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
            EstimatorKind::Sumo | EstimatorKind::MlmcSs | EstimatorKind::MlmcRr => {
                panic!("{}", super::batch::RANDOM_SIZE_MSG)
            }
            EstimatorKind::CoupledPimh
            | EstimatorKind::CoupledIsir
            | EstimatorKind::CoupledDisir => panic!("{}", super::batch::COUPLED_MSG),
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
        super::batch::rows_into(
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
            CoefficientProgram::Subsets { ref terms, encoder } => {
                evaluate_subsets(terms, encoder, l, a, b, c)
            }
        }
    }

    /// Checks a subset program against N samples: sizes positive, within N, blocks dividing N.
    pub fn validate(&self, n: usize) -> Result<(), String> {
        if let CoefficientProgram::Subsets { terms, encoder } = self {
            let Some(n) = n.checked_sub(encoder.tail()).filter(|&d| d > 0) else {
                return Err(format!(
                    "the encoder's {} samples leave none of N = {n} for the terms",
                    encoder.tail()
                ));
            };
            for t in terms {
                let s = t.size as usize;
                if s == 0 || s > n || (t.blocks && !n.is_multiple_of(s)) {
                    return Err(format!(
                        "subset term {t:?} does not fit the terms' {n} samples"
                    ));
                }
            }
            if let EncoderRule::DregBlocks { size } = encoder {
                if *size == 0 || !n.is_multiple_of(*size as usize) {
                    return Err(format!("DReG block size {size} does not divide N = {n}"));
                }
            }
        }
        Ok(())
    }
}

/// f64 reference of the subset program (the WGSL kernel `subset_coefficients` mirrors it).
fn evaluate_subsets(
    terms: &[SubsetTerm],
    encoder: EncoderRule,
    l: &[f64],
    a: &mut [f64],
    b: &mut [f64],
    c: &mut [f64],
) -> f64 {
    let n = l.len() - encoder.tail();
    let mut objective = 0.0;
    a.iter_mut().for_each(|v| *v = 0.0);
    for t in terms {
        let s = t.size as usize;
        let starts: Vec<usize> = if t.blocks {
            (0..n).step_by(s).collect()
        } else {
            vec![0]
        };
        for start in starts {
            let lse = super::logsumexp(&l[start..start + s]);
            objective += t.weight * (lse - (s as f64).ln());
            for i in start..start + s {
                if lse.is_finite() {
                    a[i] += t.weight * (l[i] - lse).exp();
                }
            }
        }
    }
    match encoder {
        EncoderRule::DregBlocks { size } => {
            let s = size as usize;
            let groups = (n / s) as f64;
            for start in (0..n).step_by(s) {
                let lse = super::logsumexp(&l[start..start + s]);
                for i in start..start + s {
                    let w = if lse.is_finite() {
                        (l[i] - lse).exp()
                    } else {
                        0.0
                    };
                    b[i] = w * w / groups;
                    c[i] = 0.0;
                }
            }
        }
        EncoderRule::UnbiasedRws => {
            for i in 0..n {
                b[i] = 0.0;
                c[i] = -a[i];
            }
        }
        EncoderRule::Variance => {
            for i in 0..n {
                b[i] = -2.0 * objective * a[i];
                c[i] = b[i];
            }
        }
        EncoderRule::IwaeTail { .. } => {
            b[..n].fill(0.0);
            c[..n].fill(0.0);
            let tail = &l[n..];
            a[n..].fill(0.0);
            super::softmax_into(tail, &mut b[n..]);
            c[n..].copy_from_slice(&b[n..]);
        }
    }
    objective
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

#[cfg(test)]
mod subset_tests {
    use super::*;

    /// One prefix term over all samples with DReG on all samples is IWAE-DReG exactly.
    #[test]
    fn a_single_full_prefix_is_iwae_dreg() {
        let l = [-3.0, 0.5, -1.25, 2.0, -7.5, 0.0];
        let p = CoefficientProgram::Subsets {
            terms: vec![SubsetTerm {
                blocks: false,
                size: 6,
                weight: 1.0,
            }],
            encoder: EncoderRule::DregBlocks { size: 6 },
        };
        let (mut a, mut b, mut c) = ([0.0; 6], [0.0; 6], [0.0; 6]);
        let obj = p.evaluate_row(&l, &mut a, &mut b, &mut c);
        let (mut ra, mut rb, mut rc) = ([0.0; 6], [0.0; 6], [0.0; 6]);
        let want = super::super::importance::iwae_dreg(&l, &mut ra, &mut rb, &mut rc);
        assert!((obj - want).abs() < 1e-12);
        for i in 0..6 {
            assert!((a[i] - ra[i]).abs() < 1e-12 && (b[i] - rb[i]).abs() < 1e-12 && c[i] == 0.0);
        }
    }

    /// a is the gradient of the objective for any mix of prefix and block terms.
    #[test]
    fn decoder_coefficients_are_the_objective_gradient() {
        let l = [-3.0, 0.5, -1.25, 2.0, -7.5, 0.0, 1.5, -0.25];
        let terms = vec![
            SubsetTerm {
                blocks: false,
                size: 3,
                weight: 0.7,
            },
            SubsetTerm {
                blocks: true,
                size: 2,
                weight: -1.3,
            },
            SubsetTerm {
                blocks: true,
                size: 8,
                weight: 2.0,
            },
        ];
        let p = CoefficientProgram::Subsets {
            terms,
            encoder: EncoderRule::UnbiasedRws,
        };
        assert!(p.validate(8).is_ok());
        assert!(p.validate(6).is_err(), "blocks of 8 cannot fit 6 samples");
        let (mut a, mut b, mut c) = ([0.0; 8], [0.0; 8], [0.0; 8]);
        p.evaluate_row(&l, &mut a, &mut b, &mut c);
        for i in 0..8 {
            let h = 1e-6;
            let (mut lp, mut lm) = (l, l);
            lp[i] += h;
            lm[i] -= h;
            let (mut x, mut y, mut z) = ([0.0; 8], [0.0; 8], [0.0; 8]);
            let fd = (p.evaluate_row(&lp, &mut x, &mut y, &mut z)
                - p.evaluate_row(&lm, &mut x, &mut y, &mut z))
                / (2.0 * h);
            assert!(
                (fd - a[i]).abs() < 1e-7,
                "a[{i}] {} vs finite difference {fd}",
                a[i]
            );
            assert_eq!(b[i], 0.0);
            assert_eq!(c[i], -a[i]);
        }
    }
}

#[cfg(test)]
mod iwae_tail_tests {
    use super::*;

    /// Under `IwaeTail` the terms' samples carry the decoder coefficients of the same
    /// program without the tail, and the tail carries exactly IWAE's encoder coefficients.
    #[test]
    fn the_tail_is_iwae_and_the_rest_is_the_program_without_it() {
        let l = [-3.0, 0.5, -1.25, 2.0, -7.5, 0.0, 1.5];
        let terms = vec![
            SubsetTerm {
                blocks: true,
                size: 2,
                weight: -0.4,
            },
            SubsetTerm {
                blocks: false,
                size: 3,
                weight: 1.1,
            },
        ];
        let tail = CoefficientProgram::Subsets {
            terms: terms.clone(),
            encoder: EncoderRule::IwaeTail { size: 3 },
        };
        assert!(tail.validate(7).is_ok());
        assert!(
            tail.validate(6).is_err(),
            "blocks of 2 cannot cover 3 samples"
        );
        assert!(tail.validate(3).is_err(), "no samples left for the terms");
        let (mut a, mut b, mut c) = ([0.0; 7], [0.0; 7], [0.0; 7]);
        let obj = tail.evaluate_row(&l, &mut a, &mut b, &mut c);
        let head = CoefficientProgram::Subsets {
            terms,
            encoder: EncoderRule::UnbiasedRws,
        };
        let (mut ha, mut hb, mut hc) = ([0.0; 4], [0.0; 4], [0.0; 4]);
        let want = head.evaluate_row(&l[..4], &mut ha, &mut hb, &mut hc);
        assert_eq!(obj, want, "the objective ignores the encoder's samples");
        let (mut ia, mut ib, mut ic) = ([0.0; 3], [0.0; 3], [0.0; 3]);
        Estimator::new(EstimatorKind::Iwae, 0.0).coefficients_row(
            &l[4..],
            &mut ia,
            &mut ib,
            &mut ic,
        );
        for i in 0..4 {
            assert_eq!((a[i], b[i], c[i]), (ha[i], 0.0, 0.0), "sample {i}");
        }
        for i in 4..7 {
            assert_eq!(
                a[i], 0.0,
                "sample {i}: the decoder ignores the encoder's samples"
            );
            assert!((b[i] - ib[i - 4]).abs() < 1e-12 && (c[i] - ic[i - 4]).abs() < 1e-12);
        }
    }
}
