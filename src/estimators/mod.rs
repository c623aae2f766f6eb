//! Gradient estimators as per-sample coefficients.
//!
//! Every estimator in scope is a linear combination of three per-sample gradient pieces
//! (see `docs/design.md` §1): the decoder term `D_n`, the reparameterised "path" term `P_n` and
//! the "score" term `S_n = -grad_phi log q(z_n | x)`. An estimator is therefore a *pure*
//! function from the log-weights `l_n = log p(x, z_n) - log q(z_n | x)` of one datapoint to
//! coefficients `(a_n, b_n, c_n)`, and the ascent directions are
//!
//! ```text
//! g_theta = sum_n a_n D_n          g_phi = sum_n (b_n P_n + c_n S_n)
//! ```
//!
//! Keeping estimators as coefficients means the CPU reference and the GPU kernels share one
//! backward pass, and each estimator can be unit-tested in isolation, in `f64`, against
//! finite differences of its objective. Nothing here touches model parameters or buffers.
//!
//! All coefficients use the *ascent* convention; the softmax weights `w = softmax(l)` are
//! always treated as constants (stop-gradient).
//!
//! | estimator | source | `a_n` | `b_n` | `c_n` |
//! |---|---|---|---|---|
//! | ELBO | Kingma & Welling 2014 | `1/N` | `1/N` | `1/N` |
//! | IWAE | Burda et al. 2016 | `w` | `w` | `w` |
//! | STL | Roeder et al. 2017 | `w` | `w` | `0` |
//! | IWAE-DReG | Tucker et al. 2019 | `w` | `w^2` | `0` |
//! | RWS (wake-phi) | Bornschein & Bengio 2015 | `w` | `0` | `-w` |
//! | RWS-DReG | Tucker et al. 2019 | `w` | `w - w^2` | `0` |
//! | DReG(alpha) | Tucker et al. 2019 | `w` | `alpha w + (1 - 2 alpha) w^2` | `0` |
//! | JVI | Nowozin 2018 | `dJ/dl_n` | same | same |
//! | JVI-DReG | Nowozin 2018 + Tucker 2019 | `dJ/dl_n` | see [`jackknife`] | `0` |

pub mod batch;
mod chains;
pub mod importance;
pub mod jackknife;
mod kind;
pub mod mlmc;
mod options;
mod plan;
pub mod program;
pub mod softmax;
pub mod sumo;

pub use batch::Coefficients;
pub use chains::{ChainKernel, CouplingConfig, RbSet};
pub use kind::EstimatorKind;
pub use options::{ChainOptions, EncoderChoice, Estimator, UnbiasedOptions};
pub use plan::{Draw, StepPlan};
pub use program::{CoefficientProgram, EncoderRule, SubsetTerm};
pub use softmax::{iwae_bound, logsumexp, softmax_into};
pub(crate) use softmax::{max_nan, softmax_lse};
