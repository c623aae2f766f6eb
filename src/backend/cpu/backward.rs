//! The backward pass: the decoder per sample row with its weight gradients scaled by the
//! coefficients a, the encoder's upstream from b and c, the encoder per datapoint, then the
//! workers' accumulators reduced in a fixed order and the gradient norms.

use super::gemm::{linear_input_grad, linear_weight_grad, mlp_macs, split_rows, worker_ranges};
use super::{fastmath, CpuBackend, Worker, GRAD_ROWS, PIECE_ROWS};
use crate::backend::GradNorms;
use crate::model::Linear;
use anyhow::{bail, Result};
use rayon::prelude::*;

impl CpuBackend {
    /// The gradient of the last forward pass; `accumulate` adds it to the current gradient
    /// (later chunks of a chunked step) instead of replacing it.
    pub(super) fn backward_impl(
        &mut self,
        a: &[f32],
        b: &[f32],
        c: &[f32],
        accumulate: bool,
    ) -> Result<GradNorms> {
        let (batch, n) = (self.batch, self.n);
        let rows = batch * n;
        if batch == 0 {
            bail!("backward called before forward");
        }
        if a.len() != rows || b.len() != rows || c.len() != rows {
            bail!("coefficients must be [batch {batch}, n {n}] = {rows} values each");
        }
        for w in &mut self.workers {
            w.grad.iter_mut().for_each(|g| *g = 0.0);
        }
        let t_dec = self.timer.start();
        let per_row = [
            &self.layout.decoder,
            &self.layout.encoder2,
            &self.layout.decoder2,
        ];
        let dec_flops = 4.0 * (rows * per_row.iter().map(|l| mlp_macs(l)).sum::<usize>()) as f64;
        if self.layout.arch.cond.is_some() {
            self.backward_rows_cond(a, b, c);
        } else if self.layout.arch.top.is_some() {
            self.backward_rows_two_layer(a, b, c);
        } else {
            self.backward_rows_one_layer(a, b, c);
        }

        self.timer.stop(
            t_dec,
            "decoder backward",
            || format!("decoder backward, encoder upstream [{rows} rows]"),
            dec_flops,
        );
        let zd = self.layout.arch.z_dim;
        let params = &self.params;
        let layout = &self.layout;
        let enc_flops =
            4.0 * (batch * (mlp_macs(&layout.encoder) + mlp_macs(&layout.prior))) as f64;
        let t_enc = self.timer.start();
        // Sum the upstream over each datapoint's samples, then the encoder backward.
        for bi in 0..batch {
            let dst = &mut self.enc_up[bi * 2 * zd..(bi + 1) * 2 * zd];
            dst.iter_mut().for_each(|v| *v = 0.0);
            for row in bi * n..(bi + 1) * n {
                for (d, v) in dst
                    .iter_mut()
                    .zip(&self.row_up[row * 2 * zd..(row + 1) * 2 * zd])
                {
                    *d += v;
                }
            }
        }
        let threads = self.threads;
        mlp_backward_per_datapoint(
            &self.pool,
            &mut self.workers,
            params,
            &layout.encoder,
            &self.enc.acts,
            &layout.arch.encoder_dims(),
            &self.enc_up,
            batch,
            threads,
        );
        if layout.arch.cond.is_some() {
            mlp_backward_per_datapoint(
                &self.pool,
                &mut self.workers,
                params,
                &layout.prior,
                &self.prior.acts,
                &layout.arch.prior_dims(),
                &self.prior_up,
                batch,
                threads,
            );
        }

        self.timer.stop(
            t_enc,
            "encoder backward",
            || format!("encoder backward [{batch} rows]"),
            enc_flops,
        );
        let t_red = self.timer.start();
        // Reduce the workers' accumulators in a fixed order; mean over the batch.
        let inv_b = 1.0 / batch as f32;
        let workers = &self.workers;
        self.pool.install(|| {
            self.grad
                .par_chunks_mut(4096)
                .enumerate()
                .for_each(|(ci, g)| {
                    let off = ci * 4096;
                    // Worker by worker over the whole chunk, so the adds vectorise; each
                    // element still sums 0 + w0 + w1 + ... in worker order.
                    let mut sum = [0.0f32; 4096];
                    let sum = &mut sum[..g.len()];
                    for w in workers {
                        for (s, x) in sum.iter_mut().zip(&w.grad[off..off + g.len()]) {
                            *s += *x;
                        }
                    }
                    if accumulate {
                        for (v, s) in g.iter_mut().zip(sum.iter()) {
                            *v += *s * inv_b;
                        }
                    } else {
                        for (v, s) in g.iter_mut().zip(sum.iter()) {
                            *v = *s * inv_b;
                        }
                    }
                })
        });
        // Frozen entries keep their values: zero gradient, so norms, clipping and Adam
        // (zero moments stay zero) leave them alone.
        for r in &self.layout.frozen {
            self.grad[r.clone()].fill(0.0);
        }
        let el = self.layout.encoder_len;
        let grad = &self.grad;
        let (enc, dec) = self
            .pool
            .install(|| rayon::join(|| par_l2_norm(&grad[..el]), || par_l2_norm(&grad[el..])));
        self.norms = GradNorms {
            encoder: enc,
            decoder: dec,
        };
        self.timer.stop(
            t_red,
            "reduce + norms",
            || "sum worker gradients, gradient norms".to_string(),
            0.0,
        );
        Ok(self.norms)
    }

