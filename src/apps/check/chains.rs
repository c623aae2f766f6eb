//! Coupled chains: the whole batch advances in lockstep, each datapoint's chains on one GPU
//! thread (shaders/coupling.wgsl) against the host's coupling::chain::step; then the
//! backward over the particles each datapoint used: on the GPU one group per datapoint,
//! chunked to what one pass holds (the initial block), on the CPU its default grouping.
//! The GPU records several time indices per submit: runs that stop inside a submit and one
//! capped inside a submit are checked against the CPU, and every run against the GPU's own
//! at one index per submit, which must leave the same bits.

use super::{compare, restart, ParityRow, Suite};
use crate::backend::{Backend, ChainOutcome};
use crate::coupling::{ChainKernel, CouplingConfig};
use anyhow::Result;

/// Iterations, meeting times, particles and caps as one vector.
fn summary(o: &ChainOutcome) -> Vec<f32> {
    let mut v = vec![o.iterations as f32];
    v.extend(o.meeting_times.iter().map(|&t| t as f32));
    v.extend(o.particles.iter().map(|&p| p as f32));
    v.extend(o.capped.iter().map(|&c| c as u8 as f32));
    v
}

/// Per chain kernel and configuration (standard, K = 2, capped by --max-iters inside a
/// submit): the chains' outcome, the gradient and the objective against the CPU, then all
/// three against the GPU's own run at one time index per submit.
pub(super) fn rows(suite: &mut Suite) -> Result<Vec<ParityRow>> {
    let (batch, inputs) = (suite.batch, suite.step_inputs());
    let x = &suite.x;
    let (cpu, gpu) = (&mut suite.cpu, &mut suite.gpu);
    let params = &suite.params.values;
    let mut rows = Vec::new();
    for kernel in ChainKernel::ALL {
        let standard = CouplingConfig {
            horizon: 2,
            max_iters: 60,
            ..CouplingConfig::new(kernel, 4)
        };
        // The submits of m = 2 are 0..3, 3, 4..6, 6..10, 10..18, ... (16 indices a submit
        // at most). On the default shape the standard runs stop after 4, 6 and 5 indices,
        // DISIR's inside a submit; at K = 2 after 7, 13 and 15, all inside one, the indices
        // after it no-ops. Capped at 8, the last submit is 6..8, cut from 6..10 at the cap,
        // and each kernel has a datapoint capped (at index 7) and others done by index 3.
        let k2 = CouplingConfig {
            particles: 2,
            ..standard
        };
        let capped = CouplingConfig {
            max_iters: 8,
            particles: if kernel == ChainKernel::Pimh { 3 } else { 2 },
            ..standard
        };
        for (chains, what) in [(standard, ""), (k2, " K = 2"), (capped, " capped at 8")] {
            let limit = batch * chains.particles_through(1);
            let run = |b: &mut dyn Backend| -> Result<(ChainOutcome, Vec<f32>, f64)> {
                restart(b, params)?;
                let o = b.chain_step(x, &inputs, &chains)?;
                let g = b.gradient()?;
                Ok((o, g, b.take_stats()?.objective))
            };
            gpu.set_row_limit(Some(limit));
            gpu.set_chain_group_overhead(Some(0));
            let (oc, gc, sc) = run(cpu)?;
            let (og, gg, sg) = run(gpu)?;
            gpu.set_chain_indices_per_submit(Some(1));
            let (o1, g1, s1) = run(gpu)?;
            gpu.set_chain_indices_per_submit(None);
            gpu.set_row_limit(None);
            gpu.set_chain_group_overhead(None);
            rows.push(compare(
                &format!("coupling: {kernel}{what} iterations, meeting times, particles"),
                &summary(&og),
                &summary(&oc),
                0.5,
                0.0,
            ));
            rows.push(compare(
                &format!("coupling: {kernel}{what} gradient"),
                &gg,
                &gc,
                1e-4,
                1e-3,
            ));
            rows.push(compare(
                &format!("coupling: {kernel}{what} objective (L_K of the first K)"),
                &[sg as f32],
                &[sc as f32],
                1e-4,
                1e-4,
            ));
            // Identity (as the frozen-entry rows): the outcome, gradient and objective.
            let mut grouped = summary(&og);
            grouped.extend(&gg);
            grouped.push(sg as f32);
            let mut single = summary(&o1);
            single.extend(&g1);
            single.push(s1 as f32);
            rows.push(compare(
                &format!("coupling: {kernel}{what} = one time index a submit"),
                &grouped,
                &single,
                1e-30,
                0.0,
            ));
        }
    }
    Ok(rows)
}
