//! The per-sample-row passes of the two-stochastic-layer model (`--model hvae`,
//! docs/design.md §2). The encoder x -> (mu1, log sigma1) runs once per datapoint as for the
//! one-layer model (`forward.rs`, `backward.rs`); everything below it runs per sample row:
//! z1 = mu1 + sigma1 eps1, q(z2 | z1) gives z2 = mu2 + sigma2 eps2, p(z1 | z2) and p(x | z1).
//! eps1 and eps2 are one draw of z1_dim + z2_dim normals at the row's noise address.
//!
//! Backward, per row with f = l at q's parameters held fixed inside both log q:
//! - a scales the weight gradients of decoder (p(x | z1)) and decoder2 (p(z1 | z2));
//! - G2 = df/dz2 = grad_z2 log p(z1 | z2) - z2 + eps2 / sigma2, and encoder2 receives
//!   b (G2, sigma2 eps2 G2) (path) + c (-eps2 / sigma2, 1 - eps2^2) (score, z fixed);
//! - G1 = df/dz1 = grad_z1 [log p(x | z1) + log p(z1 | z2)] + eps1 / sigma1 plus the input
//!   gradient of encoder2 for (G2 - eps2 / sigma2, sigma2 eps2 G2 + 1 - eps2^2): the path
//!   through z2 = z2(z1) and log q(z2 | z1)'s dependence on the point z1 (its parameters
//!   fixed). encoder receives b (G1, sigma1 eps1 G1) + c (-eps1 / sigma1, 1 - eps1^2).

use super::backward::mlp_backward_rows;
use super::forward::{draw_latent, mlp_forward_rows, RowLikelihood};
use super::gemm::{linear_input_grad, split_rows, worker_ranges};
use super::{fastmath, CpuBackend, Worker, PIECE_ROWS};
use crate::backend::Noise;
use crate::model::Linear;
use rayon::prelude::*;
use std::ops::Range;

/// One slice per worker range of every activation buffer.
pub(super) fn per_worker<'a>(
    acts: &'a mut [Vec<f32>],
    dims: &[usize],
    ranges: &[Range<usize>],
) -> Vec<Vec<&'a mut [f32]>> {
    let mut out: Vec<Vec<&mut [f32]>> = (0..ranges.len()).map(|_| Vec::new()).collect();
    for (buf, &d) in acts.iter_mut().zip(dims) {
        for (w, s) in split_rows(buf, d, ranges).into_iter().enumerate() {
            out[w].push(s);
        }
    }
    out
}

/// Rows `start..start + p` of every buffer of a worker's activations.
pub(super) fn rows_of<'a>(
    acts: &'a mut [&mut [f32]],
    dims: &[usize],
    start: usize,
    p: usize,
) -> Vec<&'a mut [f32]> {
    acts.iter_mut()
        .zip(dims)
        .map(|(a, &d)| &mut a[start * d..(start + p) * d])
        .collect()
}

/// Rows `r0..r0 + p` of every buffer of an MLP's activations.
pub(super) fn piece<'a>(
    acts: &'a [Vec<f32>],
    dims: &[usize],
    r0: usize,
    p: usize,
) -> Vec<&'a [f32]> {
    acts.iter()
        .zip(dims)
        .map(|(v, &d)| &v[r0 * d..(r0 + p) * d])
        .collect()
}

fn bias_of<'a>(params: &'a [f32], l: &Linear) -> &'a [f32] {
    &params[l.b..l.b + l.out]
}

