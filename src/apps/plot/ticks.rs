//! Axis ranges, tick positions and tick labels. Log axes are drawn in log10 space (see
//! `super`), so every function here works on the values the chart plots and returns the
//! data values the labels show.

use super::Scale;

/// The plotted coordinate of a data value: itself, or its log10 (None where a log axis
/// cannot show it).
pub fn to_axis(scale: Scale, v: f64) -> Option<f64> {
    match scale {
        Scale::Linear => v.is_finite().then_some(v),
        Scale::Log10 => (v.is_finite() && v > 0.0).then(|| v.log10()),
    }
}

/// The axis range over the plotted coordinates `vals`, padded by 4% either side so that
/// points do not sit on the frame; a degenerate range is widened to a visible one.
pub fn padded_range(vals: &[f64]) -> (f64, f64) {
    let (lo, hi) = vals
        .iter()
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let span = hi - lo;
    if span <= 1e-12 * (1.0 + lo.abs()) {
        let w = 0.5 * (1.0 + lo.abs()) * 0.1;
        return (lo - w, hi + w);
    }
    (lo - 0.04 * span, hi + 0.04 * span)
}

/// Ticks of a linear axis over [lo, hi]: multiples of 1, 2 or 5 x 10^e, about `target` of
/// them.
pub fn linear_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    let span = hi - lo;
    if span.is_nan() || span <= 0.0 || !span.is_finite() {
        return vec![lo];
    }
    let raw = span / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= target as f64 + 0.5)
        .unwrap_or(10.0 * mag);
    // The tolerance keeps an end that is a multiple of step up to rounding (0.35 / 0.05).
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    // Round to the step's decimals, so 3 x 0.05 is 0.15, not 0.15000000000000002.
    let scale = 10f64.powi((2 - step.log10().floor() as i32).max(0));
    (first..=last)
        .map(|i| ((i as f64 * step * scale).round() / scale) + 0.0)
        .collect()
}

/// Major and minor ticks of a log10 axis over the exponents [lo, hi]: the major ones at
/// powers of ten (every second or more when the range spans many decades); with less than
/// two decades also at 2 and 5 times them, so a short axis still has labels. Minor ticks
/// sit at 2..9 times the powers. All are returned as exponents.
pub fn log_ticks(lo: f64, hi: f64) -> (Vec<f64>, Vec<f64>) {
    let (e0, e1) = (lo.floor() as i64, hi.ceil() as i64);
    let decades = (e1 - e0).max(1);
    let every = ((decades + 7) / 8).max(1);
    let inside = |v: f64| v >= lo - 1e-9 && v <= hi + 1e-9;
    let mut major: Vec<f64> = (e0..=e1)
        .filter(|e| e.rem_euclid(every) == 0)
        .map(|e| e as f64)
        .filter(|&v| inside(v))
        .collect();
    let mut minor = Vec::new();
    if every > 1 {
        // Thinned labels: light lines at the unlabelled powers only, not 8 per decade.
        let minor = (e0..=e1)
            .filter(|e| e.rem_euclid(every) != 0)
            .map(|e| e as f64)
            .filter(|&v| inside(v))
            .collect();
        return (major, minor);
    }
    for e in e0..=e1 {
        for m in 2..=9 {
            let v = e as f64 + (m as f64).log10();
            if inside(v) {
                minor.push(v);
                if hi - lo < 2.0 && (m == 2 || m == 5) {
                    major.push(v);
                }
            }
        }
    }
    major.sort_by(f64::total_cmp);
    if major.len() < 2 {
        // Less than a decade and no 1-2-5 value inside: fall back to linear ticks on the
        // data values.
        major = linear_ticks(10f64.powf(lo), 10f64.powf(hi), 4)
            .into_iter()
            .filter(|v| *v > 0.0)
            .map(f64::log10)
            .collect();
    }
    (major, minor)
}

/// A tick label for the data value `v`: plain decimals between 1e-3 and 1e5, scientific
/// notation outside, with no trailing zeros.
pub fn format_tick(v: f64) -> String {
    if v == 0.0 {
        return "0".to_string();
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        let s = format!("{v:.1e}");
        return s.replace(".0e", "e");
    }
    let decimals = (3 - a.log10().floor() as i64).clamp(0, 6) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_ticks_are_round_and_inside() {
        assert_eq!(
            linear_ticks(0.0, 10.0, 5),
            vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
        );
        let t = linear_ticks(-197.3, -186.1, 6);
        assert!(t.iter().all(|v| (-197.3..=-186.1).contains(v)));
        assert!(t.len() >= 4 && t.len() <= 7, "{t:?}");
        assert_eq!(
            linear_ticks(0.1, 0.35, 5),
            vec![0.1, 0.15, 0.2, 0.25, 0.3, 0.35]
        );
    }

    #[test]
    fn log_ticks_mark_powers_of_ten() {
        let (major, minor) = log_ticks(0.0, 3.0);
        assert_eq!(major, vec![0.0, 1.0, 2.0, 3.0]);
        assert_eq!(minor.len(), 3 * 8);
        // Under two decades the 2s and 5s are labelled too.
        let (major, _) = log_ticks(0.0, 1.0);
        assert_eq!(major.len(), 4);
        // Less than a decade between powers: still at least two labels.
        let (major, _) = log_ticks(0.35, 0.6);
        assert!(major.len() >= 2, "{major:?}");
        // Many decades: thinned.
        let (major, _) = log_ticks(-20.0, 2.0);
        assert!(major.len() <= 9, "{major:?}");
    }

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(format_tick(1000.0), "1000");
        assert_eq!(format_tick(0.25), "0.25");
        assert_eq!(format_tick(-190.0), "-190");
        assert_eq!(format_tick(1e-5), "1e-5");
        assert_eq!(format_tick(3e6), "3e6");
        assert_eq!(format_tick(0.0), "0");
        assert_eq!(format_tick(2.5e-2), "0.025");
    }

    #[test]
    fn ranges_pad_and_survive_degenerate_data() {
        let (lo, hi) = padded_range(&[0.0, 10.0]);
        assert!(lo < 0.0 && hi > 10.0);
        let (lo, hi) = padded_range(&[3.0, 3.0]);
        assert!(lo < 3.0 && hi > 3.0);
        assert_eq!(padded_range(&[]), (0.0, 1.0));
        assert_eq!(to_axis(Scale::Log10, 0.0), None);
        assert_eq!(to_axis(Scale::Log10, 100.0), Some(2.0));
    }
}
