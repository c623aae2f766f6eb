//! Adam (Kingma & Ba 2015) with an AMSGrad option (Reddi et al. 2018), per-group gradient
//! clipping, and learning-rate schedules. Works on flat slices so a GPU kernel can mirror it.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// The same learning rate throughout.
    Constant,
    /// Burda et al. (2016): stage i = 0..=7 runs 3^i epochs at lr * 10^(-i/7).
    Burda,
    /// Shi & Cornish (2021): lr * max(1 - 0.9 e / 3280, 0.1) at 0-based epoch e, a linear
    /// decay to a tenth over Burda's 3,280 epochs, then flat.
    Linear,
}

impl Schedule {
    /// Learning rate for 0-based `epoch`.
    pub fn lr(self, base: f64, epoch: usize) -> f64 {
        match self {
            Schedule::Constant => base,
            Schedule::Burda => base * 10f64.powf(-(burda_stage(epoch) as f64) / 7.0),
            Schedule::Linear => {
                base * (1.0 - 0.9 * epoch as f64 / LINEAR_DECAY_EPOCHS as f64).max(0.1)
            }
        }
    }
}

/// The epochs over which [`Schedule::Linear`] decays (Burda's 3^0 + ... + 3^7).
pub const LINEAR_DECAY_EPOCHS: usize = 3280;

/// The Burda stage of a 0-based epoch: stages last 1, 3, 9, ... epochs.
pub fn burda_stage(epoch: usize) -> usize {
    let mut end = 0;
    for i in 0.. {
        end += 3usize.pow(i as u32);
        if epoch < end {
            return i;
        }
    }
    unreachable!()
}

/// Total epochs of Burda's schedule with `stages` stages (8 stages = 3280 epochs).
pub fn burda_epochs(stages: usize) -> usize {
    (0..stages).map(|i| 3usize.pow(i as u32)).sum()
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub amsgrad: bool,
    /// Clip the encoder's (phi) gradient to this L2 norm; None: no clipping.
    pub clip_encoder: Option<f64>,
    /// Clip the decoder's (theta) gradient to this L2 norm.
    pub clip_decoder: Option<f64>,
}

impl Default for AdamConfig {
    fn default() -> Self {
        // Burda et al. use eps = 1e-4; PyTorch's default 1e-8 matches the peer benchmark.
        AdamConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            amsgrad: false,
            clip_encoder: None,
            clip_decoder: None,
        }
    }
}

/// Adam's moments for a flat parameter vector (v_max is kept at full length even without
/// AMSGrad, so every slice can be chunked the same way).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AdamState {
    pub m: Vec<f32>,
    pub v: Vec<f32>,
    pub v_max: Vec<f32>,
    pub t: u64,
}

impl AdamState {
    pub fn new(len: usize) -> Self {
        AdamState {
            m: vec![0.0; len],
            v: vec![0.0; len],
            v_max: vec![0.0; len],
            t: 0,
        }
    }

    /// Advances the step count and returns the scalars of this step's update.
    pub fn begin_step(&mut self, cfg: &AdamConfig, lr: f64) -> AdamStep {
        self.t += 1;
        let t = self.t as i32;
        let bc1 = 1.0 - cfg.beta1.powi(t);
        let bc2 = 1.0 - cfg.beta2.powi(t);
        AdamStep {
            beta1: cfg.beta1 as f32,
            beta2: cfg.beta2 as f32,
            step: (lr / bc1) as f32,
            inv_sqrt_bc2: (1.0 / bc2.sqrt()) as f32,
            eps: cfg.eps as f32,
            amsgrad: cfg.amsgrad,
        }
    }
}

/// The scalars of one Adam step, bias corrections included.
#[derive(Clone, Copy, Debug)]
pub struct AdamStep {
    pub beta1: f32,
    pub beta2: f32,
    pub step: f32,
    pub inv_sqrt_bc2: f32,
    pub eps: f32,
    pub amsgrad: bool,
}

pub fn l2_norm(g: &[f32]) -> f64 {
    g.iter()
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt()
}