impl CpuBackend {
    /// The per-row forward of the two-layer model over `rows` rows (`pick` as in
    /// `forward_impl`): fills eps, the three per-row MLPs' activations and the log-weights.
    pub(super) fn forward_rows_two_layer(
        &mut self,
        n: usize,
        rows: usize,
        noise: &Noise,
        pick: Option<&[u32]>,
    ) {
        let arch = &self.layout.arch;
        let (xd, d1, nd) = (arch.x_dim, arch.z_dim, arch.noise_dim());
        let d2 = nd - d1;
        let (enc2_dims, dec2_dims, dec_dims) = (
            arch.encoder2_dims(),
            arch.decoder2_dims(),
            arch.decoder_dims(),
        );
        let lik = RowLikelihood::new(arch.likelihood, xd);
        let ranges = worker_ranges(rows, self.threads);
        let params = &self.params;
        let layout = &self.layout;
        let mu_ls = self.enc.acts.last().expect("encoder output");
        let xs = &self.x;
        let dec = per_worker(&mut self.dec.acts, &dec_dims, &ranges);
        let enc2 = per_worker(&mut self.enc2.acts, &enc2_dims, &ranges);
        let dec2 = per_worker(&mut self.dec2.acts, &dec2_dims, &ranges);
        let eps_parts = split_rows(&mut self.eps, nd, &ranges);
        let lw_parts = split_rows(&mut self.log_w, 1, &ranges);
        let last_e2 = layout.encoder2.last().expect("encoder2 has layers");
        let last_d2 = layout.decoder2.last().expect("decoder2 has layers");
        let out_layer = layout.decoder.last().expect("decoder has layers");
        self.pool.install(|| {
            dec.into_par_iter()
                .zip(enc2.into_par_iter())
                .zip(dec2.into_par_iter())
                .zip(eps_parts.into_par_iter().zip(lw_parts.into_par_iter()))
                .zip(ranges.par_iter())
                .for_each(|((((mut dec, mut enc2), mut dec2), (eps, lw)), range)| {
                    let mut start = 0;
                    while start < range.len() {
                        let p = PIECE_ROWS.min(range.len() - start);
                        let datapoint = |j: usize| {
                            let row = range.start + start + j;
                            (pick.map_or(row / n, |p| p[row / n] as usize), row % n)
                        };
                        // eps and z1 = mu1 + sigma1 eps1 (the input of encoder2 and decoder).
                        for j in 0..p {
                            let (b, s) = datapoint(j);
                            let e = &mut eps[(start + j) * nd..(start + j + 1) * nd];
                            let m = &mu_ls[b * 2 * d1..(b + 1) * 2 * d1];
                            let z1 = &mut dec[0][(start + j) * d1..(start + j + 1) * d1];
                            draw_latent(noise, b, s, e, m, z1);
                            enc2[0][(start + j) * d1..(start + j + 1) * d1].copy_from_slice(z1);
                        }
                        let mut e2 = rows_of(&mut enc2, &enc2_dims, start, p);
                        mlp_forward_rows(params, &layout.encoder2, &mut e2, p);
                        let top = e2.len() - 1;
                        fastmath::bias_rows(e2[top], bias_of(params, last_e2));
                        // z2 = mu2 + sigma2 eps2, the input of decoder2.
                        for j in 0..p {
                            let u2 = &e2[top][j * 2 * d2..(j + 1) * 2 * d2];
                            let e = &eps[(start + j) * nd + d1..(start + j + 1) * nd];
                            let z2 = &mut dec2[0][(start + j) * d2..(start + j + 1) * d2];
                            for d in 0..d2 {
                                z2[d] = u2[d] + fastmath::exp(u2[d2 + d]) * e[d];
                            }
                        }
                        let mut p2 = rows_of(&mut dec2, &dec2_dims, start, p);
                        mlp_forward_rows(params, &layout.decoder2, &mut p2, p);
                        let top2 = p2.len() - 1;
                        fastmath::bias_rows(p2[top2], bias_of(params, last_d2));
                        let mut px = rows_of(&mut dec, &dec_dims, start, p);
                        mlp_forward_rows(params, &layout.decoder, &mut px, p);
                        let last = px.len() - 1;
                        for j in 0..p {
                            let (b, _) = datapoint(j);
                            let out = &mut px[last][j * xd..(j + 1) * xd];
                            let xb = &xs[b * xd..(b + 1) * xd];
                            let out_bias = bias_of(params, out_layer);
                            let log_px = lik.score(out, out_bias, xb);
                            let e = &eps[(start + j) * nd..(start + j + 1) * nd];
                            let z1 = &px[0][j * d1..(j + 1) * d1];
                            let z2 = &p2[0][j * d2..(j + 1) * d2];
                            let ls1 = &mu_ls[b * 2 * d1 + d1..(b + 1) * 2 * d1];
                            let u2 = &e2[top][j * 2 * d2..(j + 1) * 2 * d2];
                            let pz1 = &p2[top2][j * 2 * d1..(j + 1) * 2 * d1];
                            // log p(z1|z2) + log p(z2) - log q(z1|x) - log q(z2|z1); the
                            // 2 pi constants cancel.
                            let mut lz = 0.0f32;
                            for d in 0..d1 {
                                let r = (z1[d] - pz1[d]) * fastmath::exp(-pz1[d1 + d]);
                                lz += 0.5 * (e[d] * e[d] - r * r) + ls1[d] - pz1[d1 + d];
                            }
                            for d in 0..d2 {
                                let e2d = e[d1 + d];
                                lz += 0.5 * (e2d * e2d - z2[d] * z2[d]) + u2[d2 + d];
                            }
                            lw[start + j] = log_px + lz;
                        }
                        start += p;
                    }
                })
        });
    }

