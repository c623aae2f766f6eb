//! The forward pass: the encoder once per datapoint, then per sample row the noise, z, the
//! decoder and the log-weight, each worker over its own contiguous rows in pieces.

use super::gemm::{linear_forward, mlp_macs, split_rows, worker_ranges};
use super::{fastmath, CpuBackend, PIECE_ROWS};
use crate::backend::Noise;
use crate::model::{Likelihood, Linear};
use crate::rng;
use anyhow::{bail, Result};
use rayon::prelude::*;

impl CpuBackend {
    /// `forward`; with `encode` false the encoder output of the last pass over the same
    /// minibatch is reused (a coupled step's later time indices). With `pick`, the pass covers
    /// only those datapoints of the minibatch (their own noise counters), `n` samples each, and
    /// returns `[pick.len(), n]` log-weights; it needs the minibatch encoded already and is
    /// for log-weights only (no backward follows it).
    pub(super) fn forward_impl(
        &mut self,
        x: &[f32],
        batch: usize,
        n: usize,
        noise: &Noise,
        encode: bool,
        pick: Option<&[u32]>,
    ) -> Result<&[f32]> {
        let arch = self.layout.arch.clone();
        let (xd, zd) = (arch.x_dim, arch.z_dim);
        if x.len() != batch * xd {
            bail!(
                "input has {} values, expected batch {batch} x {xd}",
                x.len()
            );
        }
        if batch == 0 || n == 0 {
            bail!("forward needs at least one datapoint and one sample (batch {batch}, n {n})");
        }
        if pick.is_some_and(|p| encode || p.iter().any(|&r| r as usize >= batch)) {
            bail!("a pass over picked datapoints needs their minibatch encoded already");
        }
        self.resize(batch, n);
        self.x.clear();
        self.x.extend_from_slice(x);
        let rows = pick.map_or(batch, |p| p.len()) * n;
        let params = &self.params;
        let layout = &self.layout;
        let threads = self.threads;

        let enc_flops =
            2.0 * (batch * (mlp_macs(&self.layout.encoder) + mlp_macs(&self.layout.prior))) as f64;
        let dec_flops = 2.0 * (rows * mlp_macs(&self.layout.decoder)) as f64;
        let enc_dims = arch.encoder_dims();
        // Reusing needs the same minibatch in place (same batch size: `resize` kept it).
        let encode = encode || self.enc.acts[0] != x;
        if encode {
            let t_enc = self.timer.start();
            // Encoder, parallel over datapoints; a conditional model's prior p(z | c) too, on
            // each image's first c_dim pixels.
            self.enc.acts[0].copy_from_slice(x);
            mlp_forward_per_datapoint(
                &self.pool,
                params,
                &layout.encoder,
                &mut self.enc.acts,
                &enc_dims,
                batch,
                threads,
            );
            if arch.cond.is_some() {
                let (cd, prior_dims) = (arch.c_dim(), arch.prior_dims());
                for (c, xb) in self.prior.acts[0].chunks_mut(cd).zip(x.chunks(xd)) {
                    c.copy_from_slice(&xb[..cd]);
                }
                mlp_forward_per_datapoint(
                    &self.pool,
                    params,
                    &layout.prior,
                    &mut self.prior.acts,
                    &prior_dims,
                    batch,
                    threads,
                );
            }

            self.timer.stop(
                t_enc,
                "encoder forward",
                || format!("encoder forward [{batch} rows]"),
                enc_flops,
            );
        }
        let t_dec = self.timer.start();
        if arch.cond.is_some() {
            self.forward_rows_cond(n, rows, noise, pick);
            self.timer.stop(
                t_dec,
                "decoder forward",
                || format!("sample z, decoder on [z, c], log-weights [{rows} rows]"),
                dec_flops,
            );
            let bytes = self.working_bytes();
            self.peak_bytes = self.peak_bytes.max(bytes);
            return Ok(&self.log_w[..rows]);
        }
        if arch.top.is_some() {
            self.forward_rows_two_layer(n, rows, noise, pick);
            self.timer.stop(
                t_dec,
                "decoder forward",
                || format!("sample z1, z2, per-row MLPs, log-weights [{rows} rows]"),
                dec_flops
                    + 2.0
                        * (rows
                            * (mlp_macs(&self.layout.encoder2) + mlp_macs(&self.layout.decoder2)))
                            as f64,
            );
            let bytes = self.working_bytes();
            self.peak_bytes = self.peak_bytes.max(bytes);
            return Ok(&self.log_w[..rows]);
        }
        // Noise, sampling and decoder, parallel over sample rows.
        let mu_ls = &self.enc.acts[enc_dims.len() - 1];
        let dec_dims = arch.decoder_dims();
        let ranges = worker_ranges(rows, threads);
        let mut per_worker: Vec<Vec<&mut [f32]>> = (0..ranges.len()).map(|_| Vec::new()).collect();
        for (buf, &d) in self.dec.acts.iter_mut().zip(&dec_dims) {
            for (w, s) in split_rows(buf, d, &ranges).into_iter().enumerate() {
                per_worker[w].push(s);
            }
        }
        let eps_parts = split_rows(&mut self.eps, zd, &ranges);
        let lw_parts = split_rows(&mut self.log_w, 1, &ranges);
        let xs = &self.x;
        let lik = RowLikelihood::new(arch.likelihood, xd);
        self.pool.install(|| {
            per_worker
                .into_par_iter()
                .zip(eps_parts.into_par_iter().zip(lw_parts.into_par_iter()))
                .zip(ranges.par_iter())
                .for_each(|((mut acts, (eps, lw)), range)| {
                    let out_layer = layout.decoder.last().expect("decoder has layers");
                    let out_bias = &params[out_layer.b..out_layer.b + xd];
                    let last = acts.len() - 1;
                    let mut start = 0;
                    while start < range.len() {
                        let p = PIECE_ROWS.min(range.len() - start);
                        // Noise and z = mu + sigma * eps for each row of the piece.
                        for j in 0..p {
                            let row = range.start + start + j;
                            let (b, s) = (row / n, row % n);
                            let b = pick.map_or(b, |p| p[b] as usize);
                            let e = &mut eps[(start + j) * zd..(start + j + 1) * zd];
                            let m = &mu_ls[b * 2 * zd..(b + 1) * 2 * zd];
                            let z = &mut acts[0][(start + j) * zd..(start + j + 1) * zd];
                            draw_latent(noise, b, s, e, m, z);
                        }
                        let mut piece: Vec<&mut [f32]> = acts
                            .iter_mut()
                            .zip(&dec_dims)
                            .map(|(a, &d)| &mut a[start * d..(start + p) * d])
                            .collect();
                        mlp_forward_rows(params, &layout.decoder, &mut piece, p);
                        for j in 0..p {
                            let row = range.start + start + j;
                            let b = pick.map_or(row / n, |p| p[row / n] as usize);
                            let out = &mut piece[last][j * xd..(j + 1) * xd];
                            let xb = &xs[b * xd..(b + 1) * xd];
                            let log_px = lik.score(out, out_bias, xb);
                            let z = &piece[0][j * zd..(j + 1) * zd];
                            let e = &eps[(start + j) * zd..(start + j + 1) * zd];
                            let ls = &mu_ls[b * 2 * zd + zd..(b + 1) * 2 * zd];
                            // log p(z) - log q(z|x); the 2 pi constants cancel.
                            let mut lz = 0.0f32;
                            for d in 0..zd {
                                lz += 0.5 * (e[d] * e[d] - z[d] * z[d]) + ls[d];
                            }
                            lw[start + j] = log_px + lz;
                        }
                        start += p;
                    }
                })
        });
        self.timer.stop(
            t_dec,
            "decoder forward",
            || format!("sample z, decoder forward, log-weights [{rows} rows]"),
            dec_flops,
        );
        let bytes = self.working_bytes();
        self.peak_bytes = self.peak_bytes.max(bytes);
        Ok(&self.log_w[..rows])
    }
}

