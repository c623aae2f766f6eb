//! Meeting-time statistics of a batch of coupled estimates.

use super::CouplingEstimate;

/// Summary of meeting times `tau` (docs/design.md §1): they differ per datapoint, and their tail
/// decides the cost of a batch that iterates until every chain has met.
///
/// Capped runs are censored at their cap (their `meeting_time` is a lower bound) and are
/// counted in `capped`; they are included in the quantiles and the survival function at their
/// censored value, so a nonzero `capped` means those figures are lower bounds.
#[derive(Clone, Debug, PartialEq)]
pub struct MeetingStats {
    /// Number of runs.
    pub n: usize,
    /// Runs that hit the iteration cap before meeting.
    pub capped: usize,
    /// Mean meeting time.
    pub mean: f64,
    /// Sample standard deviation of the meeting time.
    pub sd: f64,
    /// Smallest and largest meeting time.
    pub min: usize,
    pub max: usize,
    /// Empirical quantiles (nearest rank): median, 90 %, 99 %.
    pub p50: usize,
    pub p90: usize,
    pub p99: usize,
    /// Empirical survival function: `survival[t] = P(tau > t)` for `t = 0..=max`
    /// (so `survival[max] = 0`).
    pub survival: Vec<f64>,
}

impl MeetingStats {
    /// From meeting times and cap flags (same length).
    pub fn from_times(times: &[usize], capped: &[bool]) -> MeetingStats {
        assert_eq!(times.len(), capped.len(), "one cap flag per meeting time");
        assert!(!times.is_empty(), "no meeting times");
        let n = times.len();
        let mut sorted = times.to_vec();
        sorted.sort_unstable();
        let mean = sorted.iter().map(|&t| t as f64).sum::<f64>() / n as f64;
        let sd = if n > 1 {
            (sorted
                .iter()
                .map(|&t| (t as f64 - mean).powi(2))
                .sum::<f64>()
                / (n - 1) as f64)
                .sqrt()
        } else {
            0.0
        };
        let q = |p: f64| sorted[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
        let max = sorted[n - 1];
        let mut survival = vec![0.0; max + 1];
        let mut i = 0;
        for (t, s) in survival.iter_mut().enumerate() {
            while i < n && sorted[i] <= t {
                i += 1;
            }
            *s = (n - i) as f64 / n as f64;
        }
        MeetingStats {
            n,
            capped: capped.iter().filter(|&&c| c).count(),
            mean,
            sd,
            min: sorted[0],
            max,
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            survival,
        }
    }

    /// From a batch of estimates.
    pub fn from_estimates(estimates: &[CouplingEstimate]) -> MeetingStats {
        let times: Vec<usize> = estimates.iter().map(|e| e.meeting_time).collect();
        let capped: Vec<bool> = estimates.iter().map(|e| e.capped).collect();
        Self::from_times(&times, &capped)
    }

    /// `P(tau > t)` (0 beyond the largest observed time).
    pub fn survival_at(&self, t: usize) -> f64 {
        self.survival.get(t).copied().unwrap_or(0.0)
    }
}

impl std::fmt::Display for MeetingStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "meeting time over {} runs: mean {:.2} (sd {:.2}), min {}, median {}, p90 {}, p99 {}, max {}, capped {}",
            self.n, self.mean, self.sd, self.min, self.p50, self.p90, self.p99, self.max, self.capped
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_a_small_sample() {
        let s = MeetingStats::from_times(&[2, 3, 3, 5, 10], &[false, false, false, false, true]);
        assert_eq!(s.n, 5);
        assert_eq!(s.capped, 1);
        assert!((s.mean - 4.6).abs() < 1e-12);
        assert_eq!((s.min, s.p50, s.p90, s.p99, s.max), (2, 3, 10, 10, 10));
        assert_eq!(s.survival_at(0), 1.0);
        assert_eq!(s.survival_at(2), 0.8);
        assert_eq!(s.survival_at(3), 0.4);
        assert_eq!(s.survival_at(9), 0.2);
        assert_eq!(s.survival_at(10), 0.0);
        assert_eq!(s.survival_at(100), 0.0);
        assert!(s.to_string().contains("capped 1"));
    }
}