    /// The per-row backward of the one-layer model: decoder weight gradients scaled by a and
    /// the encoder upstream b P + c S per row in `row_up`.
    fn backward_rows_one_layer(&mut self, a: &[f32], b: &[f32], c: &[f32]) {
        let (batch, n) = (self.batch, self.n);
        let rows = batch * n;
        let zd = self.layout.arch.z_dim;
        let params = &self.params;
        let layout = &self.layout;
        let need_path = b.iter().any(|&v| v != 0.0);
        let dec_dims = layout.arch.decoder_dims();
        // Decoder backward per sample row, weight gradients scaled by a.
        let ranges = worker_ranges(rows, self.threads);
        let dec = &self.dec.acts;
        let eps = &self.eps;
        let mu_ls = self.enc.acts.last().expect("encoder output");
        let up_parts = split_rows(&mut self.row_up, 2 * zd, &ranges);
        let workers = &mut self.workers[..ranges.len()];
        self.pool.install(|| {
            workers
                .par_iter_mut()
                .zip(up_parts.into_par_iter())
                .zip(ranges.par_iter())
                .for_each(|((w, up), range)| {
                    let mut start = 0;
                    while start < range.len() {
                        let p = PIECE_ROWS.min(range.len() - start);
                        let r0 = range.start + start;
                        let piece: Vec<&[f32]> = dec
                            .iter()
                            .zip(&dec_dims)
                            .map(|(v, &d)| &v[r0 * d..(r0 + p) * d])
                            .collect();
                        let last = piece.len() - 1;
                        w.delta[..piece[last].len()].copy_from_slice(piece[last]);
                        mlp_backward_rows(
                            params,
                            &layout.decoder,
                            &piece[..last],
                            Some(&a[r0..r0 + p]),
                            p,
                            w,
                            need_path,
                        );
                        // Encoder upstream per sample: b P + c S (docs/design.md §1).
                        for j in 0..p {
                            let row = r0 + j;
                            let bi = row / n;
                            let (bc, cc) = (b[row], c[row]);
                            let e = &eps[row * zd..(row + 1) * zd];
                            let z = &piece[0][j * zd..(j + 1) * zd];
                            let ls = &mu_ls[bi * 2 * zd + zd..(bi + 1) * 2 * zd];
                            let u = &mut up[(start + j) * 2 * zd..(start + j + 1) * 2 * zd];
                            // grad_z log p(z) = -z.
                            let gz = need_path.then_some(|d: usize| w.delta[j * zd + d] - z[d]);
                            encoder_upstream_row(u, e, ls, bc, cc, gz);
                        }
                        start += p;
                    }
                })
        });
    }
}

