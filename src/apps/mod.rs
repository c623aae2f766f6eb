//! The applications built on the engine, one module for each `uvae` command that is more
//! than training or evaluation. They use the engine and never the other way round.

pub mod bench;
pub mod check;
pub mod figures;
pub mod grad_stats;
pub mod images;
pub mod plot;
pub mod profile;
pub mod reproduce;