    /// The per-row backward of the two-layer model: decoder and decoder2 weight gradients
    /// scaled by a, encoder2's gradient, and the per-row encoder upstream in `row_up`.
    pub(super) fn backward_rows_two_layer(&mut self, a: &[f32], b: &[f32], c: &[f32]) {
        let (batch, n) = (self.batch, self.n);
        let rows = batch * n;
        let arch = &self.layout.arch;
        let (d1, nd) = (arch.z_dim, arch.noise_dim());
        let d2 = nd - d1;
        let (enc2_dims, dec2_dims, dec_dims) = (
            arch.encoder2_dims(),
            arch.decoder2_dims(),
            arch.decoder_dims(),
        );
        let need_path = b.iter().any(|&v| v != 0.0);
        let ranges = worker_ranges(rows, self.threads);
        let params = &self.params;
        let layout = &self.layout;
        let (dec, enc2, dec2) = (&self.dec.acts, &self.enc2.acts, &self.dec2.acts);
        let eps = &self.eps;
        let mu_ls = self.enc.acts.last().expect("encoder output");
        let up_parts = split_rows(&mut self.row_up, 2 * d1, &ranges);
        let workers = &mut self.workers[..ranges.len()];
        self.pool.install(|| {
            workers
                .par_iter_mut()
                .zip(up_parts.into_par_iter())
                .zip(ranges.par_iter())
                .for_each(|((w, up), range)| {
                    // df/dz1 and df/dz2 of the piece's rows.
                    let mut g1 = vec![0.0f32; PIECE_ROWS * d1];
                    let mut g2 = vec![0.0f32; PIECE_ROWS * d2];
                    let mut start = 0;
                    while start < range.len() {
                        let p = PIECE_ROWS.min(range.len() - start);
                        let r0 = range.start + start;
                        let ar = &a[r0..r0 + p];
                        let px = piece(dec, &dec_dims, r0, p);
                        let p2 = piece(dec2, &dec2_dims, r0, p);
                        let e2 = piece(enc2, &enc2_dims, r0, p);
                        let (last, top2, top) = (px.len() - 1, p2.len() - 1, e2.len() - 1);
                        // p(x | z1): the output holds the likelihood's gradient.
                        w.delta[..px[last].len()].copy_from_slice(px[last]);
                        mlp_backward_rows(
                            params,
                            &layout.decoder,
                            &px[..last],
                            Some(ar),
                            p,
                            w,
                            need_path,
                        );
                        if need_path {
                            g1[..p * d1].copy_from_slice(&w.delta[..p * d1]);
                        }
                        // p(z1 | z2): gradient at its (mean, log sd) head.
                        for j in 0..p {
                            let z1 = &px[0][j * d1..(j + 1) * d1];
                            let h = &p2[top2][j * 2 * d1..(j + 1) * 2 * d1];
                            let dl = &mut w.delta[j * 2 * d1..(j + 1) * 2 * d1];
                            for d in 0..d1 {
                                let inv_sd = fastmath::exp(-h[d1 + d]);
                                let r = (z1[d] - h[d]) * inv_sd;
                                dl[d] = r * inv_sd;
                                dl[d1 + d] = r * r - 1.0;
                                if need_path {
                                    g1[j * d1 + d] -= r * inv_sd;
                                }
                            }
                        }
                        mlp_backward_rows(
                            params,
                            &layout.decoder2,
                            &p2[..top2],
                            Some(ar),
                            p,
                            w,
                            need_path,
                        );
                        // G2 = grad_z2 log p(z1|z2) - z2 + eps2 / sigma2.
                        for j in 0..p {
                            let z2 = &p2[0][j * d2..(j + 1) * d2];
                            let u2 = &e2[top][j * 2 * d2..(j + 1) * 2 * d2];
                            let e = &eps[(r0 + j) * nd + d1..(r0 + j + 1) * nd];
                            for d in 0..d2 {
                                g2[j * d2 + d] = if need_path {
                                    w.delta[j * d2 + d] - z2[d] + e[d] / fastmath::exp(u2[d2 + d])
                                } else {
                                    0.0
                                };
                            }
                        }
                        // encoder2's parameters: b P2 + c S2 at its head.
                        for j in 0..p {
                            let (bc, cc) = (b[r0 + j], c[r0 + j]);
                            let u2 = &e2[top][j * 2 * d2..(j + 1) * 2 * d2];
                            let e = &eps[(r0 + j) * nd + d1..(r0 + j + 1) * nd];
                            let dl = &mut w.delta[j * 2 * d2..(j + 1) * 2 * d2];
                            for d in 0..d2 {
                                let sigma = fastmath::exp(u2[d2 + d]);
                                let g = g2[j * d2 + d];
                                dl[d] = bc * g - cc * e[d] / sigma;
                                dl[d2 + d] = bc * sigma * e[d] * g + cc * (1.0 - e[d] * e[d]);
                            }
                        }
                        mlp_backward_rows(params, &layout.encoder2, &e2[..top], None, p, w, false);
                        if need_path {
                            // z1's gradient through encoder2's input (parameters fixed).
                            for j in 0..p {
                                let u2 = &e2[top][j * 2 * d2..(j + 1) * 2 * d2];
                                let e = &eps[(r0 + j) * nd + d1..(r0 + j + 1) * nd];
                                let dl = &mut w.delta[j * 2 * d2..(j + 1) * 2 * d2];
                                for d in 0..d2 {
                                    let sigma = fastmath::exp(u2[d2 + d]);
                                    let g = g2[j * d2 + d];
                                    dl[d] = g - e[d] / sigma;
                                    dl[d2 + d] = sigma * e[d] * g + 1.0 - e[d] * e[d];
                                }
                            }
                            mlp_input_grad_rows(params, &layout.encoder2, &e2[..top], p, w);
                            for (g, v) in g1[..p * d1].iter_mut().zip(&w.delta[..p * d1]) {
                                *g += v;
                            }
                        }
                        // The encoder's upstream per row: b (G1, sigma1 eps1 G1) + c S1.
                        for j in 0..p {
                            let row = r0 + j;
                            let bi = row / n;
                            let (bc, cc) = (b[row], c[row]);
                            let e = &eps[row * nd..row * nd + d1];
                            let ls = &mu_ls[bi * 2 * d1 + d1..(bi + 1) * 2 * d1];
                            let u = &mut up[(start + j) * 2 * d1..(start + j + 1) * 2 * d1];
                            for d in 0..d1 {
                                let sigma = fastmath::exp(ls[d]);
                                let e_over_s = e[d] / sigma;
                                let g = if need_path {
                                    g1[j * d1 + d] + e_over_s
                                } else {
                                    0.0
                                };
                                u[d] = bc * g - cc * e_over_s;
                                u[d1 + d] = bc * sigma * e[d] * g + cc * (1.0 - e[d] * e[d]);
                            }
                        }
                        start += p;
                    }
                })
        });
    }
}

/// The gradient at the input of `layers` for `rows` rows, `w.delta` holding it at the last
/// (linear) output; no weight gradients. Left in `w.delta`.
fn mlp_input_grad_rows(
    params: &[f32],
    layers: &[Linear],
    acts: &[&[f32]],
    rows: usize,
    w: &mut Worker,
) {
    for (i, l) in layers.iter().enumerate().rev() {
        linear_input_grad(
            params,
            l,
            &w.delta[..rows * l.out],
            &mut w.delta_prev[..rows * l.inp],
            rows,
        );
        if i > 0 {
            fastmath::tanh_backward(&mut w.delta_prev[..rows * l.inp], &acts[i][..rows * l.inp]);
        }
        std::mem::swap(&mut w.delta, &mut w.delta_prev);
    }
}
