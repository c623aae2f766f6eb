//! The index draws of the three kernels, single and coupled, as pure functions of the
//! normalised (or common-scale) importance weights of the particle sets and of given uniforms
//! in `[0, 1)` (Philox numbers on a backend, the caller's generator on the exact models), so the
//! host and the device make the same draws.
//!
//! Slot conventions for ISIR and DISIR: slot 0 of a set holds the chain's current particle (the
//! conditioning particle), slots `1..K` the `K - 1` fresh particles, which in a coupled step are
//! the *same* particles for both chains.

#[cfg(test)]
use rand::Rng;

/// Index `i` with `sum_{j<i} p_j <= u < sum_{j<=i} p_j` for `u` in `[0, sum p)`; rounding at the
/// top end falls back to the last index with positive mass.
pub(crate) fn categorical(p: &[f64], u: f64) -> usize {
    let mut c = 0.0;
    let mut last = 0;
    for (i, &pi) in p.iter().enumerate() {
        if pi > 0.0 {
            c += pi;
            last = i;
            if u < c {
                return i;
            }
        }
    }
    last
}

/// One draw from `p` (need not be normalised).
#[cfg(test)]
pub(crate) fn sample_categorical(p: &[f64], rng: &mut impl Rng) -> usize {
    let s: f64 = p.iter().sum();
    categorical(p, rng.random::<f64>() * s)
}

/// The ISIR selection: an index drawn proportionally to the weights `w`, with uniform `u`.
pub(crate) fn isir_select(w: &[f64], u: f64) -> usize {
    let s: f64 = w.iter().sum();
    categorical(w, u * s)
}

/// Coupled ISIR selection for two sets that share slots `1..K` (the fresh particles) and differ
/// in slot 0. `wx`, `wy`: each set's normalised weights.
///
/// This is the maximal coupling of the laws of the two *selected particles*: their common part
/// is `min(wx_j, wy_j)` on the shared slots `j >= 1` only, since slot 0 holds two different
/// particles (the index-level maximal coupling would also put `min(wx_0, wy_0)` on "both keep
/// slot 0", which gives identical indices but not identical particles). With probability
/// `a = sum_{j>=1} min(wx_j, wy_j)` both chains take the same fresh particle (they meet);
/// otherwise each draws independently from its residual `(w - min) / (1 - a)`, whose supports on
/// the shared slots are disjoint. Each marginal is exactly the ISIR selection.
///
/// Uniforms: `u[0]` decides common part or residuals and places the common draw, `u[1]` and
/// `u[2]` draw the two residuals. Returns `(ix, iy)`; the chains meet iff `ix == iy >= 1`.
pub(crate) fn isir_select_coupled(wx: &[f64], wy: &[f64], u: [f64; 3]) -> (usize, usize) {
    debug_assert_eq!(wx.len(), wy.len());
    let k = wx.len();
    let mut common = vec![0.0; k];
    for j in 1..k {
        common[j] = wx[j].min(wy[j]);
    }
    let a: f64 = common.iter().sum();
    if u[0] < a {
        let j = categorical(&common, u[0]);
        return (j, j);
    }
    let rx: Vec<f64> = wx
        .iter()
        .zip(&common)
        .map(|(w, c)| (w - c).max(0.0))
        .collect();
    let ry: Vec<f64> = wy
        .iter()
        .zip(&common)
        .map(|(w, c)| (w - c).max(0.0))
        .collect();
    (isir_select(&rx, u[1]), isir_select(&ry, u[2]))
}

/// The DISIR move (see the module docs of [`super`] for its status): Liu's (1996) Metropolised
/// version of ISIR's index draw. `w`: weights of the set on any common scale, slot 0 the current
/// particle. A fresh slot `j >= 1` is proposed with probability `w_j / W_f`,
/// `W_f = sum_{j>=1} w_j`, and accepted with probability `min(1, W_f / (W_f - w_j + w_0))`;
/// otherwise the chain keeps slot 0. `u[0]` proposes, `u[1]` accepts. Returns the selected slot.
pub(crate) fn disir_select(w: &[f64], u: [f64; 2]) -> usize {
    let wf: f64 = w[1..].iter().sum();
    if w.len() < 2 || wf <= 0.0 {
        return 0;
    }
    let j = 1 + categorical(&w[1..], u[0] * wf);
    if u[1] * (wf - w[j] + w[0]) < wf {
        j
    } else {
        0
    }
}

/// Coupled DISIR for two sets sharing slots `1..K`. `wf`: the shared fresh weights
/// (slots `1..K`, common scale), `w0x`, `w0y`: each chain's current particle's weight on the
/// same scale. The proposal law `w_j / W_f` is the same for both chains, so they propose the
/// same fresh slot `j`; a common uniform decides acceptance. Both accept (and meet) with
/// probability `min(alpha_x, alpha_y)`. Returns `(ix, iy)`.
pub(crate) fn disir_select_coupled(wf: &[f64], w0x: f64, w0y: f64, u: [f64; 2]) -> (usize, usize) {
    let sf: f64 = wf.iter().sum();
    if wf.is_empty() || sf <= 0.0 {
        return (0, 0);
    }
    let j = 1 + categorical(wf, u[0] * sf);
    let u = u[1];
    let ix = if u * (sf - wf[j - 1] + w0x) < sf {
        j
    } else {
        0
    };
    let iy = if u * (sf - wf[j - 1] + w0y) < sf {
        j
    } else {
        0
    };
    (ix, iy)
}

