//! unbiased-vae: maximum-likelihood training of variational autoencoders with unbiased and
//! multi-sample gradient estimators. docs/design.md in the repository describes the design
//! (its §4 gives the layers and what each may use); docs/estimators.md holds the estimators'
//! maths.
//!
//! The crate is an engine with applications on top:
//! - foundations: [`denormals`], [`error`], [`files`], [`run_lock`], [`rng`], [`progress`],
//!   [`stats`];
//! - the engine: [`estimators`] (pure functions of log-weights), [`model`], [`exact`] (models
//!   with closed-form log p(x)), [`coupling`] (coupled Markov chains), [`data`], [`optim`],
//!   [`config`], [`backend`] (CPU and GPU), [`eval`] and [`train`];
//! - [`apps`]: what the `uvae` commands build on the engine (check, profile, bench, figures,
//!   grad-stats, reproduce, plot, sample and reconstruct pictures).

pub mod denormals;
pub mod error;
pub mod files;
pub mod progress;
pub mod rng;
pub mod run_lock;
pub mod stats;

pub mod backend;
pub mod config;
pub mod coupling;
pub mod data;
pub mod estimators;
pub mod eval;
pub mod exact;
pub mod model;
pub mod optim;
pub mod train;

pub mod apps;

#[cfg(test)]
mod fuzz_tests;
