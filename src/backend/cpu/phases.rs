//! `uvae bench --phases`: each piece of the one-layer decoder's pass timed alone on the
//! project's shapes, as the backend calls it (rows split into one contiguous range per
//! worker, each range in PIECE_ROWS pieces), so a phase's rate can be set against PyTorch's
//! on the same shape (`benches/phases.sh`) and the step's time split into GEMMs, the
//! elementwise passes, the noise, memory traffic and the split over cores.

use super::gemm::{linear_forward, linear_input_grad, linear_weight_grad, worker_ranges};
use super::{fastmath, GRAD_ROWS, PIECE_ROWS};
use crate::model::Linear;
use crate::rng;
use rayon::prelude::*;
use serde::Serialize;
use std::ops::Range;
use std::time::Instant;

/// One phase's rate with the pool's workers.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseRate {
    /// Stable key, shared with `benches/torch_phases.py`.
    pub key: String,
    pub what: String,
    pub threads: usize,
    /// Rows each call covers: GRAD_ROWS, PIECE_ROWS, or the worker's whole range.
    pub piece_rows: usize,
    /// Best time of one pass over all rows.
    pub ms: f64,
    /// For a GEMM: its rate; for an elementwise pass: 1e9 elements per second.
    pub gflops: Option<f64>,
    pub gelems: Option<f64>,
}

/// Deterministic, bounded test values (no subnormals, no NaN through repeated passes).
fn values(len: usize, salt: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 31 + salt * 17) % 97) as f32 * 0.02 - 0.97)
        .collect()
}

