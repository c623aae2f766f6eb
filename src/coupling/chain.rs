//! One datapoint's pair of coupled chains as a state machine over log-weights, one time index
//! per [`step`]. The exact models ([`super::estimate`]) and the training backends run this same
//! code (the GPU runs its WGSL twin, `shaders/coupling.wgsl`): a step reads the log-weights of
//! the particles drawn so far and four uniforms, moves both chains and adds the step's share of
//! `H_{k:m}` to the particles' coefficients. It never draws: the caller draws the step's block
//! of particles ([`CouplingConfig::step_block`]) before calling it, so a whole batch of chains
//! can advance in lockstep.
//!
//! Particle ids follow one fixed layout per datapoint: first the initial particles (PIMH: the
//! `K` of `X_0`, then the `K` of `Y_0`; ISIR/DISIR: `X_0`, then `Y_0`), then one block per time
//! index `t` (PIMH: the `K` proposed particles; ISIR/DISIR: the `K - 1` fresh ones).

use super::kernels::{
    disir_select, disir_select_coupled, isir_select, isir_select_coupled, pimh_accept,
};
use super::{bc_weight, ChainKernel, CouplingConfig, RbSet};
use std::ops::Range;

impl CouplingConfig {
    /// Particles drawn before time index 0: `2K` for PIMH, 2 for ISIR/DISIR.
    pub fn initial_particles(&self) -> usize {
        match self.kernel {
            ChainKernel::Pimh => 2 * self.particles,
            ChainKernel::Isir | ChainKernel::Disir => 2,
        }
    }

    /// Particles one time index draws: `K` (PIMH's proposal) or `K - 1` (ISIR's fresh ones).
    pub fn particles_per_step(&self) -> usize {
        match self.kernel {
            ChainKernel::Pimh => self.particles,
            ChainKernel::Isir | ChainKernel::Disir => self.particles - 1,
        }
    }

    /// The ids of the particles time index `t` draws.
    pub fn step_block(&self, t: usize) -> Range<usize> {
        let start = self.initial_particles() + t * self.particles_per_step();
        start..start + self.particles_per_step()
    }

    /// Particles held after `iterations` time indices (the initial ones included).
    pub fn particles_through(&self, iterations: usize) -> usize {
        self.initial_particles() + iterations * self.particles_per_step()
    }

    /// The most particles one datapoint can draw (`max_iters` time indices).
    pub fn particle_cap(&self) -> usize {
        self.particles_through(self.max_iters)
    }
}

/// Where one datapoint's chains stand. `Default` is the state before time index 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChainState {
    /// The next time index to process.
    pub t: usize,
    /// The meeting time, once the chains have met.
    pub tau: Option<usize>,
    /// Nothing more to process (met and past `m`, or capped).
    pub done: bool,
    /// Stopped by `max_iters` before meeting: the estimate is truncated and biased.
    pub capped: bool,
    /// ISIR/DISIR: the chains' current particles; PIMH: the first id of their current sets.
    pub x: usize,
    pub y: usize,
    /// ISIR/DISIR: the conditioning particle of the set `X_t` (`Y_t`) was selected from, used
    /// only by the trap [`RbSet::SelectedFrom`].
    pub x_prev: Option<usize>,
    pub y_prev: Option<usize>,
    /// Particles this datapoint's estimate has used: its cost.
    pub particles: usize,
}

impl ChainState {
    /// Whether the next step reads its block of particles (PIMH skips the proposal once the
    /// chains have met and `t + 1 > m`); callers that draw lazily draw it only then.
    pub fn needs_block(&self, cfg: &CouplingConfig) -> bool {
        let pimh_finished =
            cfg.kernel == ChainKernel::Pimh && self.tau.is_some() && self.t + 1 > cfg.horizon;
        !(self.done || pimh_finished)
    }

    /// The meeting time as reported: `tau`, or `max_iters` (a lower bound) when capped.
    pub fn meeting_time(&self, cfg: &CouplingConfig) -> usize {
        self.tau.unwrap_or(cfg.max_iters)
    }
}

/// Adds `scale * softmax(l[ids])` to `coef[ids]`: `scale` times the Rao-Blackwellised test
/// function `h` of the particle set `ids`.
fn add_rb(l: &[f64], ids: &[usize], scale: f64, coef: &mut [f64]) {
    if scale == 0.0 {
        return;
    }
    for (&i, w) in ids.iter().zip(weights(l, ids)) {
        coef[i] += scale * w;
    }
}

fn log_sum(l: &[f64], ids: Range<usize>) -> f64 {
    let lmax = l[ids.clone()]
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    lmax + l[ids].iter().map(|&v| (v - lmax).exp()).sum::<f64>().ln()
}