/// An MLP over the `batch` rows of `acts` (acts[0] filled), in parallel over rows, its last
/// layer's bias added (the encoder's and the prior's Gaussian heads).
pub(super) fn mlp_forward_per_datapoint(
    pool: &rayon::ThreadPool,
    params: &[f32],
    layers: &[Linear],
    acts: &mut [Vec<f32>],
    dims: &[usize],
    batch: usize,
    threads: usize,
) {
    let ranges = worker_ranges(batch, threads);
    let mut per_worker: Vec<Vec<&mut [f32]>> = (0..ranges.len()).map(|_| Vec::new()).collect();
    for (buf, &d) in acts.iter_mut().zip(dims) {
        for (w, s) in split_rows(buf, d, &ranges).into_iter().enumerate() {
            per_worker[w].push(s);
        }
    }
    let last = layers.last().expect("an MLP has layers");
    pool.install(|| {
        per_worker
            .into_par_iter()
            .zip(ranges.par_iter())
            .for_each(|(mut acts, r)| {
                mlp_forward_rows(params, layers, &mut acts, r.len());
                fastmath::bias_rows(
                    &mut acts[dims.len() - 1][..r.len() * last.out],
                    &params[last.b..last.b + last.out],
                );
            })
    });
}

/// Forward through `layers` for `rows` rows, acts[0] already filled; the last layer is
/// left linear without bias (the caller adds it, fused with its own output transform).
pub(super) fn mlp_forward_rows(
    params: &[f32],
    layers: &[Linear],
    acts: &mut [&mut [f32]],
    rows: usize,
) {
    for (i, l) in layers.iter().enumerate() {
        let (inp, out) = acts.split_at_mut(i + 1);
        let out = &mut out[0][..rows * l.out];
        linear_forward(params, l, &inp[i][..rows * l.inp], out, rows);
        if i + 1 < layers.len() {
            fastmath::bias_tanh_rows(out, &params[l.b..l.b + l.out]);
        }
    }
}

