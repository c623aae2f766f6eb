//! Numerically stable log-sum-exp and softmax, shared by every estimator.

/// Maximum that propagates NaN (`f64::max` would drop it).
pub(crate) fn max_nan(l: &[f64]) -> f64 {
    let mut m = f64::NEG_INFINITY;
    for &x in l {
        if x.is_nan() {
            return x;
        }
        if x > m {
            m = x;
        }
    }
    m
}

/// Stable `log sum_n exp(l_n)`; `-inf` when every entry is `-inf` (or `l` is empty).
pub fn logsumexp(l: &[f64]) -> f64 {
    let m = max_nan(l);
    if !m.is_finite() {
        // -inf: all entries -inf (or empty); +inf: the sum is +inf; NaN propagates.
        return m;
    }
    let s: f64 = l.iter().map(|&x| (x - m).exp()).sum();
    m + s.ln()
}

/// Stable softmax of `l` into `w`; returns `logsumexp(l)`.
///
/// Degenerate inputs: all `-inf` gives uniform weights (the limit of equal log-weights);
/// `+inf` entries share the mass equally; NaN propagates to every weight.
pub(crate) fn softmax_lse(l: &[f64], w: &mut [f64]) -> f64 {
    assert_eq!(l.len(), w.len(), "softmax output length must match input");
    let n = l.len();
    let m = max_nan(l);
    if m.is_nan() {
        w.fill(f64::NAN);
        return m;
    }
    if m == f64::NEG_INFINITY {
        w.fill(1.0 / n as f64);
        return m;
    }
    if m == f64::INFINITY {
        let k = l.iter().filter(|&&x| x == m).count() as f64;
        for (wi, &x) in w.iter_mut().zip(l) {
            *wi = if x == m { 1.0 / k } else { 0.0 };
        }
        return m;
    }
    let mut s = 0.0;
    for (wi, &x) in w.iter_mut().zip(l) {
        let e = (x - m).exp();
        *wi = e;
        s += e;
    }
    // s >= 1 (the maximum contributes exp(0) = 1), so the division is safe.
    let inv = 1.0 / s;
    for wi in w.iter_mut() {
        *wi *= inv;
    }
    m + s.ln()
}

/// Stable softmax of `l` into `w` (same length). See [`softmax_lse`] for degenerate inputs.
pub fn softmax_into(l: &[f64], w: &mut [f64]) {
    softmax_lse(l, w);
}

/// The importance weighted bound `L_N = logsumexp(l) - ln N` (Burda et al. 2016).
pub fn iwae_bound(l: &[f64]) -> f64 {
    logsumexp(l) - (l.len() as f64).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_and_logsumexp_extreme_inputs() {
        let cases: Vec<Vec<f64>> = vec![
            vec![-1e4, 0.0, 3.0, -1e300],
            vec![-1e4, 0.0, 3.0, f64::NEG_INFINITY],
            vec![1e4, 1e4 - 1.0, -1e4],
            vec![0.0, -800.0, -1600.0],
            vec![700.0, 710.0, 720.0],
            vec![-745.0, -746.0],
            vec![f64::NEG_INFINITY; 3],
            vec![5.0],
        ];
        for l in &cases {
            let mut w = vec![0.0; l.len()];
            softmax_into(l, &mut w);
            let s: f64 = w.iter().sum();
            assert!((s - 1.0).abs() < 1e-12, "{l:?}: sum {s}");
            assert!(w.iter().all(|x| x.is_finite() && *x >= 0.0), "{l:?}: {w:?}");
            let lse = logsumexp(l);
            let mut w2 = vec![0.0; l.len()];
            let lse2 = softmax_lse(l, &mut w2);
            assert_eq!(w, w2);
            assert!(lse == lse2, "{lse} vs {lse2}");
        }
        // Known values.
        assert!((logsumexp(&[0.0, 0.0]) - 2f64.ln()).abs() < 1e-15);
        assert!((logsumexp(&[1000.0, 1000.0]) - (1000.0 + 2f64.ln())).abs() < 1e-12);
        assert!((logsumexp(&[-1000.0, -1000.0]) - (-1000.0 + 2f64.ln())).abs() < 1e-12);
        assert_eq!(logsumexp(&[f64::NEG_INFINITY; 4]), f64::NEG_INFINITY);
        assert_eq!(logsumexp(&[]), f64::NEG_INFINITY);
        assert!(logsumexp(&[0.0, f64::NAN]).is_nan());
        assert!(logsumexp(&[f64::NAN, 0.0]).is_nan());
        // Uniform for all -inf; dominant entry gets everything.
        let mut w = [0.0; 3];
        softmax_into(&[f64::NEG_INFINITY; 3], &mut w);
        assert_eq!(w, [1.0 / 3.0; 3]);
        softmax_into(&[0.0, -800.0, -1600.0], &mut w);
        assert_eq!(w, [1.0, 0.0, 0.0]);
        assert!((iwae_bound(&[1.0, 1.0, 1.0, 1.0]) - 1.0).abs() < 1e-15);
    }
}
