//! The exact models of `crate::exact` as *training* models (`uvae train --model
//! toy|ppca|hgauss`): each is a configuration of the backends' model, so the backends stay
//! generic and know no estimator. Toy and PPCA have no hidden layers (a linear encoder
//! x -> 2z and a linear decoder z -> x), a Gaussian likelihood with fixed noise sd, and frozen
//! parameter ranges (`Layout::frozen`, whose gradient the backends zero); hgauss is laid out
//! by [`hgauss_layout`].
//!
//! Toy (Rainforth et al. 2018), centred parameterisation `z' = z - mu`: then
//! `z' ~ N(0, I)`, `x | z' ~ N(z' + mu, I)` and `q(z' | x) = N(A x + b - mu, 2/3 I)`. This is
//! the same model (`p(x) = N(mu, 2 I)`, the same encoder family, the same log-weights, since
//! the shift has Jacobian 1), with the backends' standard-normal prior:
//!
//! ```text
//! decoder.0.weight = I (frozen)        decoder.0.bias = mu (learned)   likelihood Gaussian{sd: 1}
//! encoder.0.weight rows 0..D = A (learned), rows D..2D = 0 (frozen)
//! encoder.0.bias[0..D] = b - mu (learned), bias[D..2D] = ln sqrt(2/3) (frozen)
//! ```
//!
//! The per-sample decoder gradient differs from [`Toy`]'s `D_n = z_n - mu` (taken at
//! fixed z): at fixed `z'` the backend's is `d/dmu log p(x, z' + mu) = D_n + grad_z log p(x, z_n)
//! = x - z_n`; in expectation under the posterior both are `(x - mu) / 2`.
//!
//! PPCA (Tipping & Bishop 1999), direct:
//!
//! ```text
//! decoder.0.weight = W ([out D, in d] row-major)   decoder.0.bias = b   likelihood Gaussian{sd: s}
//! encoder.0.weight rows 0..d = C (learned), rows d..2d = 0 (frozen)
//! encoder.0.bias[0..d] = e (learned), bias[d..2d] = log_sd (learned)
//! ```

use super::{Arch, Layout, Likelihood, ModelChoice, Params, TopLayer};
use crate::exact::{ExactModel, HGauss, Ppca, PpcaConfig, Toy};
use anyhow::{bail, Result};

/// The backend architecture of an exact model (None for the VAE).
pub fn arch(model: ModelChoice) -> Option<Arch> {
    match model {
        ModelChoice::Vae | ModelChoice::Hvae | ModelChoice::Cvae => None,
        ModelChoice::Toy => Some(Arch {
            x_dim: Toy::DIM,
            hidden: Vec::new(),
            z_dim: Toy::DIM,
            likelihood: Likelihood::Gaussian { sd: 1.0 },
            top: None,
            cond: None,
        }),
        ModelChoice::Ppca => {
            let c = PpcaConfig::default();
            Some(Arch {
                x_dim: c.x_dim,
                hidden: Vec::new(),
                z_dim: c.z_dim,
                likelihood: Likelihood::Gaussian { sd: c.noise_sd },
                top: None,
                cond: None,
            })
        }
        ModelChoice::Hgauss => Some(hgauss_layout_default().arch),
    }
}

fn hgauss_layout_default() -> Layout {
    let (dx, d1, d2, s, _) = HGauss::SHAPE;
    hgauss_layout(dx, d1, d2, s)
}

/// A sentence on an exact model's fixed shape, for error messages.
pub fn shape_note(model: ModelChoice) -> String {
    match model {
        ModelChoice::Vae => "an MLP VAE".to_string(),
        ModelChoice::Hvae => "an MLP VAE with two stochastic layers".to_string(),
        ModelChoice::Cvae => "an MLP VAE of the bottom rows given the top rows".to_string(),
        ModelChoice::Toy => format!(
            "x and z of dimension {}, linear encoder and decoder",
            Toy::DIM
        ),
        ModelChoice::Ppca => {
            let c = PpcaConfig::default();
            format!(
                "x of dimension {}, z of dimension {}, linear encoder and decoder",
                c.x_dim, c.z_dim
            )
        }
        ModelChoice::Hgauss => {
            let (dx, d1, d2, _, _) = HGauss::SHAPE;
            format!("x of dimension {dx}, z1 of {d1}, z2 of {d2}, linear encoders and decoders")
        }
    }
}

