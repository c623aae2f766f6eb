//! The VAE's parameters: one flat f32 vector with a named layout that follows PyTorch's
//! `nn.Sequential` of `nn.Linear` (`encoder.0.weight` is [out, in], row-major), so a
//! checkpoint loads into the peer's PyTorch model unchanged.

pub mod active_units;
mod arch_flags;
pub mod checkpoint;
mod choice;
pub mod exact_training;
pub mod reference;

pub use arch_flags::{apply_split_row, resolve_arch, validate_top, MAX_LAYER};
pub use choice::ModelChoice;

use crate::rng::{self, Stream};
use serde::{Deserialize, Serialize};

/// The observation model p(x | z) on the decoder's output m.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Likelihood {
    /// Binary x, m the logits: sum_d x_d m_d - softplus(m_d) (the MNIST VAE).
    #[default]
    Bernoulli,
    /// Continuous x, m the mean, fixed noise sd s (not a parameter):
    /// sum_d -0.5 ln(2 pi s^2) - (x_d - m_d)^2 / (2 s^2) (the exact models).
    Gaussian { sd: f64 },
}

impl Likelihood {
    /// 1 / s^2 of a Gaussian (0 for Bernoulli).
    pub fn inv_var(&self) -> f64 {
        match self {
            Likelihood::Bernoulli => 0.0,
            Likelihood::Gaussian { sd } => 1.0 / (sd * sd),
        }
    }
    /// The per-dimension constant -0.5 ln(2 pi s^2) of a Gaussian (0 for Bernoulli).
    pub fn log_norm(&self) -> f64 {
        match self {
            Likelihood::Bernoulli => 0.0,
            Likelihood::Gaussian { sd } => -0.5 * (std::f64::consts::TAU * sd * sd).ln(),
        }
    }
    /// log p(x_d | m_d) in f64 (the reference forward pass and tests).
    pub fn log_term(&self, x: f64, m: f64) -> f64 {
        match self {
            Likelihood::Bernoulli => x * m - (m.max(0.0) + (-m.abs()).exp().ln_1p()),
            Likelihood::Gaussian { .. } => {
                self.log_norm() - 0.5 * (x - m) * (x - m) * self.inv_var()
            }
        }
    }
}

/// Layer sizes. Encoder x -> hidden... -> 2 * latent (mu, log sigma); decoder
/// latent -> reversed hidden... -> x (Bernoulli logits or Gaussian means). Hidden layers use
/// tanh; with no hidden layers both are linear (the exact models, [`exact_training`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Arch {
    pub x_dim: usize,
    pub hidden: Vec<usize>,
    pub z_dim: usize,
    /// Absent in configurations written before it existed: Bernoulli.
    #[serde(default)]
    pub likelihood: Likelihood,
    /// A second stochastic layer z2 above z (`--model hvae`); None: the one-layer VAE (and
    /// configurations written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top: Option<TopLayer>,
    /// `--model cvae`: the image's first `c_dim` pixels (its top rows) are the context c and
    /// the rest are modelled given it. None: an unconditional model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cond: Option<Conditional>,
}

/// The conditional model of the DReG paper's structured prediction (§6.3):
/// p(x, z | c) = p(x | z, c) p(z | c) with c the first `c_dim` pixels of each image and x the
/// rest. The prior p(z | c) is c -> hidden... -> 2 * z_dim (mean, log sd), the decoder
/// p(x | z, c) reads [z, c], and the encoder q(z | x, c) reads the whole image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conditional {
    /// Image rows in the context (`--split-row`); None: half the rows, rounded down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_row: Option<usize>,
    /// Context pixels: the split row times the image width. Like `x_dim`, a run sets it from
    /// its data when it loads them (a configuration holds 28 x 28 MNIST's).
    pub c_dim: usize,
}

impl Conditional {
    /// The context of `split_row` (None: the middle, rounded down) rows of `rows` x `cols`
    /// images; an error naming `--split-row` unless it leaves a row on each side.
    pub fn for_images(
        split_row: Option<usize>,
        rows: usize,
        cols: usize,
    ) -> Result<Conditional, crate::error::ConfigError> {
        let row = split_row.unwrap_or(rows / 2);
        if row == 0 || row >= rows {
            return Err(crate::error::ConfigError::range(
                "--split-row",
                row.to_string(),
                format!(
                    "the context must be 1 to {} of the images' {rows} rows, leaving rows to predict",
                    rows.saturating_sub(1)
                ),
            ));
        }
        Ok(Conditional {
            split_row,
            c_dim: row * cols,
        })
    }
}

/// The second stochastic layer of Burda et al.'s two-layer VAE: q(z2 | z1) is
/// z1 -> hidden... -> 2 * z_dim (mu, log sigma) and p(z1 | z2) mirrors it,
/// z2 -> reversed hidden... -> 2 * z1_dim (a Gaussian over z1); p(z2) = N(0, I).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopLayer {
    pub hidden: Vec<usize>,
    pub z_dim: usize,
}