/// log p(x | decoder output) of one sample row, leaving the likelihood's gradient in the
/// output (fastmath's fused rows).
#[derive(Clone, Copy)]
pub(super) struct RowLikelihood {
    lik: Likelihood,
    inv_var: f32,
    /// The Gaussian's normalising constant over all the row's outputs.
    log_norm: f32,
}

impl RowLikelihood {
    pub(super) fn new(lik: Likelihood, outputs: usize) -> RowLikelihood {
        RowLikelihood {
            lik,
            inv_var: lik.inv_var() as f32,
            log_norm: (lik.log_norm() * outputs as f64) as f32,
        }
    }

    /// Scores the row's outputs `out` (bias not yet added) against `x`.
    pub(super) fn score(&self, out: &mut [f32], bias: &[f32], x: &[f32]) -> f32 {
        match self.lik {
            Likelihood::Bernoulli => fastmath::bernoulli_row(out, bias, x),
            Likelihood::Gaussian { .. } => {
                fastmath::gaussian_row(out, bias, x, self.inv_var) + self.log_norm
            }
        }
    }
}

/// Row (b, s)'s normals into `e` (its whole noise draw), and z = mu + sigma eps into `z`
/// from the Gaussian head `head` = (mu, log sigma) of z's width.
pub(super) fn draw_latent(
    noise: &Noise,
    b: usize,
    s: usize,
    e: &mut [f32],
    head: &[f32],
    z: &mut [f32],
) {
    fill_normals_at(noise, b, s, e.len(), e);
    let zd = z.len();
    for d in 0..zd {
        z[d] = head[d] + fastmath::exp(head[zd + d]) * e[d];
    }
}

/// Normals (first_sample + s) * z_dim .. + z_dim of datapoint row b's counter.
fn fill_normals_at(noise: &Noise, b: usize, s: usize, zd: usize, out: &mut [f32]) {
    let first = (noise.first_sample as usize + s) * zd;
    rng::fill_normals_from(
        noise.seed,
        noise.stream,
        noise.step,
        noise.first_datapoint + b as u32,
        first,
        out,
    );
}