/// The toy's layout for dimension `dim`, with its frozen ranges.
pub fn toy_layout(dim: usize) -> Layout {
    let mut layout = Layout::new(&Arch {
        x_dim: dim,
        hidden: Vec::new(),
        z_dim: dim,
        likelihood: Likelihood::Gaussian { sd: 1.0 },
        top: None,
        cond: None,
    });
    let (enc, dec) = (&layout.encoder[0], &layout.decoder[0]);
    layout.frozen = vec![
        enc.w + dim * dim..enc.w + 2 * dim * dim,
        enc.b + dim..enc.b + 2 * dim,
        dec.w..dec.w + dim * dim,
    ];
    layout
}

/// PPCA's layout for observed dimension `dx`, latent `dz` and noise sd `s`, with its frozen
/// range (the encoder rows that would make log_sd depend on x).
pub fn ppca_layout(dx: usize, dz: usize, s: f64) -> Layout {
    let mut layout = Layout::new(&Arch {
        x_dim: dx,
        hidden: Vec::new(),
        z_dim: dz,
        likelihood: Likelihood::Gaussian { sd: s },
        top: None,
        cond: None,
    });
    let enc = &layout.encoder[0];
    let rows = enc.w + dz * dx..enc.w + 2 * dz * dx;
    layout.frozen = vec![rows];
    layout
}

/// The toy's log sd of q: ln sqrt(2/3).
fn toy_log_sd() -> f64 {
    0.5 * Toy::Q_VAR.ln()
}

/// Backend parameters of a toy model (see the module docs for the mapping).
pub fn toy_to_params(toy: &Toy) -> Params {
    let dim = toy.x_dim();
    let layout = toy_layout(dim);
    let mut v = vec![0.0f32; layout.len];
    let (enc, dec) = (&layout.encoder[0], &layout.decoder[0]);
    for (i, &a) in toy.a().iter().enumerate() {
        v[enc.w + i] = a as f32;
    }
    for i in 0..dim {
        v[enc.b + i] = (toy.b()[i] - toy.mu()[i]) as f32;
        v[enc.b + dim + i] = toy_log_sd() as f32;
        v[dec.w + i * dim + i] = 1.0;
        v[dec.b + i] = toy.mu()[i] as f32;
    }
    Params { layout, values: v }
}

/// The toy model that backend parameters `p` stand for, with dataset `data`. Fails when `p`
/// is not a toy layout or its frozen entries moved.
pub fn params_to_toy(p: &Params, data: Vec<Vec<f64>>) -> Result<Toy> {
    let a = &p.layout.arch;
    let dim = a.x_dim;
    if a.z_dim != dim || !a.hidden.is_empty() || a.likelihood != (Likelihood::Gaussian { sd: 1.0 })
    {
        bail!("these parameters are not a toy model ({a:?})");
    }
    let (enc, dec) = (&p.layout.encoder[0], &p.layout.decoder[0]);
    let v = |i: usize| p.values[i] as f64;
    let mu: Vec<f64> = (0..dim).map(|i| v(dec.b + i)).collect();
    for i in 0..dim {
        for j in 0..dim {
            let want = if i == j { 1.0 } else { 0.0 };
            if v(dec.w + i * dim + j) != want || v(enc.w + (dim + i) * dim + j) != 0.0 {
                bail!("the toy's frozen weights have moved (entry {i}, {j})");
            }
        }
        if (v(enc.b + dim + i) - toy_log_sd()).abs() > 1e-6 {
            bail!("the toy's frozen encoder log sd has moved (entry {i})");
        }
    }
    let am: Vec<f64> = (0..dim * dim).map(|i| v(enc.w + i)).collect();
    let b: Vec<f64> = (0..dim).map(|i| v(enc.b + i) + mu[i]).collect();
    Ok(Toy::from_parts(mu, am, b, data))
}

