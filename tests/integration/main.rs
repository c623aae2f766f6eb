//! The integration tests, one crate so that wgpu (most of the test build) links once: one
//! module per subject, helpers in `common` (the CLI, the Monte-Carlo harness, the backends
//! under test). GPU parts skip without an adapter, except under CI=true, where a missing
//! adapter is a failure (`common::have_gpu`).

mod common;

mod bad_input;
mod cli;
mod cli_conventions;
mod console_images;
mod coupled_training;
mod coupling;
mod cvae;
mod denormals;
mod docs;
mod exact_training;
mod figures;
mod gl_adapters;
mod gpu_cli;
mod gpu_cvae;
mod gpu_hvae;
mod gpu_input;
mod gpu_parity;
mod gpu_plan;
mod grad_stats;
mod grad_var;
mod gradient_check;
mod gradient_check_cvae;
mod gradient_check_hvae;
mod hgauss;
mod hgauss_unbiased;
mod hvae;
mod layering;
mod own_data;
mod profile_bench;
mod reproduce;
mod resume;
mod run_lock;
mod shaders_validate;
mod training;
mod unbiased;
mod unbiased_training;
mod vector_paths;
