//! An estimator's per-sample coefficients over a batch of log-weights: each row in f64, rows
//! in parallel when the batch is large, buffers reused across steps.

use super::{importance, jackknife, Estimator, EstimatorKind};
use rayon::prelude::*;
use std::cell::RefCell;

/// Why a fixed-size call was made for a random-size estimator (a programming error).
pub(super) const RANDOM_SIZE_MSG: &str =
    "SUMO and MLMC draw their number of samples each step: use Estimator::plan and StepPlan::draw";
/// Why coefficients were asked of a coupled estimator (a programming error).
pub(super) const COUPLED_MSG: &str =
    "coupled chains run until they meet: use Estimator::plan and Backend::chain_step";

/// Per-sample coefficients for a batch, row-major `[batch, n]`; `objective` has one value
/// per datapoint (see [`Estimator::coefficients_row`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Coefficients {
    pub batch: usize,
    pub n: usize,
    pub a: Vec<f32>,
    pub b: Vec<f32>,
    pub c: Vec<f32>,
    pub objective: Vec<f64>,
}

/// One row of the zipped batch iterators: `(((log_w, a), b), c)`.
type RowArgs<'a> = (((&'a [f32], &'a mut [f32]), &'a mut [f32]), &'a mut [f32]);

/// Rows are computed in parallel only when the batch holds at least this many samples.
const PARALLEL_MIN_SAMPLES: usize = 4096;

thread_local! {
    /// Per-thread f64 scratch for the f32 batch path: `[l, a, b, c]`, each `n` long.
    static SCRATCH: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
}

impl Estimator {
    /// One datapoint: `log_w` has `n` entries; writes `a`, `b`, `c` (each of length `n`)
    /// and returns the objective value (ELBO: mean of `l`; IWAE family:
    /// `L_n = logsumexp(l) - ln n`; JVI family: the jackknife estimate `J`).
    ///
    /// `log_w` may contain `-inf` (a sample with zero weight); `+inf` and NaN propagate.
    /// JVI needs `n >= 2` ([`EstimatorKind::min_samples`]); callers validate this.
    pub fn coefficients_row(
        &self,
        log_w: &[f64],
        a: &mut [f64],
        b: &mut [f64],
        c: &mut [f64],
    ) -> f64 {
        let n = log_w.len();
        assert!(
            a.len() == n && b.len() == n && c.len() == n,
            "coefficient slices must have the length of log_w"
        );
        debug_assert!(
            n >= self.kind.min_samples(),
            "estimator {} needs at least {} samples, got {n}",
            self.kind,
            self.kind.min_samples()
        );
        match self.kind {
            EstimatorKind::Elbo => importance::elbo(log_w, a, b, c),
            EstimatorKind::Iwae => importance::iwae(log_w, a, b, c),
            EstimatorKind::Stl => importance::stl(log_w, a, b, c),
            EstimatorKind::IwaeDreg => importance::iwae_dreg(log_w, a, b, c),
            EstimatorKind::Rws => importance::rws(log_w, a, b, c),
            EstimatorKind::RwsDreg => importance::rws_dreg(log_w, a, b, c),
            EstimatorKind::Dreg => importance::dreg(self.alpha, log_w, a, b, c),
            EstimatorKind::Jvi => jackknife::jvi(log_w, a, b, c),
            EstimatorKind::JviDreg => jackknife::jvi_dreg(log_w, a, b, c),
            EstimatorKind::Sumo | EstimatorKind::MlmcSs | EstimatorKind::MlmcRr => {
                panic!("{RANDOM_SIZE_MSG}")
            }
            EstimatorKind::CoupledPimh
            | EstimatorKind::CoupledIsir
            | EstimatorKind::CoupledDisir => panic!("{COUPLED_MSG}"),
        }
    }

    /// A batch `[batch, n]` of f32 log-weights; each row is computed in f64.
    pub fn coefficients(&self, log_w: &[f32], batch: usize, n: usize) -> Coefficients {
        let mut out = Coefficients::default();
        self.coefficients_into(log_w, batch, n, &mut out);
        out
    }

    /// Like [`Estimator::coefficients`] but writes into `out`, reusing its buffers (no
    /// allocation when the shape repeats).
    pub fn coefficients_into(&self, log_w: &[f32], batch: usize, n: usize, out: &mut Coefficients) {
        rows_into(
            |l, a, b, c| self.coefficients_row(l, a, b, c),
            log_w,
            batch,
            n,
            out,
        );
    }
}