/// Backend parameters of a PPCA model (see the module docs for the mapping).
pub fn ppca_to_params(m: &Ppca) -> Params {
    let (dx, dz) = (m.x_dim(), m.z_dim());
    let layout = ppca_layout(dx, dz, m.noise_sd());
    let mut v = vec![0.0f32; layout.len];
    let (enc, dec) = (&layout.encoder[0], &layout.decoder[0]);
    let (c, e, log_sd) = m.encoder_params();
    for (i, &w) in m.w().iter().enumerate() {
        v[dec.w + i] = w as f32;
    }
    for (i, &b) in m.b().iter().enumerate() {
        v[dec.b + i] = b as f32;
    }
    for (i, &ci) in c.iter().enumerate() {
        v[enc.w + i] = ci as f32;
    }
    for j in 0..dz {
        v[enc.b + j] = e[j] as f32;
        v[enc.b + dz + j] = log_sd[j] as f32;
    }
    Params { layout, values: v }
}

/// The PPCA model that backend parameters `p` stand for, with dataset `data`.
pub fn params_to_ppca(p: &Params, data: Vec<Vec<f64>>) -> Result<Ppca> {
    let a = &p.layout.arch;
    let Likelihood::Gaussian { sd } = a.likelihood else {
        bail!("these parameters are not a PPCA model (Bernoulli likelihood)");
    };
    if !a.hidden.is_empty() {
        bail!(
            "these parameters are not a PPCA model (hidden layers {:?})",
            a.hidden
        );
    }
    let (dx, dz) = (a.x_dim, a.z_dim);
    let (enc, dec) = (&p.layout.encoder[0], &p.layout.decoder[0]);
    let get =
        |r: std::ops::Range<usize>| -> Vec<f64> { p.values[r].iter().map(|&x| x as f64).collect() };
    if p.values[enc.w + dz * dx..enc.w + 2 * dz * dx]
        .iter()
        .any(|&x| x != 0.0)
    {
        bail!("PPCA's frozen encoder rows (log sd's dependence on x) have moved");
    }
    Ok(Ppca::from_parts(
        sd,
        get(dec.w..dec.w + dx * dz),
        get(dec.b..dec.b + dx),
        get(enc.w..enc.w + dz * dx),
        get(enc.b..enc.b + dz),
        get(enc.b + dz..enc.b + 2 * dz),
        data,
    ))
}

/// The backend layout of `--model hgauss` (see the module docs): linear encoder and
/// encoder2 whose log-sd rows do not depend on their input, decoder2 whose log-sd rows are
/// fixed at 0 (p(z1 | z2) has unit variance), and a linear Gaussian decoder. The frozen
/// ranges keep those entries at 0.
pub fn hgauss_layout(dx: usize, d1: usize, d2: usize, s: f64) -> Layout {
    let mut layout = Layout::new(&Arch {
        x_dim: dx,
        hidden: Vec::new(),
        z_dim: d1,
        likelihood: Likelihood::Gaussian { sd: s },
        top: Some(TopLayer {
            hidden: Vec::new(),
            z_dim: d2,
        }),
        cond: None,
    });
    let (enc, enc2, dec2) = (&layout.encoder[0], &layout.encoder2[0], &layout.decoder2[0]);
    layout.frozen = vec![
        enc.w + d1 * dx..enc.w + 2 * d1 * dx,
        enc2.w + d2 * d1..enc2.w + 2 * d2 * d1,
        dec2.w + d1 * d2..dec2.w + 2 * d1 * d2,
        dec2.b + d1..dec2.b + 2 * d1,
    ];
    layout
}

/// The model that backend parameters `p` stand for, with dataset `data`: A and a from
/// decoder2's mean rows, B and b from the decoder. Fails when `p` is not this layout or its
/// frozen entries moved.
pub fn params_to_hgauss(p: &Params, data: Vec<Vec<f64>>) -> Result<HGauss> {
    let arch = &p.layout.arch;
    let (Likelihood::Gaussian { sd }, Some(top)) = (arch.likelihood, &arch.top) else {
        bail!("these parameters are not a --model hgauss model ({arch:?})");
    };
    let (dx, d1, d2) = (arch.x_dim, arch.z_dim, top.z_dim);
    // A loaded checkpoint's layout has no frozen ranges: compare the architecture only.
    let want = hgauss_layout(dx, d1, d2, sd);
    if want.arch != *arch {
        bail!("these parameters are not a --model hgauss layout ({arch:?})");
    }
    if want
        .frozen
        .iter()
        .any(|r| p.values[r.clone()].iter().any(|&v| v != 0.0))
    {
        bail!("--model hgauss's frozen entries (log-sd rows) have moved");
    }
    let (dec2, dec) = (&p.layout.decoder2[0], &p.layout.decoder[0]);
    let get = |r: std::ops::Range<usize>| p.values[r].iter().map(|&v| v as f64).collect();
    Ok(HGauss::from_parts(
        sd,
        get(dec2.w..dec2.w + d1 * d2),
        get(dec2.b..dec2.b + d1),
        get(dec.w..dec.w + dx * d1),
        get(dec.b..dec.b + dx),
        data,
    ))
}

