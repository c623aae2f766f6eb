//! A plain f64 forward pass of the VAE, written for clarity, not speed. The gradient checks
//! differentiate surrogate objectives built on it by finite differences, and the backends'
//! log-weights are compared against it.
//!
//! Stop-gradients are explicit: the encoder that *draws* z = mu + sigma * eps and the
//! encoder that *scores* log q(z | x) are passed separately, so "q's parameters held fixed
//! inside log q" is a derivative with respect to one of them only.

use super::{Layout, Linear};

fn linear(p: &[f64], l: &Linear, x: &[f64]) -> Vec<f64> {
    (0..l.out)
        .map(|o| {
            let row = &p[l.w + o * l.inp..l.w + (o + 1) * l.inp];
            p[l.b + o] + row.iter().zip(x).map(|(w, v)| w * v).sum::<f64>()
        })
        .collect()
}

fn mlp(p: &[f64], layers: &[Linear], x: &[f64]) -> Vec<f64> {
    let mut h = x.to_vec();
    for (i, l) in layers.iter().enumerate() {
        h = linear(p, l, &h);
        if i + 1 < layers.len() {
            h.iter_mut().for_each(|v| *v = v.tanh());
        }
    }
    h
}

/// (mu, log sigma) of q(z | x) under the encoder in `p`.
pub fn encode(layout: &Layout, p: &[f64], x: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let out = mlp(p, &layout.encoder, x);
    let z = layout.arch.z_dim;
    (out[..z].to_vec(), out[z..].to_vec())
}

/// (mu, log sigma) of q(z2 | z1) under the encoder2 in `p` (two-layer models).
pub fn encode2(layout: &Layout, p: &[f64], z1: &[f64]) -> (Vec<f64>, Vec<f64>) {
    head(
        mlp(p, &layout.encoder2, z1),
        layout.arch.noise_dim() - layout.arch.z_dim,
    )
}

/// log p(x | z) under the layout's likelihood (Bernoulli logits or Gaussian means) with the
/// decoder in `p`.
pub fn log_lik(layout: &Layout, p: &[f64], x: &[f64], z: &[f64]) -> f64 {
    let out = mlp(p, &layout.decoder, z);
    let lik = layout.arch.likelihood;
    out.iter().zip(x).map(|(&m, &xv)| lik.log_term(xv, m)).sum()
}

/// The decoder's output for latent `z`: Bernoulli logits (the VAE) or Gaussian means.
pub fn decode(layout: &Layout, p: &[f64], z: &[f64]) -> Vec<f64> {
    mlp(p, &layout.decoder, z)
}

const HALF_LN_2PI: f64 = 0.918_938_533_204_672_8;

/// log N(z; mu, diag(exp(log_sigma))^2).
pub fn log_normal(z: &[f64], mu: &[f64], log_sigma: &[f64]) -> f64 {
    z.iter()
        .zip(mu)
        .zip(log_sigma)
        .map(|((&z, &m), &ls)| -0.5 * ((z - m) / ls.exp()).powi(2) - ls - HALF_LN_2PI)
        .sum()
}

/// The pieces of one sample: z, and the log-weight terms.
pub struct Sample {
    pub z: Vec<f64>,
    pub log_px_given_z: f64,
    pub log_pz: f64,
    pub log_q: f64,
}

impl Sample {
    pub fn log_weight(&self) -> f64 {
        self.log_px_given_z + self.log_pz - self.log_q
    }
}

/// One sample of datapoint `x` with noise `eps`: the decoder from `theta`, z drawn with the
/// encoder in `phi_draw`, log q scored with the encoder in `phi_score`. Each argument is a
/// full flat parameter vector; only its decoder or encoder part is read.
pub fn sample(
    layout: &Layout,
    theta: &[f64],
    phi_draw: &[f64],
    phi_score: &[f64],
    x: &[f64],
    eps: &[f64],
) -> Sample {
    let (z, log_q) = draw_and_score(layout, phi_draw, phi_score, x, eps);
    let zeros = vec![0.0; z.len()];
    Sample {
        log_px_given_z: log_lik(layout, theta, x, &z),
        log_pz: log_normal(&z, &zeros, &zeros),
        log_q,
        z,
    }
}

/// z = mu + sigma eps with the encoder in `phi_draw`, and log q(z | x) under the encoder in
/// `phi_score`.
fn draw_and_score(
    layout: &Layout,
    phi_draw: &[f64],
    phi_score: &[f64],
    x: &[f64],
    eps: &[f64],
) -> (Vec<f64>, f64) {
    let (mu, ls) = encode(layout, phi_draw, x);
    let z = reparam(&mu, &ls, eps);
    let (mu_q, ls_q) = if std::ptr::eq(phi_draw, phi_score) {
        (mu, ls)
    } else {
        encode(layout, phi_score, x)
    };
    let log_q = log_normal(&z, &mu_q, &ls_q);
    (z, log_q)
}

/// Log-weights of n samples (eps is [n, noise_dim]: z_dim, plus a two-layer model's z2
/// normals after z1's) of one datapoint.
pub fn log_weights(
    layout: &Layout,
    theta: &[f64],
    phi_draw: &[f64],
    phi_score: &[f64],
    x: &[f64],
    eps: &[f64],
) -> Vec<f64> {
    eps.chunks(layout.arch.noise_dim())
        .map(|e| match (&layout.arch.top, &layout.arch.cond) {
            (Some(_), _) => sample_two_layer(layout, theta, phi_draw, phi_score, x, e).log_weight(),
            (None, Some(_)) => sample_cond(layout, theta, phi_draw, phi_score, x, e).log_weight(),
            (None, None) => sample(layout, theta, phi_draw, phi_score, x, e).log_weight(),
        })
        .collect()
}

