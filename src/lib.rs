//! unbiased-vae: maximum-likelihood training of variational autoencoders with unbiased and
//! multi-sample gradient estimators. docs/design.md in the repository describes the design;
//! docs/estimators.md holds the estimators' maths.

pub mod backend;
pub mod bench;
pub mod config;
pub mod coupling;
pub mod data;
pub mod error;
pub mod estimators;
pub mod eval;
pub mod exact;
pub mod figures;
pub mod files;
#[cfg(test)]
mod fuzz_tests;
pub mod grad_stats;
pub mod images;
pub mod model;
pub mod optim;
pub mod parity;
pub mod plot;
pub mod profile;
pub mod progress;
pub mod reproduce;
pub mod rng;
pub mod train;