/// Backend parameters of `m`'s theta, with both encoders at q = N(0, I) (zero weights and
/// biases).
pub fn hgauss_to_params(m: &HGauss) -> Params {
    let (d1, d2) = m.z_dims();
    let layout = hgauss_layout(m.x_dim(), d1, d2, m.noise_sd());
    let mut v = vec![0.0f32; layout.len];
    let (dec2, dec) = (&layout.decoder2[0], &layout.decoder[0]);
    let (am, a, bm, b) = m.parts();
    for (dst, src) in [(dec2.w, am), (dec2.b, a), (dec.w, bm), (dec.b, b)] {
        for (i, &x) in src.iter().enumerate() {
            v[dst + i] = x as f32;
        }
    }
    Params { layout, values: v }
}

/// [`hgauss_to_params`] with both encoders at [`HGauss::posterior_encoders`].
pub fn hgauss_to_params_at_posterior(m: &HGauss, sd_inflation: f64) -> Params {
    let mut p = hgauss_to_params(m);
    let (d1, d2) = m.z_dims();
    let (c_mat, c, ls1, e_mat, e, ls2) = m.posterior_encoders(sd_inflation);
    let (enc, enc2) = (p.layout.encoder[0].clone(), p.layout.encoder2[0].clone());
    for (dst, src) in [
        (enc.w, &c_mat),
        (enc.b, &c),
        (enc.b + d1, &ls1),
        (enc2.w, &e_mat),
        (enc2.b, &e),
        (enc2.b + d2, &ls2),
    ] {
        for (i, &v) in src.iter().enumerate() {
            p.values[dst + i] = v as f32;
        }
    }
    p
}

/// An exact model as a training target: its generated dataset and its closed forms.
#[derive(Clone, Debug)]
pub enum ExactTraining {
    Toy(Toy),
    Ppca(Ppca),
    Hgauss(HGauss),
}

impl ExactTraining {
    /// The model `model` with the dataset its deterministic constructor draws from `seed`
    /// (None for the VAE).
    pub fn new(model: ModelChoice, seed: u64) -> Option<ExactTraining> {
        match model {
            ModelChoice::Vae | ModelChoice::Hvae | ModelChoice::Cvae => None,
            ModelChoice::Toy => Some(ExactTraining::Toy(Toy::new(seed))),
            ModelChoice::Ppca => Some(ExactTraining::Ppca(Ppca::new(seed))),
            ModelChoice::Hgauss => Some(ExactTraining::Hgauss(HGauss::new(seed))),
        }
    }

    /// The generated datapoints.
    fn data(&self) -> &[Vec<f64>] {
        match self {
            ExactTraining::Toy(m) => m.data(),
            ExactTraining::Ppca(m) => m.data(),
            ExactTraining::Hgauss(m) => m.data(),
        }
    }

    pub fn choice(&self) -> ModelChoice {
        match self {
            ExactTraining::Toy(_) => ModelChoice::Toy,
            ExactTraining::Ppca(_) => ModelChoice::Ppca,
            ExactTraining::Hgauss(_) => ModelChoice::Hgauss,
        }
    }

    /// The backend layout, frozen ranges included.
    pub fn layout(&self) -> Layout {
        match self {
            ExactTraining::Toy(m) => toy_layout(m.x_dim()),
            ExactTraining::Ppca(m) => ppca_layout(m.x_dim(), m.z_dim(), m.noise_sd()),
            ExactTraining::Hgauss(m) => {
                let (d1, d2) = m.z_dims();
                hgauss_layout(m.x_dim(), d1, d2, m.noise_sd())
            }
        }
    }

    pub fn count(&self) -> usize {
        self.data().len()
    }

    pub fn dim(&self) -> usize {
        self.data().first().map_or(0, Vec::len)
    }

    /// The generated data [count, dim] in f32, continuous (not binarized).
    pub fn data_f32(&self) -> Vec<f32> {
        self.data().iter().flatten().map(|&v| v as f32).collect()
    }