/// The factor that brings a gradient of norm `norm` within `max` (1 when already inside).
pub fn clip_factor(norm: f64, max: Option<f64>) -> f32 {
    match max {
        Some(m) if norm > m && norm > 0.0 => (m / norm) as f32,
        _ => 1.0,
    }
}

/// Adam ascent update of one contiguous slice: `params` move along `grad * grad_scale`
/// (the ascent direction, clipped). Equivalent to PyTorch's Adam on the loss -objective.
/// Slices may be any chunk of the flat vectors, so callers can run chunks in parallel.
pub fn adam_update(
    s: &AdamStep,
    params: &mut [f32],
    grad: &[f32],
    grad_scale: f32,
    m: &mut [f32],
    v: &mut [f32],
    v_max: &mut [f32],
) {
    let n = params.len();
    let (grad, m, v, v_max) = (&grad[..n], &mut m[..n], &mut v[..n], &mut v_max[..n]);
    for i in 0..n {
        let g = grad[i] * grad_scale;
        let mi = s.beta1 * m[i] + (1.0 - s.beta1) * g;
        let vi = s.beta2 * v[i] + (1.0 - s.beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        let v_used = if s.amsgrad {
            let vm = v_max[i].max(vi);
            v_max[i] = vm;
            vm
        } else {
            vi
        };
        params[i] += s.step * mi / (v_used.sqrt() * s.inv_sqrt_bc2 + s.eps);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burda_schedule_stages() {
        assert_eq!(burda_stage(0), 0);
        assert_eq!(burda_stage(1), 1);
        assert_eq!(burda_stage(3), 1);
        assert_eq!(burda_stage(4), 2);
        assert_eq!(burda_stage(12), 2);
        assert_eq!(burda_stage(13), 3);
        assert_eq!(burda_epochs(8), 3280);
        assert!((Schedule::Burda.lr(1e-3, 13) - 1e-3 * 10f64.powf(-3.0 / 7.0)).abs() < 1e-12);
    }

    #[test]
    fn linear_schedule_decays_to_a_tenth_at_epoch_3280() {
        let lr = |e| Schedule::Linear.lr(1e-3, e);
        assert_eq!(lr(0), 1e-3);
        assert!((lr(1640) - 1e-3 * 0.55).abs() < 1e-15);
        assert!((lr(3280) - 1e-4).abs() < 1e-15);
        assert!((lr(10_000) - 1e-4).abs() < 1e-15, "flat after the decay");
        assert!(lr(100) > lr(101));
    }

    #[test]
    fn adam_first_step_moves_by_lr_along_the_sign() {
        let mut p = vec![0.0f32; 3];
        let mut s = AdamState::new(3);
        let k = s.begin_step(&AdamConfig::default(), 0.01);
        adam_update(
            &k,
            &mut p,
            &[2.0, -0.5, 0.0],
            1.0,
            &mut s.m,
            &mut s.v,
            &mut s.v_max,
        );
        assert!(
            (p[0] - 0.01).abs() < 1e-6 && (p[1] + 0.01).abs() < 1e-6 && p[2] == 0.0,
            "{p:?}"
        );
    }

    #[test]
    fn amsgrad_keeps_the_largest_second_moment() {
        let cfg = AdamConfig {
            amsgrad: true,
            ..Default::default()
        };
        let mut p = vec![0.0f32; 1];
        let mut s = AdamState::new(1);
        for g in [10.0, 0.1] {
            let k = s.begin_step(&cfg, 0.01);
            adam_update(&k, &mut p, &[g], 1.0, &mut s.m, &mut s.v, &mut s.v_max);
        }
        assert!(s.v_max[0] > s.v[0]);
    }

    #[test]
    fn clipping_scales_only_above_the_limit() {
        assert_eq!(clip_factor(2.0, Some(4.0)), 1.0);
        assert!((clip_factor(8.0, Some(4.0)) - 0.5).abs() < 1e-7);
        assert_eq!(clip_factor(8.0, None), 1.0);
    }
}
