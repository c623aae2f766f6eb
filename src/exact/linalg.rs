//! Tiny dense `f64` linear algebra for the exact models (row-major `n x n` matrices).

/// Cholesky factor `L` (lower triangular, row-major) of a symmetric positive definite `a`,
/// `a = L L^T`; `None` if `a` is not (numerically) positive definite.
pub fn cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    assert_eq!(a.len(), n * n, "matrix must be n x n");
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= l[i * n + k] * l[j * n + k];
            }
            if i == j {
                if s <= 0.0 || !s.is_finite() {
                    return None;
                }
                l[i * n + i] = s.sqrt();
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    Some(l)
}

/// Solves `(L L^T) x = rhs` for the Cholesky factor `l` of [`cholesky`].
pub fn cholesky_solve(l: &[f64], n: usize, rhs: &[f64]) -> Vec<f64> {
    assert_eq!(rhs.len(), n);
    // Forward: L y = rhs.
    let mut y = rhs.to_vec();
    for i in 0..n {
        let mut s = y[i];
        for k in 0..i {
            s -= l[i * n + k] * y[k];
        }
        y[i] = s / l[i * n + i];
    }
    // Backward: L^T x = y.
    for i in (0..n).rev() {
        let mut s = y[i];
        for k in i + 1..n {
            s -= l[k * n + i] * y[k];
        }
        y[i] = s / l[i * n + i];
    }
    y
}

/// `ln det(L L^T)` for the Cholesky factor `l`.
pub fn cholesky_logdet(l: &[f64], n: usize) -> f64 {
    2.0 * (0..n).map(|i| l[i * n + i].ln()).sum::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solve_and_logdet_on_a_known_matrix() {
        // a = [[4, 2, 0], [2, 5, 1], [0, 1, 3]]: det = 4 (15 - 1) - 2 (6 - 0) = 44.
        let a = [4.0, 2.0, 0.0, 2.0, 5.0, 1.0, 0.0, 1.0, 3.0];
        let l = cholesky(&a, 3).unwrap();
        assert!((cholesky_logdet(&l, 3) - 44f64.ln()).abs() < 1e-13);
        let x = [1.0, -2.0, 0.5];
        let rhs: Vec<f64> = (0..3)
            .map(|i| (0..3).map(|j| a[i * 3 + j] * x[j]).sum())
            .collect();
        let got = cholesky_solve(&l, 3, &rhs);
        for (g, w) in got.iter().zip(&x) {
            assert!((g - w).abs() < 1e-13, "{got:?}");
        }
        assert!(cholesky(&[1.0, 2.0, 2.0, 1.0], 2).is_none());
    }
}