    /// Starting parameters, deterministic in `seed` and away from the optimum so training
    /// visibly moves. Toy: mu = 0, A = 0, b - mu = 0. PPCA: W and C Glorot-uniform scaled
    /// by 0.1 (Philox Init stream), zero biases, log_sd = 0.
    pub fn initial_params(&self, seed: u64) -> Params {
        let layout = self.layout();
        let mut values = match self {
            ExactTraining::Toy(m) => {
                let dim = m.x_dim();
                let zero = Toy::from_parts(
                    vec![0.0; dim],
                    vec![0.0; dim * dim],
                    vec![0.0; dim],
                    Vec::new(),
                );
                toy_to_params(&zero).values
            }
            ExactTraining::Ppca(_) | ExactTraining::Hgauss(_) => {
                let mut v = Params::init(&layout.arch, seed, None).values;
                v.iter_mut().for_each(|x| *x *= 0.1);
                v
            }
        };
        // PPCA's frozen rows start (and stay) at 0; the toy's are set by toy_to_params.
        if !matches!(self, ExactTraining::Toy(_)) {
            for r in &layout.frozen {
                values[r.clone()].fill(0.0);
            }
        }
        Params { layout, values }
    }

    /// The exact mean log p(x) over the model's data under the decoder in `params`.
    pub fn mean_exact_log_px(&self, params: &Params) -> Result<f64> {
        let data = self.data().to_vec();
        let n = data.len() as f64;
        let lp = |m: &dyn ExactModel| data.iter().map(|x| m.exact_log_px(x)).sum::<f64>() / n;
        Ok(match self {
            ExactTraining::Toy(_) => lp(&params_to_toy(params, data.clone())?),
            ExactTraining::Ppca(_) => lp(&params_to_ppca(params, data.clone())?),
            ExactTraining::Hgauss(_) => {
                let m = params_to_hgauss(params, data.clone())?;
                data.iter().map(|x| m.exact_log_px(x)).sum::<f64>() / n
            }
        })
    }

    /// The maximum-likelihood optimum's mean log p(x), where known in closed form: the toy's
    /// mu* = data mean. None for PPCA.
    pub fn optimum_log_px(&self) -> Option<f64> {
        match self {
            ExactTraining::Toy(m) => {
                let mut opt = m.clone();
                opt.set_theta(&self.data_mean());
                let data = m.data();
                Some(data.iter().map(|x| opt.exact_log_px(x)).sum::<f64>() / data.len() as f64)
            }
            ExactTraining::Ppca(_) | ExactTraining::Hgauss(_) => None,
        }
    }

    /// The mean of the data (the toy's mu*).
    pub fn data_mean(&self) -> Vec<f64> {
        let data = self.data();
        let mut mean = vec![0.0; self.dim()];
        for x in data {
            for (m, v) in mean.iter_mut().zip(x) {
                *m += v / data.len() as f64;
            }
        }
        mean
    }
}