/// PIMH acceptance with a given uniform in `[0, 1)`: accept the proposed set iff
/// `u < Z' / Z`, i.e. `ln u < log_sum' - log_sum` (the sets have the same size, so the ratio of
/// mean weights is the ratio of sums).
pub(crate) fn pimh_accept(log_sum_current: f64, log_sum_proposed: f64, u: f64) -> bool {
    u.ln() < log_sum_proposed - log_sum_current
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn freq(counts: &[f64], n: f64) -> Vec<f64> {
        counts.iter().map(|c| c / n).collect()
    }

    /// Checks |empirical - p| < 5 SE in every cell.
    fn assert_law(name: &str, counts: &[f64], n: f64, p: &[f64]) {
        for (i, (&f, &pi)) in freq(counts, n).iter().zip(p).enumerate() {
            let se = (pi * (1.0 - pi) / n).sqrt().max(1e-12);
            assert!(
                (f - pi).abs() < 5.0 * se,
                "{name}[{i}]: frequency {f} vs probability {pi}"
            );
        }
    }

    #[test]
    fn categorical_edges() {
        assert_eq!(categorical(&[0.0, 0.5, 0.5], 0.0), 1);
        assert_eq!(categorical(&[0.2, 0.3, 0.5], 0.2), 1);
        assert_eq!(categorical(&[0.2, 0.3, 0.0], 0.9999), 1);
        assert_eq!(categorical(&[0.2, 0.3, 0.5], 1.0), 2);
    }

    #[test]
    fn isir_coupling_has_the_right_marginals_and_meets_maximally() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        // Slots 1..4 shared: proportional to the same weights; slot 0 differs.
        let shared = [0.5, 1.0, 2.0, 0.25];
        let mk = |w0: f64| {
            let mut w = vec![w0];
            w.extend_from_slice(&shared);
            let s: f64 = w.iter().sum();
            w.iter().map(|v| v / s).collect::<Vec<_>>()
        };
        let (wx, wy) = (mk(3.0), mk(0.5));
        let n = 200_000;
        let (mut cx, mut cy, mut meet) = (vec![0.0; 5], vec![0.0; 5], 0.0);
        for _ in 0..n {
            let (ix, iy) = isir_select_coupled(&wx, &wy, rng.random());
            cx[ix] += 1.0;
            cy[iy] += 1.0;
            // Both keeping slot 0 is allowed (two different particles); equal shared slots
            // only through the common part.
            if ix == iy && ix >= 1 {
                meet += 1.0;
            }
        }
        assert_law("x", &cx, n as f64, &wx);
        assert_law("y", &cy, n as f64, &wy);
        let a: f64 = (1..5).map(|j| wx[j].min(wy[j])).sum();
        assert_law("meet", &[meet], n as f64, &[a]);
    }

    #[test]
    fn disir_leaves_the_index_law_invariant_and_couples() {
        // Liu's Metropolised Gibbs step on the index leaves P(b) ∝ w invariant: start from
        // b ~ w (placing the current particle in slot 0 by relabelling) and check the law of
        // the selected slot's weight class.
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let w = [0.7, 0.1, 2.0, 0.4, 1.3];
        let s: f64 = w.iter().sum();
        let p: Vec<f64> = w.iter().map(|v| v / s).collect();
        let n = 200_000;
        let mut counts = vec![0.0; w.len()];
        for _ in 0..n {
            let b = sample_categorical(&p, &mut rng);
            // Relabel so that the current index b sits in slot 0.
            let mut perm: Vec<usize> = vec![b];
            perm.extend((0..w.len()).filter(|&i| i != b));
            let wp: Vec<f64> = perm.iter().map(|&i| w[i]).collect();
            let j = disir_select(&wp, rng.random());
            counts[perm[j]] += 1.0;
        }
        assert_law("disir", &counts, n as f64, &p);

        // Coupled: marginals equal the single move's law from the same current slot.
        let wf = [0.1, 2.0, 0.4, 1.3];
        let (w0x, w0y) = (0.7, 3.0);
        let single = |w0: f64| {
            let wf_s: f64 = wf.iter().sum();
            let mut q = vec![0.0; 5];
            for j in 1..5 {
                let a = (wf_s / (wf_s - wf[j - 1] + w0)).min(1.0);
                q[j] = wf[j - 1] / wf_s * a;
            }
            q[0] = 1.0 - q[1..].iter().sum::<f64>();
            q
        };
        let (mut cx, mut cy) = (vec![0.0; 5], vec![0.0; 5]);
        for _ in 0..n {
            let (ix, iy) = disir_select_coupled(&wf, w0x, w0y, rng.random());
            cx[ix] += 1.0;
            cy[iy] += 1.0;
        }
        assert_law("disir x", &cx, n as f64, &single(w0x));
        assert_law("disir y", &cy, n as f64, &single(w0y));
    }

    #[test]
    fn pimh_acceptance_matches_ratio() {
        assert!(pimh_accept(0.0, 1.0, 1.0));
        assert!(pimh_accept(0.0, (0.5f64).ln(), 0.49));
        assert!(!pimh_accept(0.0, (0.5f64).ln(), 0.51));
    }
}