/// The set `{cond} ∪ block`, the conditioning particle in slot 0.
fn set_of(cond: usize, block: Range<usize>) -> Vec<usize> {
    std::iter::once(cond).chain(block).collect()
}

/// Processes time index `st.t` of one datapoint: `l` holds the log-weights of every particle
/// drawn so far (at least through `cfg.step_block(st.t)` when [`ChainState::needs_block`]),
/// `u` four uniforms in `[0, 1)` for this step, `coef` the particles' coefficients, to which
/// the step adds. The sum over steps is `H_{k:m}` (module docs of [`super`]).
pub fn step(cfg: &CouplingConfig, st: &mut ChainState, l: &[f64], u: [f64; 4], coef: &mut [f64]) {
    if st.done {
        return;
    }
    let (t, k, m, lag, kk) = (st.t, cfg.burn_in, cfg.horizon, cfg.lag, cfg.particles);
    let mcmc_w = 1.0 / (m - k + 1) as f64;
    if t == 0 {
        st.particles = cfg.initial_particles();
        (st.x, st.y) = match cfg.kernel {
            ChainKernel::Pimh => (0, kk),
            ChainKernel::Isir | ChainKernel::Disir => (0, 1),
        };
    }
    let coupled = t >= lag && st.tau.is_none();
    let block = cfg.step_block(t);
    match cfg.kernel {
        ChainKernel::Pimh => {
            let xs: Vec<usize> = (st.x..st.x + kk).collect();
            let ys: Vec<usize> = (st.y..st.y + kk).collect();
            if (k..=m).contains(&t) {
                add_rb(l, &xs, mcmc_w, coef);
            }
            if coupled {
                let v = bc_weight(t, k, m, lag);
                add_rb(l, &xs, v, coef);
                add_rb(l, &ys, -v, coef);
            }
            if st.needs_block(cfg) {
                st.particles += kk;
                let lp = log_sum(l, block.clone());
                let lx = log_sum(l, st.x..st.x + kk);
                if coupled {
                    let ly = log_sum(l, st.y..st.y + kk);
                    let (ax, ay) = (pimh_accept(lx, lp, u[0]), pimh_accept(ly, lp, u[0]));
                    if ax && ay {
                        st.tau = Some(t + 1);
                    }
                    if ax {
                        st.x = block.start;
                    }
                    if ay {
                        st.y = block.start;
                    }
                } else if pimh_accept(lx, lp, u[0]) {
                    st.x = block.start;
                }
            }
        }
        ChainKernel::Isir | ChainKernel::Disir => {
            st.particles += kk - 1;
            let sx = set_of(st.x, block.clone());
            // The set h(X_t) averages over: the built set, or (the trap) the set X_t was
            // selected from, built at t - 1.
            let h_set = |cur: usize, prev: Option<usize>| match (cfg.rb_set, prev) {
                (RbSet::SelectedFrom, Some(p)) => set_of(p, cfg.step_block(t - 1)),
                _ => set_of(cur, block.clone()),
            };
            if (k..=m).contains(&t) {
                add_rb(l, &h_set(st.x, st.x_prev), mcmc_w, coef);
            }
            let slot_id = |cond: usize, slot: usize| {
                if slot == 0 {
                    cond
                } else {
                    block.start + slot - 1
                }
            };
            if !coupled {
                let w = weights(l, &sx);
                let slot = match cfg.kernel {
                    ChainKernel::Isir => isir_select(&w, u[0]),
                    _ => disir_select(&w, [u[0], u[1]]),
                };
                st.x_prev = Some(st.x);
                st.x = slot_id(st.x, slot);
            } else {
                let sy = set_of(st.y, block.clone());
                let v = bc_weight(t, k, m, lag);
                if v > 0.0 {
                    add_rb(l, &h_set(st.x, st.x_prev), v, coef);
                    add_rb(l, &h_set(st.y, st.y_prev), -v, coef);
                }
                let (ix, iy) = match cfg.kernel {
                    ChainKernel::Isir => {
                        isir_select_coupled(&weights(l, &sx), &weights(l, &sy), [u[0], u[1], u[2]])
                    }
                    _ => {
                        // One common scale for both sets (they share slots 1..K).
                        let c = sx
                            .iter()
                            .chain(&sy[..1])
                            .map(|&i| l[i])
                            .fold(f64::NEG_INFINITY, f64::max);
                        let wf: Vec<f64> = block.clone().map(|i| (l[i] - c).exp()).collect();
                        let (w0x, w0y) = ((l[st.x] - c).exp(), (l[st.y] - c).exp());
                        disir_select_coupled(&wf, w0x, w0y, [u[0], u[1]])
                    }
                };
                if ix == iy && ix >= 1 {
                    st.tau = Some(t + 1);
                }
                st.x_prev = Some(st.x);
                st.y_prev = Some(st.y);
                st.x = slot_id(st.x, ix);
                st.y = slot_id(st.y, iy);
            }
        }
    }
    st.t = t + 1;
    if st.tau.is_some() && st.t > m {
        st.done = true;
    } else if st.t >= cfg.max_iters {
        st.done = true;
        st.capped = true;
    }
}

