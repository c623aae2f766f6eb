//! Every particle an estimate draws, with its log-weight, its decoder gradient `D` and the
//! coefficient the estimator gives it (added by [`super::chain::step`]).

use crate::exact::{fill_std_normals, ExactModel};
use rand::Rng;

/// All particles drawn for one datapoint, in draw order. A particle's id is its index.
///
/// Particle `i` is [`ExactModel::sample`] at `eps_i` (`z_i = mean(x) + sd(x) * eps_i` for a
/// one-layer encoder; the hierarchy for `HGaussQ`) with log-weight
/// `l_i = log p(x, z_i) - log q(z_i | x)` and decoder piece `D_i = grad_theta log p(x, z_i)`.
/// The estimator adds to `coef[i]`; at the end the gradient estimate is `sum_i coef[i] D_i`.
pub(crate) struct Pool<'a, M: ExactModel + ?Sized> {
    model: &'a M,
    x: &'a [f64],
    p: usize,
    pub(crate) eps: Vec<f64>,
    pub(crate) l: Vec<f64>,
    pub(crate) d: Vec<f64>,
    pub(crate) coef: Vec<f64>,
    eps_buf: Vec<f64>,
}

impl<'a, M: ExactModel + ?Sized> Pool<'a, M> {
    pub(crate) fn new(model: &'a M, x: &'a [f64]) -> Self {
        Pool {
            model,
            x,
            p: model.theta_len(),
            eps: Vec::new(),
            l: Vec::new(),
            d: Vec::new(),
            coef: Vec::new(),
            eps_buf: vec![0.0; model.z_dim()],
        }
    }

    /// Number of particles drawn so far.
    pub(crate) fn len(&self) -> usize {
        self.l.len()
    }

    /// Draws one particle from `q(z | x)` and returns its id.
    pub(crate) fn draw(&mut self, rng: &mut impl Rng) -> usize {
        fill_std_normals(rng, &mut self.eps_buf);
        let (z, l) = self.model.sample(self.x, &self.eps_buf);
        let d = self.model.log_joint_grad_theta(self.x, &z);
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