/// The exact model a checkpoint's metadata names (None for a VAE checkpoint or one written
/// before `--model` existed), rebuilt with its data from the stored seed.
pub fn from_checkpoint_metadata(
    meta: &std::collections::HashMap<String, String>,
) -> Result<Option<ExactTraining>> {
    let Some(json) = meta.get("uvae") else {
        return Ok(None);
    };
    let v: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| anyhow::anyhow!("checkpoint metadata is not JSON: {e}"))?;
    let model = match v.get("model").and_then(|m| m.as_str()) {
        None | Some("vae") | Some("hvae") | Some("cvae") => return Ok(None),
        Some("toy") => ModelChoice::Toy,
        Some("ppca") => ModelChoice::Ppca,
        Some("hgauss") => ModelChoice::Hgauss,
        Some(other) => bail!("checkpoint names an unknown model {other:?}"),
    };
    let Some(seed) = v.get("seed").and_then(|s| s.as_u64()) else {
        bail!(
            "checkpoint of --model {} lacks its seed, so its data cannot be regenerated",
            model.name()
        );
    };
    Ok(ExactTraining::new(model, seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toy_round_trips_through_params() {
        let toy = Toy::with_perturbation(3, 0.05);
        let p = toy_to_params(&toy);
        assert_eq!(p.layout.frozen.len(), 3);
        let back = params_to_toy(&p, toy.data().to_vec()).unwrap();
        for (got, want) in [
            (back.mu(), toy.mu()),
            (back.a(), toy.a()),
            (back.b(), toy.b()),
        ] {
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < 1e-5 * (1.0 + w.abs()), "{g} vs {w}");
            }
        }
        // The encoder mean is A x + b - mu in the centred parameterisation.
        let x = &toy.data()[0];
        let enc = &p.layout.encoder[0];
        let mean0: f64 = (0..Toy::DIM)
            .map(|j| p.values[enc.w + j] as f64 * x[j])
            .sum::<f64>()
            + p.values[enc.b] as f64;
        let (m, sd) = toy.encoder(x);
        assert!((mean0 - (m[0] - toy.mu()[0])).abs() < 1e-4);
        assert!((sd[0] - (p.values[enc.b + Toy::DIM] as f64).exp()).abs() < 1e-6);
        // A moved frozen entry is refused.
        let mut bad = p.clone();
        bad.values[p.layout.decoder[0].w + 1] = 0.5;
        assert!(params_to_toy(&bad, Vec::new()).is_err());
    }

    #[test]
    fn ppca_round_trips_through_params() {
        let m = Ppca::with_config(
            4,
            &PpcaConfig {
                perturb_sd: 0.3,
                ..PpcaConfig::default()
            },
        );
        let p = ppca_to_params(&m);
        let back = params_to_ppca(&p, m.data().to_vec()).unwrap();
        for (g, w) in back.theta().iter().zip(m.theta()) {
            assert!((g - w).abs() < 1e-5 * (1.0 + w.abs()), "{g} vs {w}");
        }
        let (c0, e0, l0) = m.encoder_params();
        let (c1, e1, l1) = back.encoder_params();
        for (g, w) in c1
            .iter()
            .chain(e1)
            .chain(l1)
            .zip(c0.iter().chain(e0).chain(l0))
        {
            assert!((g - w).abs() < 1e-5 * (1.0 + w.abs()), "{g} vs {w}");
        }
        assert!((back.noise_sd() - m.noise_sd()).abs() < 1e-12);
        let x = &m.data()[2];
        assert!((back.exact_log_px(x) - m.exact_log_px(x)).abs() < 1e-4);
    }

    #[test]
    fn initial_params_are_deterministic_and_off_the_optimum() {
        for model in [ModelChoice::Toy, ModelChoice::Ppca, ModelChoice::Hgauss] {
            let ex = ExactTraining::new(model, 7).unwrap();
            let p = ex.initial_params(1);
            assert_eq!(p.values, ex.initial_params(1).values);
            assert_eq!(p.layout, ex.layout());
            let lp = ex.mean_exact_log_px(&p).unwrap();
            let truth = ex.mean_exact_log_px(&match &ex {
                ExactTraining::Toy(t) => toy_to_params(t),
                ExactTraining::Ppca(m) => ppca_to_params(m),
                ExactTraining::Hgauss(m) => hgauss_to_params(m),
            });
            assert!(lp < truth.unwrap() - 0.5, "{model:?}: {lp}");
        }
        let ex = ExactTraining::new(ModelChoice::Ppca, 7).unwrap();
        assert_ne!(ex.initial_params(1).values, ex.initial_params(2).values);
        let toy = ExactTraining::new(ModelChoice::Toy, 7).unwrap();
        let opt = toy.optimum_log_px().unwrap();
        assert!(opt >= toy.mean_exact_log_px(&toy.initial_params(0)).unwrap());
    }

    #[test]
    fn backend_mapping_round_trips_and_checks_frozen_entries() {
        let m = HGauss::new(2);
        let mut p = hgauss_to_params(&m);
        let back = params_to_hgauss(&p, m.data().to_vec()).unwrap();
        for (g, w) in back.theta().iter().zip(m.theta()) {
            assert!((g - w).abs() < 1e-6 * (1.0 + w.abs()), "{g} vs {w}");
        }
        let x = &m.data()[1];
        assert!((back.exact_log_px(x) - m.exact_log_px(x)).abs() < 1e-4);
        let frozen = p.layout.frozen[3].start;
        p.values[frozen] = 0.5;
        let e = params_to_hgauss(&p, Vec::new()).unwrap_err().to_string();
        assert!(e.contains("frozen"), "{e}");
    }
}
