//! The linear-layer GEMMs over matrixmultiply's sgemm, and how rows are split between
//! workers.

use super::fastmath;
use crate::model::Linear;
use std::ops::Range;

/// C[m, n] = alpha A[m, k] B[k, n] + beta C, with element strides (row, column).
// BLAS's sgemm argument list (matrixmultiply's, with bounds checks), so calls read like it.
#[allow(clippy::too_many_arguments)]
pub(super) fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: &[f32],
    (rsa, csa): (usize, usize),
    b: &[f32],
    (rsb, csb): (usize, usize),
    beta: f32,
    c: &mut [f32],
    (rsc, csc): (usize, usize),
) {
    if m == 0 || n == 0 {
        return;
    }
    // Bounds: the last element each operand can touch must be inside its slice.
    assert!(k == 0 || ((m - 1) * rsa + (k - 1) * csa) < a.len());
    assert!(k == 0 || ((k - 1) * rsb + (n - 1) * csb) < b.len());
    assert!(((m - 1) * rsc + (n - 1) * csc) < c.len());
    // SAFETY: the asserts above keep every access inside the slices; c does not alias a or b
    // (it is borrowed mutably).
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.as_ptr(),
            rsa as isize,
            csa as isize,
            b.as_ptr(),
            rsb as isize,
            csb as isize,
            beta,
            c.as_mut_ptr(),
            rsc as isize,
            csc as isize,
        );
    }
}

/// out[rows, l.out] = inp[rows, l.inp] W^T (+ bias and tanh by the caller).
pub(super) fn linear_forward(
    params: &[f32],
    l: &Linear,
    inp: &[f32],
    out: &mut [f32],
    rows: usize,
) {
    let w = &params[l.w..l.w + l.out * l.inp];
    sgemm(
        rows,
        l.inp,
        l.out,
        1.0,
        inp,
        (l.inp, 1),
        w,
        (1, l.inp),
        0.0,
        out,
        (l.out, 1),
    );
}

/// Accumulates the weight and bias gradient of layer `l` into `grad` for a piece:
/// dW += delta^T (scale ⊙ inp), db += delta^T scale. `scaled` is scratch [rows, l.inp].
pub(super) fn linear_weight_grad(
    grad: &mut [f32],
    l: &Linear,
    inp: &[f32],
    delta: &[f32],
    scale: Option<&[f32]>,
    scaled: &mut [f32],
    rows: usize,
) {
    let input: &[f32] = match scale {
        Some(s) => {
            fastmath::scale_rows(&mut scaled[..rows * l.inp], inp, s, l.inp);
            &scaled[..rows * l.inp]
        }
        None => inp,
    };
    let (gw, gb) = grad[l.w..l.b + l.out].split_at_mut(l.out * l.inp);
    sgemm(
        l.out,
        rows,
        l.inp,
        1.0,
        delta,
        (1, l.out),
        input,
        (l.inp, 1),
        1.0,
        gw,
        (l.inp, 1),
    );
    fastmath::add_scaled_rows(gb, &delta[..rows * l.out], scale);
}

/// dinp[rows, l.inp] = delta[rows, l.out] W.
pub(super) fn linear_input_grad(
    params: &[f32],
    l: &Linear,
    delta: &[f32],
    dinp: &mut [f32],
    rows: usize,
) {
    let w = &params[l.w..l.w + l.out * l.inp];
    sgemm(
        rows,
        l.out,
        l.inp,
        1.0,
        delta,
        (l.out, 1),
        w,
        (l.inp, 1),
        0.0,
        dinp,
        (l.inp, 1),
    );
}

/// Splits `buf` (rows of `width`) into one mutable slice per range.
pub(super) fn split_rows<'a>(
    mut buf: &'a mut [f32],
    width: usize,
    ranges: &[Range<usize>],
) -> Vec<&'a mut [f32]> {
    let mut out = Vec::with_capacity(ranges.len());
    let mut at = 0;
    for r in ranges {
        let (_, rest) = buf.split_at_mut((r.start - at) * width);
        let (mine, rest) = rest.split_at_mut(r.len() * width);
        out.push(mine);
        buf = rest;
        at = r.end;
    }
    out
}

/// Contiguous near-equal row ranges, one per worker (empty ranges dropped).
pub(super) fn worker_ranges(rows: usize, workers: usize) -> Vec<Range<usize>> {
    let per = rows.div_ceil(workers.max(1)).max(1);
    (0..rows)
        .step_by(per)
        .map(|s| s..(s + per).min(rows))
        .collect()
}

/// Multiply-adds of one row through `layers`.
pub(super) fn mlp_macs(layers: &[Linear]) -> usize {
    layers.iter().map(|l| l.inp * l.out).sum()
}

/// The best GFLOP/s of C = A B on `n` x `n` squares over `repeats` timed runs (after one
/// untimed), C's rows split over the pool's workers as a pass splits its rows: the
/// denominator the benchmarks set each phase's rate against.
pub fn square_sgemm_gflops(pool: &rayon::ThreadPool, n: usize, repeats: usize) -> f64 {
    use rayon::prelude::*;
    let a: Vec<f32> = (0..n * n).map(|i| (i % 97) as f32 * 0.01 - 0.48).collect();
    let b: Vec<f32> = (0..n * n).map(|i| (i % 89) as f32 * 0.01 - 0.44).collect();
    let mut c = vec![0.0f32; n * n];
    let ranges = worker_ranges(n, pool.current_num_threads());
    let mut best = f64::INFINITY;
    for run in 0..=repeats.max(1) {
        let parts = split_rows(&mut c, n, &ranges);
        let t = std::time::Instant::now();
        pool.install(|| {
            parts
                .into_par_iter()
                .zip(ranges.par_iter())
                .for_each(|(part, r)| {
                    let rows = &a[r.start * n..r.end * n];
                    sgemm(
                        r.len(),
                        n,
                        n,
                        1.0,
                        rows,
                        (n, 1),
                        &b,
                        (n, 1),
                        0.0,
                        part,
                        (n, 1),
                    );
                })
        });
        if run > 0 {
            best = best.min(t.elapsed().as_secs_f64());
        }
    }
    2.0 * (n as f64).powi(3) / best / 1e9
}
