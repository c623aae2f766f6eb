//! Active units (Burda, Grosse & Salakhutdinov 2016, section 5.2): latent unit u is active
//! when A_u = Cov_x(E_{q(z|x)}[z_u]) > 0.01 over the data set; a two-layer model counts each
//! layer (the paper's "21+5").
//!
//! E_q[z1 | x] is the encoder's mean mu1(x). E_q[z2 | x] = E_{q(z1|x)}[mu2(z1)] has no closed
//! form through the tanh layers: it is the mean of mu2(z1) over [`Z2_SAMPLES`] draws
//! z1 ~ q(z1 | x), seeded per datapoint, so the count is reproducible and does not depend on
//! the number of threads.

use super::{reference, Params};
use crate::stats::Moments;
use rand::SeedableRng;
use rayon::prelude::*;
use serde::Serialize;

/// A unit is active when the variance of its posterior mean over the data exceeds this.
pub const ACTIVITY_THRESHOLD: f64 = 0.01;
/// Draws of z1 per datapoint behind E_q[z2 | x].
pub const Z2_SAMPLES: usize = 16;

/// Active units per stochastic layer, and every unit's A_u (the sample variance, n - 1).
#[derive(Clone, Debug, Serialize)]
pub struct ActiveUnits {
    pub per_layer: Vec<usize>,
    pub variances: Vec<Vec<f64>>,
}

impl ActiveUnits {
    /// "19", or "21+5" for two layers, as the paper writes it.
    pub fn label(&self) -> String {
        self.per_layer
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join("+")
    }
}

/// E_q[z1 | x] and (two layers) E_q[z2 | x] of one datapoint, side by side.
fn posterior_means(params: &Params, p: &[f64], x: &[f64], seed: u64) -> Vec<f64> {
    let layout = &params.layout;
    let (mu1, ls1) = reference::encode(layout, p, x);
    if layout.arch.top.is_none() {
        return mu1;
    }
    let d2 = layout.arch.noise_dim() - layout.arch.z_dim;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut eps = vec![0.0; mu1.len()];
    let mut mean2 = vec![0.0; d2];
    for _ in 0..Z2_SAMPLES {
        crate::exact::fill_std_normals(&mut rng, &mut eps);
        let z1: Vec<f64> = (0..mu1.len())
            .map(|i| mu1[i] + ls1[i].exp() * eps[i])
            .collect();
        let (mu2, _) = reference::encode2(layout, p, &z1);
        for (m, v) in mean2.iter_mut().zip(mu2) {
            *m += v / Z2_SAMPLES as f64;
        }
    }
    [mu1, mean2].concat()
}

/// The active units of `params` over the `count` datapoints of `x` [count, x_dim]; `seed`
/// seeds the z1 draws of a two-layer model.
pub fn active_units(params: &Params, x: &[f32], count: usize, seed: u64) -> ActiveUnits {
    let p: Vec<f64> = params.values.iter().map(|&v| v as f64).collect();
    let arch = &params.layout.arch;
    let (xd, dims) = (arch.x_dim, arch.noise_dim());
    let moments = x[..count * xd]
        .par_chunks(xd)
        .enumerate()
        .fold(
            || Moments::new(dims),
            |mut m, (i, img)| {
                let img: Vec<f64> = img.iter().map(|&v| v as f64).collect();
                m.push(&posterior_means(params, &p, &img, seed ^ i as u64));
                m
            },
        )
        .reduce(
            || Moments::new(dims),
            |mut a, b| {
                a.merge(&b);
                a
            },
        );
    let all: Vec<f64> = (0..dims).map(|u| moments.var(u)).collect();
    let variances = vec![all[..arch.z_dim].to_vec(), all[arch.z_dim..].to_vec()];
    let variances: Vec<Vec<f64>> = variances.into_iter().filter(|v| !v.is_empty()).collect();
    ActiveUnits {
        per_layer: variances
            .iter()
            .map(|v| v.iter().filter(|&&a| a > ACTIVITY_THRESHOLD).count())
            .collect(),
        variances,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Arch, Params};

    /// A linear encoder (no hidden layer) with mu_u(x) = w_u x_u: over data x_u = +-1 (half
    /// each), A_u is w_u^2 times the sample variance n / (n - 1) of the signs; weights give
    /// A = 0.009 (just below the threshold) and 0.011 (just above), and 0 for a unit that
    /// sees no input.
    #[test]
    fn units_count_as_active_just_above_the_threshold_only() {
        let arch = Arch {
            x_dim: 3,
            hidden: vec![],
            z_dim: 3,
            likelihood: Default::default(),
            top: None,
            cond: None,
        };
        let mut params = Params::init(&arch, 1, None);
        let n = 200usize;
        let scale = (n - 1) as f64 / n as f64;
        let enc = params.layout.encoder[0].clone();
        params.values[enc.w..enc.w + enc.out * enc.inp].fill(0.0);
        params.values[enc.b..enc.b + enc.out].fill(0.0);
        for (u, a) in [0.009f64, 0.011].into_iter().enumerate() {
            params.values[enc.w + u * enc.inp + u] = (a * scale).sqrt() as f32;
        }
        let x: Vec<f32> = (0..n)
            .flat_map(|i| {
                let s = if i % 2 == 0 { 1.0 } else { -1.0 };
                [s, -s, s]
            })
            .collect();
        let au = active_units(&params, &x, n, 0);
        println!("A_u = {:?}", au.variances);
        let v = &au.variances[0];
        assert!(
            (v[0] - 0.009).abs() < 1e-6 && (v[1] - 0.011).abs() < 1e-6,
            "{v:?}"
        );
        assert_eq!(v[2], 0.0);
        assert_eq!(au.per_layer, vec![1]);
        assert_eq!(au.label(), "1");
    }

    #[test]
    fn two_layer_models_count_both_layers_reproducibly() {
        let arch = Arch {
            x_dim: 6,
            hidden: vec![5],
            z_dim: 4,
            likelihood: Default::default(),
            top: Some(crate::model::TopLayer {
                hidden: vec![3],
                z_dim: 2,
            }),
            cond: None,
        };
        let params = Params::init(&arch, 2, None);
        let x: Vec<f32> = (0..60).map(|i| ((i * 7) % 5) as f32 / 4.0).collect();
        let a = active_units(&params, &x, 10, 3);
        assert_eq!(a.variances.iter().map(Vec::len).collect::<Vec<_>>(), [4, 2]);
        assert_eq!(a.per_layer.len(), 2);
        assert_eq!(a.variances, active_units(&params, &x, 10, 3).variances);
        assert!(a.label().contains('+'));
    }
}