/// Best wall time of `repeats` passes (after one untimed) of `f(worker, range)` run on
/// every worker's range in parallel.
fn best_ms(
    pool: &rayon::ThreadPool,
    ranges: &[Range<usize>],
    repeats: usize,
    f: &(dyn Fn(usize, Range<usize>) + Sync),
) -> f64 {
    let mut best = f64::INFINITY;
    for run in 0..=repeats.max(1) {
        let t = Instant::now();
        pool.install(|| {
            ranges
                .par_iter()
                .enumerate()
                .for_each(|(w, r)| f(w, r.clone()))
        });
        if run > 0 {
            best = best.min(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    best
}

/// Calls `f(start, len)` over `r` in pieces of `piece` rows.
fn pieces(r: Range<usize>, piece: usize, mut f: impl FnMut(usize, usize)) {
    let mut s = r.start;
    while s < r.end {
        let p = piece.min(r.end - s);
        f(s, p);
        s += p;
    }
}

/// One GEMM call on rows s..s + p (the `local`-th row of the worker's range onwards) into
/// the worker's scratch.
type GemmCall<'a> = dyn Fn(usize, usize, usize, &mut [f32]) + Sync + 'a;

/// Per-worker mutable buffers behind a lock each, so a `Fn` closure can write them.
struct PerWorker(Vec<std::sync::Mutex<Vec<f32>>>);

impl PerWorker {
    fn new(workers: usize, len: usize) -> PerWorker {
        PerWorker(
            (0..workers)
                .map(|_| std::sync::Mutex::new(vec![0.0; len]))
                .collect(),
        )
    }
    fn fill(self, salt: usize) -> PerWorker {
        for (w, m) in self.0.iter().enumerate() {
            let mut g = m.lock().expect("a worker's buffer");
            let len = g.len();
            g.copy_from_slice(&values(len, salt + w));
        }
        self
    }
    fn with<R>(&self, w: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
        let mut g = self.0[w].lock().expect("a worker's buffer");
        f(&mut g)
    }
}

/// Times the one-layer decoder's phases (widths `dims`, e.g. [50, 200, 200, 784]) over
/// `rows` sample rows with the pool's workers, best of `repeats`.
pub fn decoder_phase_rates(
    pool: &rayon::ThreadPool,
    dims: &[usize],
    rows: usize,
    repeats: usize,
) -> Vec<PhaseRate> {
    let threads = pool.current_num_threads();
    let ranges = worker_ranges(rows, threads);
    let workers = ranges.len();
    let per_worker_rows = ranges.iter().map(|r| r.len()).max().unwrap_or(0);
    let mut out = Vec::new();
    let widest = dims.iter().copied().max().unwrap_or(0);
    let acts: Vec<Vec<f32>> = dims
        .iter()
        .enumerate()
        .map(|(i, &d)| values(rows * d, i))
        .collect();
    // One layer's weights and bias in a parameter vector of its own, so the timed calls are
    // the backend's own `linear_*` functions.
    let layers: Vec<(Linear, Vec<f32>)> = dims
        .windows(2)
        .enumerate()
        .map(|(i, w)| {
            let l = Linear {
                name: format!("layer{i}"),
                inp: w[0],
                out: w[1],
                w: 0,
                b: w[0] * w[1],
            };
            let params = values(w[0] * w[1] + w[1], 10 + i)
                .iter()
                .map(|v| v * 0.1)
                .collect();
            (l, params)
        })
        .collect();
    let mut sizes: Vec<usize> = [GRAD_ROWS, PIECE_ROWS, per_worker_rows]
        .into_iter()
        .map(|s| s.min(per_worker_rows).max(1))
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    for piece in sizes {
        for (i, (l, params)) in layers.iter().enumerate() {
            let (din, dout) = (l.inp, l.out);
            let flops = 2.0 * (rows * din * dout) as f64;
            let (inp, delta) = (&acts[i], &acts[i + 1]);
            let mut time = |kind: &str, what: String, scratch_len: usize, call: &GemmCall<'_>| {
                let scratch = PerWorker::new(workers, scratch_len);
                let ms = best_ms(pool, &ranges, repeats, &|wk, r| {
                    let first = r.start;
                    scratch.with(wk, |o| pieces(r, piece, |s, p| call(s - first, s, p, o)))
                });
                out.push(PhaseRate {
                    key: format!("gemm-{kind}-{din}x{dout}"),
                    what,
                    threads,
                    piece_rows: piece,
                    ms,
                    gflops: Some(flops / ms / 1e6),
                    gelems: None,
                });
            };
            time(
                "forward",
                format!("forward [{rows}, {din}] x W^T [{din}, {dout}]"),
                // The worker's whole output, as the backend writes its activations.
                per_worker_rows * dout,
                &|local, s, p, o| {
                    let o = &mut o[local * dout..(local + p) * dout];
                    linear_forward(params, l, &inp[s * din..(s + p) * din], o, p)
                },
            );
            time(
                "input-grad",
                format!("input gradient [{rows}, {dout}] x W [{dout}, {din}]"),
                piece * din,
                &|_, s, p, o| {
                    linear_input_grad(
                        params,
                        l,
                        &delta[s * dout..(s + p) * dout],
                        &mut o[..p * din],
                        p,
                    )
                },
            );
            // Each worker accumulates into its own gradient (its scratch), unscaled: the
            // GEMM alone.
            time(
                "weight-grad",
                format!("weight gradient delta^T [{dout}, {rows}] x input [{rows}, {din}]"),
                din * dout + dout,
                &|_, s, p, g| {
                    linear_weight_grad(
                        g,
                        l,
                        &inp[s * din..(s + p) * din],
                        &delta[s * dout..(s + p) * dout],
                        None,
                        &mut [],
                        p,
                    )
                },
            );
        }
    }
    let elem_rate = |key: &str, what: String, elems: usize, ms: f64| PhaseRate {
        key: key.to_string(),
        what,
        threads,
        piece_rows: PIECE_ROWS,
        ms,
        gflops: None,
        gelems: Some(elems as f64 / ms / 1e6),
    };
    let (zd, hd, xd) = (dims[0], dims[1], dims[dims.len() - 1]);
    // Each worker's own copy of its rows, so the in-place passes write memory they own.
    let own = |d: usize, salt: usize| PerWorker::new(workers, per_worker_rows * d).fill(salt);
    let hidden = own(hd, 1);
    let bias = values(widest, 7);
    let ms = best_ms(pool, &ranges, repeats, &|wk, r| {
        hidden.with(wk, |v| {
            fastmath::bias_tanh_rows(&mut v[..r.len() * hd], &bias[..hd]);
        })
    });
    out.push(elem_rate(
        "tanh",
        format!("tanh(v + b) [{rows}, {hd}]"),
        rows * hd,
        ms,
    ));
    let act = values(per_worker_rows * hd, 3);
    let ms = best_ms(pool, &ranges, repeats, &|wk, r| {
        hidden.with(wk, |v| {
            fastmath::tanh_backward(&mut v[..r.len() * hd], &act[..r.len() * hd]);
        })
    });
    out.push(elem_rate(
        "tanh-backward",
        format!("delta (1 - a^2) [{rows}, {hd}]"),
        rows * hd,
        ms,
    ));
    let logits = own(xd, 2);
    let x: Vec<f32> = (0..xd).map(|d| ((d * 7) % 3 == 0) as u8 as f32).collect();
    let ms = best_ms(pool, &ranges, repeats, &|wk, r| {
        logits.with(wk, |v| {
            let mut sum = 0.0f32;
            for row in v[..r.len() * xd].chunks_exact_mut(xd) {
                sum += fastmath::bernoulli_row(row, &bias[..xd], &x);
            }
            std::hint::black_box(sum);
        })
    });
    out.push(elem_rate(
        "bernoulli",
        format!("log Bernoulli(x | l + b) and x - sigmoid [{rows}, {xd}]"),
        rows * xd,
        ms,
    ));
    let scale = values(per_worker_rows, 4);
    let scaled = own(hd, 5);
    let ms = best_ms(pool, &ranges, repeats, &|wk, r| {
        scaled.with(wk, |o| {
            fastmath::scale_rows(
                &mut o[..r.len() * hd],
                &act[..r.len() * hd],
                &scale[..r.len()],
                hd,
            );
        })
    });
    out.push(elem_rate(
        "scale-rows",
        format!("a_n x input rows [{rows}, {hd}]"),
        rows * hd,
        ms,
    ));
    let eps = own(zd, 6);
    let ms = best_ms(pool, &ranges, repeats, &|wk, r| {
        eps.with(wk, |e| {
            for (j, row) in e[..r.len() * zd].chunks_exact_mut(zd).enumerate() {
                let n = r.start + j;
                rng::fill_normals_from(1, rng::Stream::Eps, 0, (n / 50) as u32, (n % 50) * zd, row);
            }
        })
    });
    out.push(elem_rate(
        "normals",
        format!("Philox normals eps [{rows}, {zd}]"),
        rows * zd,
        ms,
    ));
    let src = own(xd, 8);
    let dst = own(xd, 9);
    let ms = best_ms(pool, &ranges, repeats, &|wk, r| {
        src.with(wk, |s| {
            dst.with(wk, |d| {
                d[..r.len() * xd].copy_from_slice(&s[..r.len() * xd]);
            })
        })
    });
    out.push(elem_rate(
        "copy",
        format!("copy [{rows}, {xd}] (memory traffic)"),
        rows * xd,
        ms,
    ));
    out
}
