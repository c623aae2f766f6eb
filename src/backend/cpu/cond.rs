//! The per-sample-row passes of the conditional model (`--model cvae`, docs/design.md §2):
//! each image's first c_dim pixels are the context c, the rest x. The encoder q(z | x, c)
//! (the whole image) and the prior p(z | c) run once per datapoint (`forward.rs`); per row,
//! z = mu + sigma eps, the decoder reads [z, c], and
//! l = log p(x | z, c) + log p(z | c) - log q(z | x, c).
//!
//! Backward, per row: a scales the decoder's weight gradients and the prior head's gradient
//! (r / sd, r^2 - 1) with r = (z - mean) / sd, which is summed per datapoint and run back
//! through the prior; the encoder's upstream is the one-layer model's with
//! grad_z log p(z | c) = -r / sd in place of -z.

use super::backward::{encoder_upstream_row, mlp_backward_rows};
use super::forward::{draw_latent, mlp_forward_rows, RowLikelihood};
use super::gemm::{split_rows, worker_ranges};
use super::hier::{per_worker, piece, rows_of};
use super::{fastmath, CpuBackend, PIECE_ROWS};
use crate::backend::Noise;
use rayon::prelude::*;

impl CpuBackend {
    /// The per-row forward over `rows` rows (`pick` as in `forward_impl`): eps, the decoder's
    /// activations on [z, c] and the log-weights.
    pub(super) fn forward_rows_cond(
        &mut self,
        n: usize,
        rows: usize,
        noise: &Noise,
        pick: Option<&[u32]>,
    ) {
        let arch = &self.layout.arch;
        let (xd, zd, cd) = (arch.x_dim, arch.z_dim, arch.c_dim());
        let (od, id) = (xd - cd, zd + cd);
        let dec_dims = arch.decoder_dims();
        let lik = RowLikelihood::new(arch.likelihood, od);
        let ranges = worker_ranges(rows, self.threads);
        let params = &self.params;
        let layout = &self.layout;
        let mu_ls = self.enc.acts.last().expect("encoder output");
        let prior = self.prior.acts.last().expect("prior output");
        let xs = &self.x;
        let dec = per_worker(&mut self.dec.acts, &dec_dims, &ranges);
        let eps_parts = split_rows(&mut self.eps, zd, &ranges);
        let lw_parts = split_rows(&mut self.log_w, 1, &ranges);
        let out_layer = layout.decoder.last().expect("decoder has layers");
        let out_bias = &params[out_layer.b..out_layer.b + od];
        self.pool.install(|| {
            dec.into_par_iter()
                .zip(eps_parts.into_par_iter().zip(lw_parts.into_par_iter()))
                .zip(ranges.par_iter())
                .for_each(|((mut dec, (eps, lw)), range)| {
                    let mut start = 0;
                    while start < range.len() {
                        let p = PIECE_ROWS.min(range.len() - start);
                        let datapoint = |j: usize| {
                            let row = range.start + start + j;
                            (pick.map_or(row / n, |p| p[row / n] as usize), row % n)
                        };
                        // eps, and the decoder's input [z, c] with z = mu + sigma eps.
                        for j in 0..p {
                            let (b, s) = datapoint(j);
                            let e = &mut eps[(start + j) * zd..(start + j + 1) * zd];
                            let m = &mu_ls[b * 2 * zd..(b + 1) * 2 * zd];
                            let inp = &mut dec[0][(start + j) * id..(start + j + 1) * id];
                            draw_latent(noise, b, s, e, m, &mut inp[..zd]);
                            inp[zd..].copy_from_slice(&xs[b * xd..b * xd + cd]);
                        }
                        let mut px = rows_of(&mut dec, &dec_dims, start, p);
                        mlp_forward_rows(params, &layout.decoder, &mut px, p);
                        let last = px.len() - 1;
                        for j in 0..p {
                            let (b, _) = datapoint(j);
                            let out = &mut px[last][j * od..(j + 1) * od];
                            let xb = &xs[b * xd + cd..(b + 1) * xd];
                            let log_px = lik.score(out, out_bias, xb);
                            let z = &px[0][j * id..j * id + zd];
                            let e = &eps[(start + j) * zd..(start + j + 1) * zd];
                            let ls = &mu_ls[b * 2 * zd + zd..(b + 1) * 2 * zd];
                            let h = &prior[b * 2 * zd..(b + 1) * 2 * zd];
                            // log p(z | c) - log q(z | x, c); the 2 pi constants cancel.
                            let mut lz = 0.0f32;
                            for d in 0..zd {
                                let r = (z[d] - h[d]) * fastmath::exp(-h[zd + d]);
                                lz += 0.5 * (e[d] * e[d] - r * r) + ls[d] - h[zd + d];
                            }
                            lw[start + j] = log_px + lz;
                        }
                        start += p;
                    }
                })
        });
    }