/// Runs `row` (f64 coefficients of one datapoint) over a `[batch, n]` f32 batch into `out`,
/// reusing its buffers; rows run in parallel when the batch is large.
pub(crate) fn rows_into(
    row_fn: impl Fn(&[f64], &mut [f64], &mut [f64], &mut [f64]) -> f64 + Sync,
    log_w: &[f32],
    batch: usize,
    n: usize,
    out: &mut Coefficients,
) {
    assert!(n >= 1, "need at least one sample per datapoint");
    assert_eq!(log_w.len(), batch * n, "log_w must have batch * n entries");
    out.batch = batch;
    out.n = n;
    out.a.resize(batch * n, 0.0);
    out.b.resize(batch * n, 0.0);
    out.c.resize(batch * n, 0.0);
    out.objective.resize(batch, 0.0);
    if batch == 0 {
        return;
    }

    let row = |(((lw, a), b), c): RowArgs<'_>| -> f64 {
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < 4 * n {
                s.resize(4 * n, 0.0);
            }
            let (l64, rest) = s.split_at_mut(n);
            let (a64, rest) = rest.split_at_mut(n);
            let (b64, rest) = rest.split_at_mut(n);
            let c64 = &mut rest[..n];
            for (d, &x) in l64.iter_mut().zip(lw) {
                *d = f64::from(x);
            }
            let obj = row_fn(l64, a64, b64, c64);
            for (src, dst) in [(&*a64, a), (&*b64, b), (&*c64, c)] {
                for (d, &x) in dst.iter_mut().zip(src) {
                    *d = x as f32;
                }
            }
            obj
        })
    };

    let Coefficients {
        a, b, c, objective, ..
    } = out;
    if batch * n >= PARALLEL_MIN_SAMPLES && batch > 1 {
        log_w
            .par_chunks(n)
            .zip(a.par_chunks_mut(n))
            .zip(b.par_chunks_mut(n))
            .zip(c.par_chunks_mut(n))
            .zip(objective.par_iter_mut())
            .for_each(|(args, obj)| *obj = row(args));
    } else {
        log_w
            .chunks(n)
            .zip(a.chunks_mut(n))
            .zip(b.chunks_mut(n))
            .zip(c.chunks_mut(n))
            .zip(objective.iter_mut())
            .for_each(|(args, obj)| *obj = row(args));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random_batch(rng: &mut ChaCha8Rng, len: usize, scale: f32) -> Vec<f32> {
        (0..len)
            .map(|_| scale * (rng.random::<f32>() - 0.5) - 90.0)
            .collect()
    }

    #[test]
    fn batch_matches_rows_and_reuses_buffers() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        // Small (serial) and large (parallel) shapes.
        for &(batch, n) in &[(3usize, 5usize), (64, 100), (1, 7)] {
            let lw = random_batch(&mut rng, batch * n, 30.0);
            for kind in EstimatorKind::ALL {
                let est = Estimator::new(kind, 0.3);
                let co = est.coefficients(&lw, batch, n);
                assert_eq!((co.batch, co.n), (batch, n));
                assert_eq!(co.a.len(), batch * n);
                assert_eq!(co.objective.len(), batch);
                let (mut a, mut b, mut c) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
                for r in 0..batch {
                    let l: Vec<f64> = lw[r * n..(r + 1) * n].iter().map(|&x| x as f64).collect();
                    let obj = est.coefficients_row(&l, &mut a, &mut b, &mut c);
                    assert_eq!(co.objective[r], obj, "{kind} row {r}");
                    for j in 0..n {
                        assert_eq!(co.a[r * n + j], a[j] as f32, "{kind}");
                        assert_eq!(co.b[r * n + j], b[j] as f32, "{kind}");
                        assert_eq!(co.c[r * n + j], c[j] as f32, "{kind}");
                    }
                }
                // Reuse: same shape -> same buffers, same values.
                let mut out = co.clone();
                let ptrs = (out.a.as_ptr(), out.b.as_ptr(), out.c.as_ptr());
                let obj_ptr = out.objective.as_ptr();
                out.a.fill(f32::NAN);
                est.coefficients_into(&lw, batch, n, &mut out);
                assert_eq!(ptrs, (out.a.as_ptr(), out.b.as_ptr(), out.c.as_ptr()));
                assert_eq!(obj_ptr, out.objective.as_ptr());
                assert_eq!(out, co);
            }
        }
        // Shape change resizes.
        let est = Estimator::new(EstimatorKind::Iwae, 0.0);
        let mut out = est.coefficients(&[0.0; 6], 2, 3);
        est.coefficients_into(&[0.0; 8], 2, 4, &mut out);
        assert_eq!(
            (out.batch, out.n, out.a.len(), out.objective.len()),
            (2, 4, 8, 2)
        );
        assert!(out.a.iter().all(|&x| x == 0.25));
        let empty = est.coefficients(&[], 0, 4);
        assert!(empty.a.is_empty() && empty.objective.is_empty());
    }

    #[test]
    fn every_estimator_is_finite_for_huge_spread() {
        let cases: Vec<Vec<f64>> = vec![
            vec![0.0, -800.0, -1600.0],
            vec![-1600.0, -800.0, 0.0],
            vec![-1e4, 0.0, 3.0, -1e300],
            vec![-1e4, 0.0, 3.0, f64::NEG_INFINITY],
            vec![0.0, -800.0],
            vec![-3000.0, -3000.0, -3000.0, 0.0, -3000.0],
            vec![1e5, -1e5, 1e5 - 1e-9, 0.0],
        ];
        for l in &cases {
            let n = l.len();
            for kind in EstimatorKind::ALL {
                let est = Estimator::new(kind, 0.4);
                let (mut a, mut b, mut c) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
                let obj = est.coefficients_row(l, &mut a, &mut b, &mut c);
                let all = a.iter().chain(&b).chain(&c);
                assert!(
                    all.clone().all(|x| x.is_finite()),
                    "{kind} {l:?}: a={a:?} b={b:?} c={c:?}"
                );
                if kind == EstimatorKind::Elbo && l.contains(&f64::NEG_INFINITY) {
                    assert_eq!(obj, f64::NEG_INFINITY);
                } else {
                    assert!(obj.is_finite(), "{kind} {l:?}: objective {obj}");
                }
                // Through the f32 batch path too.
                let l32: Vec<f32> = l.iter().map(|&x| x as f32).collect();
                let co = est.coefficients(&l32, 1, n);
                assert!(co.a.iter().chain(&co.b).chain(&co.c).all(|x| x.is_finite()));
            }
        }
    }
}