impl Arch {
    /// Burda et al.'s one-stochastic-layer MNIST model: 784-200-200-50.
    pub fn burda_mnist() -> Arch {
        Arch {
            x_dim: 784,
            hidden: vec![200, 200],
            z_dim: 50,
            likelihood: Likelihood::Bernoulli,
            top: None,
            cond: None,
        }
    }
    /// Burda et al.'s two-stochastic-layer MNIST model: 784-200-200-100 (z1) and
    /// 100-100-100-50 (z2).
    pub fn burda_mnist_two_layer() -> Arch {
        Arch {
            x_dim: 784,
            hidden: vec![200, 200],
            z_dim: 100,
            likelihood: Likelihood::Bernoulli,
            top: Some(TopLayer {
                hidden: vec![100, 100],
                z_dim: 50,
            }),
            cond: None,
        }
    }
    /// Normals drawn per sample: z_dim, plus the top layer's (z1's first, then z2's).
    pub fn noise_dim(&self) -> usize {
        self.z_dim + self.top.as_ref().map_or(0, |t| t.z_dim)
    }
    /// q(z2 | z1): z1 -> hidden... -> 2 * z2 (empty without a top layer).
    pub fn encoder2_dims(&self) -> Vec<usize> {
        self.top.as_ref().map_or_else(Vec::new, |t| {
            let mut d = vec![self.z_dim];
            d.extend(&t.hidden);
            d.push(2 * t.z_dim);
            d
        })
    }
    /// p(z1 | z2): z2 -> reversed hidden... -> 2 * z1 (empty without a top layer).
    pub fn decoder2_dims(&self) -> Vec<usize> {
        self.top.as_ref().map_or_else(Vec::new, |t| {
            let mut d = vec![t.z_dim];
            d.extend(t.hidden.iter().rev());
            d.push(2 * self.z_dim);
            d
        })
    }
    /// Context pixels (0 for an unconditional model).
    pub fn c_dim(&self) -> usize {
        self.cond.map_or(0, |c| c.c_dim)
    }
    /// Pixels the decoder models: all of them, or those after the context.
    pub fn out_dim(&self) -> usize {
        self.x_dim - self.c_dim()
    }
    /// p(z | c): c -> hidden... -> 2 * z (empty for an unconditional model).
    pub fn prior_dims(&self) -> Vec<usize> {
        self.cond.map_or_else(Vec::new, |c| {
            let mut d = vec![c.c_dim];
            d.extend(&self.hidden);
            d.push(2 * self.z_dim);
            d
        })
    }
    pub fn encoder_dims(&self) -> Vec<usize> {
        let mut d = vec![self.x_dim];
        d.extend(&self.hidden);
        d.push(2 * self.z_dim);
        d
    }
    pub fn decoder_dims(&self) -> Vec<usize> {
        let mut d = vec![self.z_dim + self.c_dim()];
        d.extend(self.hidden.iter().rev());
        d.push(self.out_dim());
        d
    }
}

/// One `nn.Linear`: weight [out, inp] at `w`, bias [out] at `b` (offsets into the flat vector).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Linear {
    pub name: String,
    pub inp: usize,
    pub out: usize,
    pub w: usize,
    pub b: usize,
}

/// Where every tensor lives in the flat parameter vector. The encoder comes first, so
/// `0..encoder_len` is the encoder and `encoder_len..len` the decoder. A two-layer model
/// orders them encoder (x -> z1), encoder2 (z1 -> z2) | decoder2 (z2 -> z1), decoder
/// (z1 -> x): both q factors form the encoder group, both p factors the decoder group. A
/// conditional model orders them encoder | prior (c -> z), decoder ([z, c] -> x).
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    pub arch: Arch,
    pub encoder: Vec<Linear>,
    pub decoder: Vec<Linear>,
    /// q(z2 | z1) and p(z1 | z2); empty for the one-layer model.
    pub encoder2: Vec<Linear>,
    pub decoder2: Vec<Linear>,
    /// p(z | c) of a conditional model; empty otherwise.
    pub prior: Vec<Linear>,
    pub encoder_len: usize,
    pub len: usize,
    /// Flat ranges whose gradient the backends zero right after backward (before norms,
    /// clipping and Adam), so they keep their values: the exact models' fixed entries
    /// ([`exact_training`]). Empty for the VAE.
    pub frozen: Vec<std::ops::Range<usize>>,
}