    /// The per-row backward: the decoder's weight gradients scaled by a, the prior head's
    /// gradient (scaled by a) in `row_prior_up` and the encoder's upstream in `row_up`.
    pub(super) fn backward_rows_cond(&mut self, a: &[f32], b: &[f32], c: &[f32]) {
        let (batch, n) = (self.batch, self.n);
        let rows = batch * n;
        let arch = &self.layout.arch;
        let (zd, id) = (arch.z_dim, arch.z_dim + arch.c_dim());
        let dec_dims = arch.decoder_dims();
        let need_path = b.iter().any(|&v| v != 0.0);
        let ranges = worker_ranges(rows, self.threads);
        let params = &self.params;
        let layout = &self.layout;
        let dec = &self.dec.acts;
        let eps = &self.eps;
        let mu_ls = self.enc.acts.last().expect("encoder output");
        let prior = self.prior.acts.last().expect("prior output");
        let up_parts = split_rows(&mut self.row_up, 2 * zd, &ranges);
        let prior_parts = split_rows(&mut self.row_prior_up, 2 * zd, &ranges);
        let workers = &mut self.workers[..ranges.len()];
        self.pool.install(|| {
            workers
                .par_iter_mut()
                .zip(up_parts.into_par_iter().zip(prior_parts.into_par_iter()))
                .zip(ranges.par_iter())
                .for_each(|((w, (up, pup)), range)| {
                    let mut start = 0;
                    while start < range.len() {
                        let p = PIECE_ROWS.min(range.len() - start);
                        let r0 = range.start + start;
                        let px = piece(dec, &dec_dims, r0, p);
                        let last = px.len() - 1;
                        // The output holds the likelihood's gradient; the input gradient
                        // (z's part first) is left in w.delta when the path term needs it.
                        w.delta[..px[last].len()].copy_from_slice(px[last]);
                        mlp_backward_rows(
                            params,
                            &layout.decoder,
                            &px[..last],
                            Some(&a[r0..r0 + p]),
                            p,
                            w,
                            need_path,
                        );
                        for j in 0..p {
                            let row = r0 + j;
                            let bi = row / n;
                            let (ac, bc, cc) = (a[row], b[row], c[row]);
                            let e = &eps[row * zd..(row + 1) * zd];
                            let z = &px[0][j * id..j * id + zd];
                            let ls = &mu_ls[bi * 2 * zd + zd..(bi + 1) * 2 * zd];
                            let h = &prior[bi * 2 * zd..(bi + 1) * 2 * zd];
                            let pu = &mut pup[(start + j) * 2 * zd..(start + j + 1) * 2 * zd];
                            let u = &mut up[(start + j) * 2 * zd..(start + j + 1) * 2 * zd];
                            // grad_z log p(z | c) = -r / sd, with r = (z - mean) / sd.
                            let prior_grad = |d: usize| {
                                let inv_sd = fastmath::exp(-h[zd + d]);
                                let r = (z[d] - h[d]) * inv_sd;
                                (r, r * inv_sd)
                            };
                            for d in 0..zd {
                                let (r, r_over_sd) = prior_grad(d);
                                pu[d] = ac * r_over_sd;
                                pu[zd + d] = ac * (r * r - 1.0);
                            }
                            let gz = need_path
                                .then_some(|d: usize| w.delta[j * id + d] - prior_grad(d).1);
                            encoder_upstream_row(u, e, ls, bc, cc, gz);
                        }
                        start += p;
                    }
                })
        });
        // Each datapoint's prior head gradient: the sum over its samples.
        for (dst, src) in self
            .prior_up
            .chunks_mut(2 * zd)
            .zip(self.row_prior_up.chunks(n * 2 * zd))
        {
            dst.fill(0.0);
            for r in src.chunks(2 * zd) {
                for (d, v) in dst.iter_mut().zip(r) {
                    *d += v;
                }
            }
        }
    }
}
