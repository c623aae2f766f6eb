//! The optimizer step: Adam over parameter chunks in parallel, the encoder's and the
//! decoder's gradient clipped separately.

use super::CpuBackend;
use crate::optim::{self, AdamConfig};
use anyhow::Result;
use rayon::prelude::*;

/// Parameters per parallel chunk of the optimizer step.
const ADAM_CHUNK: usize = 16_384;

impl CpuBackend {
    /// `Backend::optimizer_step`: one Adam update from the last gradient and its norms.
    pub(super) fn optimizer_step_impl(&mut self, cfg: &AdamConfig, lr: f64) -> Result<()> {
        let t_adam = self.timer.start();
        let el = self.layout.encoder_len;
        let scales = [
            optim::clip_factor(self.norms.encoder, cfg.clip_encoder),
            optim::clip_factor(self.norms.decoder, cfg.clip_decoder),
        ];
        let step = self.adam.begin_step(cfg, lr);
        // A non-finite gradient leaves parameters and moments alone (the step count advances,
        // as on the GPU, whose kernel makes the same test).
        if !(self.norms.encoder.is_finite() && self.norms.decoder.is_finite()) {
            return Ok(());
        }
        let st = &mut self.adam;
        let (grad, params) = (&self.grad, &mut self.params);
        self.pool.install(|| {
            params
                .par_chunks_mut(ADAM_CHUNK)
                .zip(grad.par_chunks(ADAM_CHUNK))
                .zip(
                    st.m.par_chunks_mut(ADAM_CHUNK)
                        .zip(st.v.par_chunks_mut(ADAM_CHUNK))
                        .zip(st.v_max.par_chunks_mut(ADAM_CHUNK)),
                )
                .enumerate()
                .for_each(|(ci, ((p, g), ((m, v), vm)))| {
                    // A chunk that straddles the encoder/decoder boundary is split there.
                    let off = ci * ADAM_CHUNK;
                    let cut = el.saturating_sub(off).min(p.len());
                    let (p0, p1) = p.split_at_mut(cut);
                    let (m0, m1) = m.split_at_mut(cut);
                    let (v0, v1) = v.split_at_mut(cut);
                    let (vm0, vm1) = vm.split_at_mut(cut);
                    optim::adam_update(&step, p0, &g[..cut], scales[0], m0, v0, vm0);
                    optim::adam_update(&step, p1, &g[cut..], scales[1], m1, v1, vm1);
                })
        });
        let len = self.layout.len;
        self.timer
            .stop(t_adam, "adam", || format!("adam [{len} parameters]"), 0.0);
        Ok(())
    }
}