/// `softmax(l[ids])`.
fn weights(l: &[f64], ids: &[usize]) -> Vec<f64> {
    let lmax = ids.iter().map(|&i| l[i]).fold(f64::NEG_INFINITY, f64::max);
    let mut w: Vec<f64> = ids.iter().map(|&i| (l[i] - lmax).exp()).collect();
    let s: f64 = w.iter().sum();
    w.iter_mut().for_each(|v| *v /= s);
    w
}

/// Particle-rows one extra backward group is charged in [`backward_groups`]: its encoder pass
/// and dispatch overhead, about a 256-row decoder pass.
pub const GROUP_OVERHEAD: usize = 256;

/// Splits a batch into contiguous row groups for the backward after a coupled step. Datapoint
/// `r`'s coefficients are zero beyond the `used[r]` particles its estimate used, so a group
/// `(rows, n)` needs particles `0..n` with `n` the most any of its rows used. Contiguous,
/// because a sub-batch's noise counter is its first datapoint plus the row. The groups minimise
/// `sum |g| n_g + overhead x groups` (dynamic programming, quadratic in the batch; above 4096
/// rows, fixed groups of 64).
pub fn backward_groups(used: &[usize], overhead: usize) -> Vec<(Range<usize>, usize)> {
    let b = used.len();
    let fixed = |size: usize| {
        (0..b)
            .step_by(size)
            .map(|r0| {
                let r1 = (r0 + size).min(b);
                (r0..r1, used[r0..r1].iter().copied().max().unwrap_or(0))
            })
            .collect()
    };
    if b > 4096 {
        return fixed(64);
    }
    // best[j]: least cost of rows 0..j; from[j]: where its last group starts.
    let mut best = vec![0usize; b + 1];
    let mut from = vec![0usize; b + 1];
    for j in 1..=b {
        let (mut m, mut cost) = (0usize, usize::MAX);
        for i in (0..j).rev() {
            m = m.max(used[i]);
            let c = best[i]
                .saturating_add((j - i).saturating_mul(m))
                .saturating_add(overhead);
            if c < cost {
                (cost, from[j]) = (c, i);
            }
        }
        best[j] = cost;
    }
    let mut groups = Vec::new();
    let mut j = b;
    while j > 0 {
        let i = from[j];
        groups.push((i..j, used[i..j].iter().copied().max().unwrap_or(0)));
        j = i;
    }
    groups.reverse();
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(groups: &[(Range<usize>, usize)], overhead: usize) -> usize {
        groups.iter().map(|(r, n)| r.len() * n + overhead).sum()
    }

    /// Every contiguous partition of a small batch, by brute force.
    fn brute(used: &[usize], overhead: usize) -> usize {
        let b = used.len();
        (0..1u32 << (b - 1))
            .map(|cuts| {
                let mut groups = Vec::new();
                let mut start = 0;
                for r in 1..=b {
                    if r == b || cuts & (1 << (r - 1)) != 0 {
                        let n = *used[start..r].iter().max().unwrap();
                        groups.push((start..r, n));
                        start = r;
                    }
                }
                cost(&groups, overhead)
            })
            .min()
            .unwrap()
    }

    #[test]
    fn backward_groups_cover_the_batch_at_least_cost() {
        let cases: [&[usize]; 4] = [
            &[22, 22, 22, 22],
            &[22, 30, 700, 26, 22, 22, 34, 22],
            &[5, 900, 5, 900, 5],
            &[14, 14, 44, 17, 17, 14, 100, 14, 14, 14],
        ];
        for used in cases {
            for overhead in [0, 16, 256, 100_000] {
                let g = backward_groups(used, overhead);
                let mut next = 0;
                for (rows, n) in &g {
                    assert_eq!(rows.start, next, "{used:?}: groups must tile the batch");
                    next = rows.end;
                    assert!(used[rows.clone()].iter().all(|u| u <= n));
                }
                assert_eq!(next, used.len());
                assert_eq!(
                    cost(&g, overhead),
                    brute(used, overhead),
                    "{used:?} {overhead}"
                );
            }
        }
        // A large overhead keeps one group; none splits a long tail off.
        assert_eq!(backward_groups(&[22, 700, 22], 100_000).len(), 1);
        assert_eq!(
            backward_groups(&[22, 22, 700, 22, 22], 1),
            vec![(0..2, 22), (2..3, 700), (3..5, 22)]
        );
    }
}
