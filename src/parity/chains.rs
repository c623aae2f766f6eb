//! Coupled chains: the whole batch advances in lockstep, each datapoint's chains on one GPU
//! thread (shaders/coupling.wgsl) against the host's coupling::chain::step; then the
//! backward over the particles each datapoint used: on the GPU one group per datapoint,
//! chunked to what one pass holds (the initial block), on the CPU its default grouping.

use super::{compare, restart, ParityRow, Suite};
use crate::backend::Backend;
use anyhow::Result;

/// Per chain kernel: the chains' outcome, the gradient and the objective.
pub(super) fn rows(suite: &mut Suite) -> Result<Vec<ParityRow>> {
    let (batch, noise, lr) = (suite.batch, suite.noise, suite.lr);
    let (x, cfg) = (&suite.x, &suite.cfg);
    let (cpu, gpu) = (&mut suite.cpu, &mut suite.gpu);
    let mut rows = Vec::new();
    for kernel in crate::coupling::ChainKernel::ALL {
        let chains = crate::coupling::CouplingConfig {
            horizon: 2,
            max_iters: 60,
            ..crate::coupling::CouplingConfig::new(kernel, 4)
        };
        restart(cpu, &suite.params.values)?;
        restart(gpu, &suite.params.values)?;
        gpu.set_row_limit(Some(batch * chains.particles_through(1)));
        gpu.set_chain_group_overhead(Some(0));
        let oc = cpu.chain_step(x, batch, &noise, &chains, cfg, lr)?;
        let og = gpu.chain_step(x, batch, &noise, &chains, cfg, lr)?;
        gpu.set_row_limit(None);
        gpu.set_chain_group_overhead(None);
        let summary = |o: &crate::backend::ChainOutcome| -> Vec<f32> {
            let mut v = vec![o.iterations as f32];
            v.extend(o.meeting_times.iter().map(|&t| t as f32));
            v.extend(o.particles.iter().map(|&p| p as f32));
            v.extend(o.capped.iter().map(|&c| c as u8 as f32));
            v
        };
        rows.push(compare(
            &format!("coupling: {kernel} iterations, meeting times, particles"),
            &summary(&og),
            &summary(&oc),
            0.5,
            0.0,
        ));
        rows.push(compare(
            &format!("coupling: {kernel} gradient"),
            &gpu.gradient()?,
            &cpu.gradient()?,
            1e-4,
            1e-3,
        ));
        let (sc, sg) = (cpu.take_stats()?, gpu.take_stats()?);
        rows.push(compare(
            &format!("coupling: {kernel} objective (L_K of the first K)"),
            &[sg.objective as f32],
            &[sc.objective as f32],
            1e-4,
            1e-4,
        ));
    }
    Ok(rows)
}
