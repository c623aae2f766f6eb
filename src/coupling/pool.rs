//! Every particle an estimate draws, with its log-weight, its decoder gradient `D` and the
//! coefficient the estimator gives it (added by [`super::chain::step`]).

use crate::exact::{fill_std_normals, ExactModel, LN_2PI};
use rand::Rng;

/// All particles drawn for one datapoint, in draw order. A particle's id is its index.
///
/// Particle `i` is `z_i = mean(x) + sd(x) * eps_i` with log-weight
/// `l_i = log p(x, z_i) - log q(z_i | x)` (computed exactly as [`ExactModel::sample`] does)
/// and decoder piece `D_i = grad_theta log p(x, z_i)`. The estimator adds to `coef[i]`; at the
/// end the gradient estimate is `sum_i coef[i] D_i`.
pub(crate) struct Pool<'a, M: ExactModel + ?Sized> {
    model: &'a M,
    x: &'a [f64],
    mean: Vec<f64>,
    sd: Vec<f64>,
    /// `-dz/2 ln(2 pi) - sum ln sd`: the part of `log q` that does not depend on `eps`.
    log_q_const: f64,
    dz: usize,
    p: usize,
    pub(crate) eps: Vec<f64>,
    pub(crate) l: Vec<f64>,
    pub(crate) d: Vec<f64>,
    pub(crate) coef: Vec<f64>,
    eps_buf: Vec<f64>,
    z_buf: Vec<f64>,
}

impl<'a, M: ExactModel + ?Sized> Pool<'a, M> {
    pub(crate) fn new(model: &'a M, x: &'a [f64]) -> Self {
        let (mean, sd) = model.encoder(x);
        let dz = model.z_dim();
        assert_eq!(mean.len(), dz, "encoder mean must have z_dim entries");
        let log_q_const = -0.5 * dz as f64 * LN_2PI - sd.iter().map(|s| s.ln()).sum::<f64>();
        Pool {
            model,
            x,
            mean,
            sd,
            log_q_const,
            dz,
            p: model.theta_len(),
            eps: Vec::new(),
            l: Vec::new(),
            d: Vec::new(),
            coef: Vec::new(),
            eps_buf: vec![0.0; dz],
            z_buf: vec![0.0; dz],
        }
    }

    /// Number of particles drawn so far.
    pub(crate) fn len(&self) -> usize {
        self.l.len()
    }

    /// Draws one particle from `q(z | x)` and returns its id.
    pub(crate) fn draw(&mut self, rng: &mut impl Rng) -> usize {
        fill_std_normals(rng, &mut self.eps_buf);
        let mut e2 = 0.0;
        for i in 0..self.dz {
            let e = self.eps_buf[i];
            self.z_buf[i] = self.mean[i] + self.sd[i] * e;
            e2 += e * e;
        }
        let log_q = self.log_q_const - 0.5 * e2;
        let l = self.model.log_joint(self.x, &self.z_buf) - log_q;
        let d = self.model.log_joint_grad_theta(self.x, &self.z_buf);
        assert_eq!(
            d.len(),
            self.p,
            "log_joint_grad_theta must have theta_len entries"
        );
        self.eps.extend_from_slice(&self.eps_buf);
        self.l.push(l);
        self.d.extend(d);
        self.coef.push(0.0);
        self.l.len() - 1
    }

    /// Draws `n` particles and returns their ids.
    pub(crate) fn draw_n(&mut self, n: usize, rng: &mut impl Rng) -> Vec<usize> {
        (0..n).map(|_| self.draw(rng)).collect()
    }

    /// `sum_i coef[i] D_i`.
    pub(crate) fn gradient(&self) -> Vec<f64> {
        crate::exact::combine(&self.coef, &self.d, self.p)
    }
}
