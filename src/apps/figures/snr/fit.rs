//! The trend of log10 SNR against log10 K: weighted least squares with each point's weight
//! 1 / se^2, se being its jackknife standard error carried to log10 by the delta method
//! (se_log = se / (SNR ln 10)).
//!
//! The slope's standard error is sqrt(1 / sum w (x - xbar_w)^2), the one the points'
//! standard errors imply, scaled up by sqrt(chi^2 / (n - 2)) when the points scatter about
//! the line more than those errors allow (a straight line being only an approximate law):
//! the scale factor is never below 1.

/// A fitted line: slope, its standard error, and the points it used.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Slope {
    pub slope: f64,
    pub se: f64,
    pub intercept: f64,
    pub points: usize,
    /// chi^2 / (n - 2) of the weighted residuals (0 with two points).
    pub chi2_per_dof: f64,
}

impl Slope {
    /// |slope| / se: how many standard errors the slope lies from zero.
    pub fn z(&self) -> f64 {
        self.slope.abs() / self.se
    }
}

/// Weighted least squares through (x, y, se_y); None with fewer than two distinct x or a
/// non-positive standard error.
pub fn weighted_slope(pts: &[(f64, f64, f64)]) -> Option<Slope> {
    if pts.len() < 2
        || pts
            .iter()
            .any(|p| p.2.is_nan() || p.2 <= 0.0 || !p.1.is_finite())
    {
        return None;
    }
    let w: Vec<f64> = pts.iter().map(|p| 1.0 / (p.2 * p.2)).collect();
    let sw: f64 = w.iter().sum();
    let xbar = pts.iter().zip(&w).map(|(p, w)| w * p.0).sum::<f64>() / sw;
    let ybar = pts.iter().zip(&w).map(|(p, w)| w * p.1).sum::<f64>() / sw;
    let sxx: f64 = pts
        .iter()
        .zip(&w)
        .map(|(p, w)| w * (p.0 - xbar).powi(2))
        .sum();
    if sxx <= 0.0 {
        return None;
    }
    let sxy: f64 = pts
        .iter()
        .zip(&w)
        .map(|(p, w)| w * (p.0 - xbar) * (p.1 - ybar))
        .sum();
    let slope = sxy / sxx;
    let intercept = ybar - slope * xbar;
    let chi2: f64 = pts
        .iter()
        .zip(&w)
        .map(|(p, w)| w * (p.1 - intercept - slope * p.0).powi(2))
        .sum();
    let dof = pts.len() as f64 - 2.0;
    let chi2_per_dof = if dof > 0.0 { chi2 / dof } else { 0.0 };
    Some(Slope {
        slope,
        se: (1.0 / sxx).sqrt() * chi2_per_dof.sqrt().max(1.0),
        intercept,
        points: pts.len(),
        chi2_per_dof,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_line_and_scales_its_error_by_the_scatter() {
        // Exact line: slope 0.5, se from the weights alone (chi^2 = 0 < 1).
        let pts: Vec<_> = (0..4)
            .map(|i| (i as f64, 1.0 + 0.5 * i as f64, 0.1))
            .collect();
        let s = weighted_slope(&pts).unwrap();
        assert!((s.slope - 0.5).abs() < 1e-12 && (s.intercept - 1.0).abs() < 1e-12);
        // sum w (x - xbar)^2 = 100 * 5 = 500.
        assert!((s.se - (1.0f64 / 500.0).sqrt()).abs() < 1e-12, "{s:?}");
        // Residuals of +-1 at se 0.1: chi^2/dof far above 1 inflates the error.
        let noisy: Vec<_> = pts
            .iter()
            .enumerate()
            .map(|(i, p)| (p.0, p.1 + if i % 2 == 0 { 1.0 } else { -1.0 }, p.2))
            .collect();
        let t = weighted_slope(&noisy).unwrap();
        assert!(t.chi2_per_dof > 100.0 && t.se > 10.0 * s.se, "{t:?}");
        // A point with a large error barely moves the line.
        let mut outlier = pts.clone();
        outlier.push((4.0, 100.0, 1e6));
        assert!((weighted_slope(&outlier).unwrap().slope - 0.5).abs() < 1e-6);
        assert!(weighted_slope(&pts[..1]).is_none());
        assert!(weighted_slope(&[(1.0, 1.0, 0.0), (2.0, 2.0, 1.0)]).is_none());
    }
}