fn stack(prefix: &str, dims: &[usize], offset: &mut usize) -> Vec<Linear> {
    dims.windows(2)
        .enumerate()
        .map(|(i, io)| {
            let (inp, out) = (io[0], io[1]);
            let w = *offset;
            let b = w + inp * out;
            *offset = b + out;
            // nn.Sequential numbering: Linear, Tanh, Linear, ... so Linears sit at even indices.
            Linear {
                name: format!("{prefix}.{}", 2 * i),
                inp,
                out,
                w,
                b,
            }
        })
        .collect()
}

impl Layout {
    pub fn new(arch: &Arch) -> Layout {
        let mut offset = 0;
        let encoder = stack("encoder", &arch.encoder_dims(), &mut offset);
        let encoder2 = stack("encoder2", &arch.encoder2_dims(), &mut offset);
        let encoder_len = offset;
        let prior = stack("prior", &arch.prior_dims(), &mut offset);
        let decoder2 = stack("decoder2", &arch.decoder2_dims(), &mut offset);
        let decoder = stack("decoder", &arch.decoder_dims(), &mut offset);
        Layout {
            arch: arch.clone(),
            encoder,
            decoder,
            encoder2,
            decoder2,
            prior,
            encoder_len,
            len: offset,
            frozen: Vec::new(),
        }
    }
    pub fn layers(&self) -> impl Iterator<Item = &Linear> {
        self.encoder
            .iter()
            .chain(&self.encoder2)
            .chain(&self.prior)
            .chain(&self.decoder2)
            .chain(&self.decoder)
    }
    /// (name, shape, offset, len) of every tensor, in checkpoint order.
    pub fn tensors(&self) -> Vec<(String, Vec<usize>, usize, usize)> {
        let mut v = Vec::new();
        for l in self.layers() {
            v.push((
                format!("{}.weight", l.name),
                vec![l.out, l.inp],
                l.w,
                l.out * l.inp,
            ));
            v.push((format!("{}.bias", l.name), vec![l.out], l.b, l.out));
        }
        v
    }
}

/// Parameters: the flat vector and its layout.
#[derive(Clone, Debug)]
pub struct Params {
    pub layout: Layout,
    pub values: Vec<f32>,
}

/// Clip for the decoder output bias so the logit stays finite on pixels that are always 0.
pub const MEAN_CLIP: f32 = 1e-3;