/// One sample of the conditional model (`--model cvae`) for image `x`, whose first c_dim
/// pixels are the context c: z drawn with the encoder in `phi_draw` on the whole image, log q
/// scored with the encoder in `phi_score`; p(z | c) and p(rest | z, c) (the decoder on
/// [z, c]) from `theta`.
pub fn sample_cond(
    layout: &Layout,
    theta: &[f64],
    phi_draw: &[f64],
    phi_score: &[f64],
    x: &[f64],
    eps: &[f64],
) -> Sample {
    let (zd, cd) = (layout.arch.z_dim, layout.arch.c_dim());
    let (z, log_q) = draw_and_score(layout, phi_draw, phi_score, x, eps);
    let (mu_p, ls_p) = head(mlp(theta, &layout.prior, &x[..cd]), zd);
    let inp: Vec<f64> = z.iter().chain(&x[..cd]).copied().collect();
    let lik = layout.arch.likelihood;
    Sample {
        log_px_given_z: mlp(theta, &layout.decoder, &inp)
            .iter()
            .zip(&x[cd..])
            .map(|(&m, &xv)| lik.log_term(xv, m))
            .sum(),
        log_pz: log_normal(&z, &mu_p, &ls_p),
        log_q,
        z,
    }
}

/// z1 = mean + sd * eps1 of p(z1 | z2) under the decoder2 in `theta` (ancestral sampling of
/// the two-layer model's prior).
pub fn prior_z1(layout: &Layout, theta: &[f64], z2: &[f64], eps1: &[f64]) -> Vec<f64> {
    let (m, ls) = head(mlp(theta, &layout.decoder2, z2), layout.arch.z_dim);
    reparam(&m, &ls, eps1)
}

/// The pieces of one sample of the two-layer model.
pub struct Sample2 {
    pub z1: Vec<f64>,
    pub z2: Vec<f64>,
    pub log_px_given_z1: f64,
    pub log_pz1_given_z2: f64,
    pub log_pz2: f64,
    pub log_q1: f64,
    pub log_q2: f64,
}

impl Sample2 {
    pub fn log_weight(&self) -> f64 {
        self.log_px_given_z1 + self.log_pz1_given_z2 + self.log_pz2 - self.log_q1 - self.log_q2
    }
}

/// Splits a Gaussian head's output into (means, log sds).
fn head(out: Vec<f64>, d: usize) -> (Vec<f64>, Vec<f64>) {
    (out[..d].to_vec(), out[d..].to_vec())
}

fn reparam(mu: &[f64], ls: &[f64], eps: &[f64]) -> Vec<f64> {
    mu.iter()
        .zip(ls)
        .zip(eps)
        .map(|((m, s), e)| m + s.exp() * e)
        .collect()
}

/// One sample of the two-layer model with noise `eps` = (eps1 [z1], eps2 [z2]):
/// z1 = mu1(x) + sigma1(x) eps1 and z2 = mu2(z1) + sigma2(z1) eps2, both drawn with the
/// encoders in `phi_draw`; both log q factors scored with the encoders in `phi_score` (at the
/// drawn z1, z2); p(x | z1) and p(z1 | z2) from `theta`.
pub fn sample_two_layer(
    layout: &Layout,
    theta: &[f64],
    phi_draw: &[f64],
    phi_score: &[f64],
    x: &[f64],
    eps: &[f64],
) -> Sample2 {
    let (d1, d2) = (
        layout.arch.z_dim,
        layout.arch.noise_dim() - layout.arch.z_dim,
    );
    let (mu1, ls1) = encode(layout, phi_draw, x);
    let z1 = reparam(&mu1, &ls1, &eps[..d1]);
    let (mu2, ls2) = head(mlp(phi_draw, &layout.encoder2, &z1), d2);
    let z2 = reparam(&mu2, &ls2, &eps[d1..d1 + d2]);
    let (mu1_q, ls1_q) = encode(layout, phi_score, x);
    let (mu2_q, ls2_q) = head(mlp(phi_score, &layout.encoder2, &z1), d2);
    let (m1, lp1) = head(mlp(theta, &layout.decoder2, &z2), d1);
    let zeros = vec![0.0; d2];
    Sample2 {
        log_px_given_z1: log_lik(layout, theta, x, &z1),
        log_pz1_given_z2: log_normal(&z1, &m1, &lp1),
        log_pz2: log_normal(&z2, &zeros, &zeros),
        log_q1: log_normal(&z1, &mu1_q, &ls1_q),
        log_q2: log_normal(&z2, &mu2_q, &ls2_q),
        z1,
        z2,
    }
}

/// Encoder outputs (mu, log sigma) [batch, 2 z] of f32 inputs, computed in f64.
pub fn encode_batch(params: &super::Params, x: &[f32], batch: usize) -> Vec<f32> {
    let p: Vec<f64> = params.values.iter().map(|&v| v as f64).collect();
    let xd = params.layout.arch.x_dim;
    let mut out = Vec::with_capacity(batch * 2 * params.layout.arch.z_dim);
    for b in 0..batch {
        let xb: Vec<f64> = x[b * xd..(b + 1) * xd].iter().map(|&v| v as f64).collect();
        let (mu, ls) = encode(&params.layout, &p, &xb);
        out.extend(mu.iter().chain(&ls).map(|&v| v as f32));
    }
    out
}