/// One sample row's gradient `u` at the encoder's (mu, log sigma) head: b P + c S (docs/design.md
/// §1), P the path term from `gz(d)` = d/dz_d of log p(x, z) (None: no path term, b is zero),
/// S the score term of log q(z | x) at fixed z = mu + sigma eps.
pub(super) fn encoder_upstream_row(
    u: &mut [f32],
    e: &[f32],
    ls: &[f32],
    bc: f32,
    cc: f32,
    gz: Option<impl Fn(usize) -> f32>,
) {
    let zd = e.len();
    for d in 0..zd {
        let sigma = fastmath::exp(ls[d]);
        let e_over_s = e[d] / sigma;
        let (p_mu, p_ls) = match &gz {
            Some(g) => {
                let g = g(d);
                (g + e_over_s, sigma * e[d] * g + e[d] * e[d])
            }
            None => (0.0, 0.0),
        };
        u[d] = bc * p_mu - cc * e_over_s;
        u[zd + d] = bc * p_ls + cc * (1.0 - e[d] * e[d]);
    }
}

/// Backward through the MLP `layers` over the `batch` rows of `acts` (its forward
/// activations), `up` [batch, out] holding the gradient at its (linear) output: weight
/// gradients into the workers' accumulators, in parallel over rows.
#[allow(clippy::too_many_arguments)]
fn mlp_backward_per_datapoint(
    pool: &rayon::ThreadPool,
    workers: &mut [Worker],
    params: &[f32],
    layers: &[Linear],
    acts: &[Vec<f32>],
    dims: &[usize],
    up: &[f32],
    batch: usize,
    threads: usize,
) {
    let ranges = worker_ranges(batch, threads);
    let out = *dims.last().expect("an MLP has layers");
    let workers = &mut workers[..ranges.len()];
    pool.install(|| {
        workers
            .par_iter_mut()
            .zip(ranges.par_iter())
            .for_each(|(w, range)| {
                let mut start = range.start;
                while start < range.end {
                    let p = PIECE_ROWS.min(range.end - start);
                    let piece: Vec<&[f32]> = acts
                        .iter()
                        .zip(dims)
                        .map(|(v, &d)| &v[start * d..(start + p) * d])
                        .collect();
                    w.delta[..p * out].copy_from_slice(&up[start * out..(start + p) * out]);
                    mlp_backward_rows(params, layers, &piece[..piece.len() - 1], None, p, w, false);
                    start += p;
                }
            })
    });
}

/// Backward through `layers` for a piece of `rows` rows: `w.delta` holds the gradient at
/// the last layer's (linear) output. Weight gradients are scaled per row by `scale`; the
/// gradient at the input is left in `w.delta` when `want_input_grad`.
pub(super) fn mlp_backward_rows(
    params: &[f32],
    layers: &[Linear],
    acts: &[&[f32]],
    scale: Option<&[f32]>,
    rows: usize,
    w: &mut Worker,
    want_input_grad: bool,
) {
    for (i, l) in layers.iter().enumerate().rev() {
        let inp = &acts[i][..rows * l.inp];
        // The weight gradient sums its rows GRAD_ROWS at a time, in order, whatever the
        // piece: the sums, and so the checkpoints, do not depend on PIECE_ROWS.
        let mut s = 0;
        while s < rows {
            let g = GRAD_ROWS.min(rows - s);
            linear_weight_grad(
                &mut w.grad,
                l,
                &inp[s * l.inp..(s + g) * l.inp],
                &w.delta[s * l.out..(s + g) * l.out],
                scale.map(|sc| &sc[s..s + g]),
                &mut w.scaled,
                g,
            );
            s += g;
        }
        if i > 0 || want_input_grad {
            linear_input_grad(
                params,
                l,
                &w.delta[..rows * l.out],
                &mut w.delta_prev[..rows * l.inp],
                rows,
            );
            if i > 0 {
                fastmath::tanh_backward(&mut w.delta_prev[..rows * l.inp], inp);
            }
            std::mem::swap(&mut w.delta, &mut w.delta_prev);
        }
    }
}

fn par_l2_norm(g: &[f32]) -> f64 {
    g.par_chunks(16_384)
        .map(|c| c.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>())
        .sum::<f64>()
        .sqrt()
}