impl Params {
    /// Glorot-uniform weights (Glorot & Bengio 2010) drawn from the Philox Init stream, zero
    /// biases, and the decoder output bias set to the logit of the clipped training mean
    /// (Burda et al.), so training starts at the marginal pixel distribution. `train_mean` is
    /// over every pixel; a conditional model takes the modelled ones (after the context).
    pub fn init(arch: &Arch, seed: u64, train_mean: Option<&[f32]>) -> Params {
        let layout = Layout::new(arch);
        let mut values = vec![0.0f32; layout.len];
        for (t, l) in layout.layers().enumerate() {
            let limit = (6.0 / (l.inp + l.out) as f32).sqrt();
            let w = &mut values[l.w..l.w + l.inp * l.out];
            rng::fill_uniforms(seed, Stream::Init, 0, t as u32, w);
            for v in w.iter_mut() {
                *v = (2.0 * *v - 1.0) * limit;
            }
        }
        if let Some(mean) = train_mean {
            let out = layout.decoder.last().expect("decoder has layers");
            let mean = &mean[arch.c_dim().min(mean.len())..];
            assert_eq!(mean.len(), out.out, "training mean has the wrong dimension");
            for (b, &m) in values[out.b..out.b + out.out].iter_mut().zip(mean) {
                let p = m.clamp(MEAN_CLIP, 1.0 - MEAN_CLIP);
                *b = (p / (1.0 - p)).ln();
            }
        }
        Params { layout, values }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_follows_pytorch_names_and_shapes() {
        let l = Layout::new(&Arch::burda_mnist());
        let t = l.tensors();
        assert_eq!(t[0].0, "encoder.0.weight");
        assert_eq!(t[0].1, vec![200, 784]);
        assert_eq!(t[5].0, "encoder.4.bias");
        assert_eq!(t[5].1, vec![100]);
        assert_eq!(t[6].0, "decoder.0.weight");
        assert_eq!(t[6].1, vec![200, 50]);
        assert_eq!(t[11].1, vec![784]);
        let total: usize = t.iter().map(|x| x.3).sum();
        assert_eq!(total, l.len);
        assert_eq!(
            l.encoder_len,
            784 * 200 + 200 + 200 * 200 + 200 + 200 * 100 + 100
        );
    }

    #[test]
    fn init_is_glorot_and_bias_is_logit_of_mean() {
        let arch = Arch {
            x_dim: 6,
            hidden: vec![5],
            z_dim: 2,
            likelihood: Likelihood::Bernoulli,
            top: None,
            cond: None,
        };
        let mean = [0.0, 0.5, 1.0, 0.25, 0.1, 0.9];
        let p = Params::init(&arch, 3, Some(&mean));
        let l0 = &p.layout.encoder[0];
        let lim = (6.0f32 / 11.0).sqrt();
        assert!(p.values[l0.w..l0.w + 30].iter().all(|v| v.abs() <= lim));
        assert!(p.values[l0.w..l0.w + 30]
            .iter()
            .any(|v| v.abs() > lim / 2.0));
        let out = p.layout.decoder.last().unwrap();
        let b = &p.values[out.b..out.b + 6];
        assert!((b[1]).abs() < 1e-6);
        assert!((b[0] - (MEAN_CLIP / (1.0 - MEAN_CLIP)).ln()).abs() < 1e-4);
        assert!((b[3] - (1.0f32 / 3.0).ln()).abs() < 1e-5);
        assert_eq!(Params::init(&arch, 3, Some(&mean)).values, p.values);
        assert_ne!(Params::init(&arch, 4, Some(&mean)).values, p.values);
    }

    #[test]
    fn gaussian_likelihood_terms() {
        let g = Likelihood::Gaussian { sd: 0.5 };
        assert!((g.inv_var() - 4.0).abs() < 1e-12);
        let want = -0.5 * (std::f64::consts::TAU * 0.25).ln() - 0.5 * 0.09 * 4.0;
        assert!((g.log_term(1.0, 0.7) - want).abs() < 1e-12);
        let b = Likelihood::Bernoulli;
        assert!((b.log_term(1.0, 0.0) + std::f64::consts::LN_2).abs() < 1e-12);
        // Configurations written before the field existed read as Bernoulli.
        let a: Arch = serde_json::from_str(r#"{"x_dim":3,"hidden":[2],"z_dim":1}"#).unwrap();
        assert_eq!(a.likelihood, Likelihood::Bernoulli);
        assert_eq!(a.top, None);
    }

    #[test]
    fn conditional_layout_orders_encoder_prior_decoder() {
        let cond = Conditional::for_images(None, 28, 28).unwrap();
        assert_eq!(cond.c_dim, 14 * 28, "the middle row of 28");
        assert_eq!(Conditional::for_images(None, 5, 3).unwrap().c_dim, 2 * 3);
        for bad in [Some(0), Some(28)] {
            let e = Conditional::for_images(bad, 28, 28).unwrap_err();
            assert_eq!(e.flag(), "--split-row");
        }
        let arch = Arch {
            cond: Some(cond),
            ..Arch::burda_mnist()
        };
        let l = Layout::new(&arch);
        let t = l.tensors();
        let names: Vec<&str> = t.iter().map(|t| t.0.as_str()).collect();
        assert_eq!(
            names[4..8],
            [
                "encoder.4.weight",
                "encoder.4.bias",
                "prior.0.weight",
                "prior.0.bias"
            ]
        );
        assert_eq!(t[6].1, vec![200, 392]);
        assert_eq!(t[11].1, vec![100], "the prior's (mean, log sd) head");
        assert_eq!(t[12].0, "decoder.0.weight");
        assert_eq!(t[12].1, vec![200, 50 + 392], "the decoder reads [z, c]");
        assert_eq!(t[17].1, vec![392], "the bottom 14 rows' logits");
        // The prior is a p factor: it sits in the decoder group, after encoder_len.
        assert_eq!(l.encoder_len, l.prior[0].w);
        assert_eq!(arch.noise_dim(), 50);
        // Unconditional configurations carry no `cond` key.
        let one = serde_json::to_string(&Arch::burda_mnist()).unwrap();
        assert!(!one.contains("cond"), "{one}");
    }

    #[test]
    fn two_layer_layout_orders_q_then_p_with_pytorch_names() {
        let l = Layout::new(&Arch::burda_mnist_two_layer());
        let names: Vec<String> = l.tensors().into_iter().map(|t| t.0).collect();
        let want: Vec<String> = ["encoder", "encoder2", "decoder2", "decoder"]
            .iter()
            .flat_map(|p| {
                [0, 2, 4]
                    .into_iter()
                    .flat_map(move |i| [format!("{p}.{i}.weight"), format!("{p}.{i}.bias")])
            })
            .collect();
        assert_eq!(names, want);
        let enc2 = &l.encoder2;
        assert_eq!((enc2[0].inp, enc2[2].out), (100, 100));
        let dec2 = &l.decoder2;
        assert_eq!((dec2[0].inp, dec2[2].out), (50, 200));
        // The encoder group ends where decoder2 begins.
        assert_eq!(l.encoder_len, dec2[0].w);
        assert_eq!(l.arch.noise_dim(), 150);
        // One-layer configurations carry no `top` key, so their files read the same with or
        // without two-layer support.
        let one = serde_json::to_string(&Arch::burda_mnist()).unwrap();
        assert!(!one.contains("top"), "{one}");
    }
}
