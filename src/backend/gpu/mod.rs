//! The wgpu backend: the whole training step in WGSL compute shaders.

pub mod shaders;
