//! Host side of shaders/input.wgsl, the input pipeline: the training images uploaded once
//! (their bytes, four pixels per u32, with the binarization's integer thresholds), and a
//! minibatch's rows binarized on the device into the encoder's input, so that a training
//! step uploads its index list and one small uniform instead of its binarized values.

use super::context::GpuContext;
use super::dispatch::{groups_1d, record_one, Dispatch, MAX_GROUPS};
use super::pipelines::PipelineId;
use super::GpuBackend;
use crate::backend::{DispatchInfo, ImageRows, ImageUpload};
use crate::data::idx::Images;
use anyhow::{anyhow, bail, Result};
use bytemuck::{Pod, Zeroable};
use std::cell::RefCell;

/// Threads per workgroup of `binarize`, one per (row, block of four pixels).
const THREADS: usize = 64;

const MIB: f64 = 1048576.0;

/// shaders/input.wgsl, `Binarize`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
struct BinarizeU {
    rows: u32,
    dim: u32,
    blocks: u32,
    step: u32,
    seed_lo: u32,
    seed_hi: u32,
    _pad: [u32; 2],
}

/// The training images on the device and what their binarization binds.
pub(super) struct DeviceImages {
    pub count: usize,
    pub dim: usize,
    pixels: wgpu::Buffer,
    thresholds: wgpu::Buffer,
    /// The image of each row, for up to `MAX_GROUPS` rows (the most a step takes).
    rows: wgpu::Buffer,
    uniform: wgpu::Buffer,
    /// The bind group and the input buffer it writes (shape buffers may be reallocated).
    group: RefCell<Option<(wgpu::Buffer, wgpu::BindGroup)>>,
}

impl DeviceImages {
    pub(super) fn bytes(&self) -> u64 {
        self.pixels.size() + self.thresholds.size() + self.rows.size() + self.uniform.size()
    }

    /// The bind group writing into `input`, built again when `input` is a new buffer.
    fn group(&self, ctx: &GpuContext, input: &wgpu::Buffer) -> wgpu::BindGroup {
        let mut cached = self.group.borrow_mut();
        if let Some((_, group)) = cached.as_ref().filter(|(b, _)| b == input) {
            return group.clone();
        }
        let pipeline = ctx.pipeline(PipelineId::Binarize);
        let entries: Vec<wgpu::BindGroupEntry> = [
            &self.uniform,
            &self.pixels,
            &self.thresholds,
            &self.rows,
            input,
        ]
        .iter()
        .enumerate()
        .map(|(i, b)| wgpu::BindGroupEntry {
            binding: i as u32,
            resource: b.as_entire_binding(),
        })
        .collect();
        let group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("binarize"),
            layout: &pipeline.layout,
            entries: &entries,
        });
        *cached = Some((input.clone(), group.clone()));
        group
    }
}

/// (workgroups, label, bytes) of binarizing `rows` images of `dim` pixels: the index list
/// and each pixel's byte read, each value written.
fn binarize_shape(rows: usize, dim: usize) -> ([u32; 3], String, f64) {
    (
        groups_1d(rows * dim.div_ceil(4), THREADS),
        format!("binarize [{rows}x{dim}]"),
        (4 * rows + 5 * rows * dim) as f64,
    )
}

impl GpuBackend {
    /// `Backend::upload_images`: the images' bytes and the thresholds into device buffers,
    /// or `TooLarge` where the bytes exceed one storage binding of this adapter.
    pub(super) fn hold_images(&mut self, images: &Images) -> Result<ImageUpload> {
        let dim = self.layout.arch.x_dim;
        if images.dim() != dim {
            bail!(
                "the training images have {}x{} = {} pixels but the model takes {dim}",
                images.rows,
                images.cols,
                images.dim()
            );
        }
        let bytes = images.pixels.len().next_multiple_of(4) as u64;
        let limits = &self.ctx.limits;
        let limit = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size)
            .min(u32::MAX as u64);
        self.images = None;
        if bytes > limit {
            return Ok(ImageUpload::TooLarge(format!(
                "the {} training images take {:.1} MiB as bytes, beyond the {:.1} MiB this adapter ({}) binds in one storage buffer",
                images.count,
                bytes as f64 / MIB,
                limit as f64 / MIB,
                self.ctx.adapter.name
            )));
        }
        let ctx = &self.ctx;
        let pixels = ctx.storage("training images", bytes as usize / 4);
        // Buffer writes come in whole words: the last one padded with zeros.
        let whole = images.pixels.len() / 4 * 4;
        ctx.queue.write_buffer(&pixels, 0, &images.pixels[..whole]);
        if whole < images.pixels.len() {
            let mut tail = [0u8; 4];
            tail[..images.pixels.len() - whole].copy_from_slice(&images.pixels[whole..]);
            ctx.queue.write_buffer(&pixels, whole as u64, &tail);
        }
        let thresholds = ctx.storage("binarization thresholds", 256);
        let t = crate::data::binarize_thresholds();
        ctx.queue
            .write_buffer(&thresholds, 0, bytemuck::cast_slice(&t));
        self.images = Some(DeviceImages {
            count: images.count,
            dim,
            pixels,
            thresholds,
            rows: ctx.storage("minibatch image indices", MAX_GROUPS as usize),
            uniform: ctx.uniform("binarize", std::mem::size_of::<BinarizeU>()),
            group: RefCell::new(None),
        });
        self.peak_bytes = self.peak_bytes.max(self.live_bytes());
        Ok(ImageUpload::Held)
    }

    /// Binarizes the held images `rows` into the encoder's input (rows 0..batch): uploads
    /// the index list and the uniform, then one dispatch, left pending for the step's first
    /// recorded pass (`GpuBackend::record`) so the step stays one submit; timed on its own
    /// when profiling.
    pub(super) fn binarize_rows(&self, rows: &ImageRows, batch: usize) -> Result<()> {
        // The index list and uniform below must not overwrite those of a dispatch not yet run.
        self.flush_input()?;
        let im = self.images.as_ref().ok_or_else(|| {
            anyhow!("the GPU holds no training images: upload_images must take them before a step passes Minibatch::Images")
        })?;
        if rows.indices.len() != batch {
            bail!(
                "the minibatch names {} images, expected batch {batch}",
                rows.indices.len()
            );
        }
        if let Some(bad) = rows.indices.iter().find(|&&i| i as usize >= im.count) {
            bail!(
                "image index {bad} is beyond the {} training images held",
                im.count
            );
        }
        let blocks = im.dim.div_ceil(4);
        let u = BinarizeU {
            rows: batch as u32,
            dim: im.dim as u32,
            blocks: blocks as u32,
            step: rows.step,
            seed_lo: rows.seed as u32,
            seed_hi: (rows.seed >> 32) as u32,
            _pad: [0; 2],
        };
        let q = &self.ctx.queue;
        q.write_buffer(&im.rows, 0, bytemuck::cast_slice(rows.indices));
        q.write_buffer(&im.uniform, 0, bytemuck::bytes_of(&u));
        let sb = self.shape.as_ref().expect("shape buffers exist");
        let (count, label, bytes) = binarize_shape(batch, im.dim);
        let d = Dispatch {
            pipeline: PipelineId::Binarize,
            group: im.group(&self.ctx, &sb.enc[0]),
            count,
            label,
            flops: 0.0,
            bytes,
        };
        if self.profiling() {
            return self.profile_dispatches(&[Some(&d)]);
        }
        *self.pending_input.borrow_mut() = Some(d);
        Ok(())
    }

    /// Submits a pending binarization on its own (before other input reaches the buffers it
    /// reads or writes, or before a readback of the input).
    pub(super) fn flush_input(&self) -> Result<()> {
        let Some(d) = self.pending_input.borrow_mut().take() else {
            return Ok(());
        };
        let mut enc = self.ctx.device.create_command_encoder(&Default::default());
        record_one(&self.ctx, &mut enc, &d);
        self.ctx.submit(enc)
    }

    /// The binarization leading a step of `batch` datapoints, when the images are held.
    pub(super) fn binarize_dispatch_info(&self, batch: usize) -> Option<DispatchInfo> {
        let im = self.images.as_ref()?;
        let (count, label, bytes) = binarize_shape(batch, im.dim);
        Some(DispatchInfo {
            kernel: self.ctx.pipeline(PipelineId::Binarize).name.to_string(),
            label,
            count,
            workgroups: count.iter().map(|&c| c as u64).product(),
            flops: 0.0,
            bytes,
        })
    }

    /// The held images `rows` binarized on the device and read back [batch, x_dim] (parity
    /// checks against `data::binarize_train`).
    pub fn binarize_on_device(&mut self, rows: &ImageRows) -> Result<Vec<f32>> {
        let batch = rows.indices.len();
        if batch == 0 {
            return Ok(Vec::new());
        }
        self.ensure_shape(batch, 1, false)?;
        self.binarize_rows(rows, batch)?;
        self.flush_input()?;
        let sb = self.shape.as_ref().expect("shape buffers exist");
        self.ctx.read(&sb.enc[0], 0, batch * self.layout.arch.x_dim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::gpu::AdapterChoice;
    use crate::backend::Backend;
    use crate::model::{Arch, Params};
    use crate::train::MinibatchFeed;

    /// A GPU backend for a tiny model on 7 pixels; None (skip) without an adapter, except
    /// under CI=true, where that fails.
    fn backend() -> Option<GpuBackend> {
        if super::super::list_adapters().is_empty() {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(!ci, "CI=true but wgpu found no adapter");
            eprintln!("SKIPPED: no GPU adapter");
            return None;
        }
        let arch = Arch {
            x_dim: 7,
            hidden: vec![4],
            z_dim: 2,
            likelihood: Default::default(),
            top: None,
            cond: None,
        };
        let p = Params::init(&arch, 1, None);
        let choice = AdapterChoice {
            allow_software: true,
            ..Default::default()
        };
        Some(GpuBackend::new(&p.layout, &p.values, &choice).expect("GPU backend"))
    }

    fn images(count: usize, cols: usize) -> Images {
        Images {
            count,
            rows: 1,
            cols,
            pixels: (0..count * cols).map(|i| (i * 37 % 256) as u8).collect(),
        }
    }

    #[test]
    fn images_beyond_one_binding_fall_back_to_the_host_saying_why() {
        let Some(mut b) = backend() else { return };
        let im = images(300, 7);
        b.ctx.limits.max_storage_buffer_binding_size = 1024;
        let ImageUpload::TooLarge(why) = b.upload_images(&im).unwrap() else {
            panic!("2100 bytes do not fit a 1024-byte binding");
        };
        assert!(
            why.contains("300 training images") && why.contains("MiB"),
            "{why}"
        );
        let (mut feed, notice) = MinibatchFeed::new(&mut b, Some(&im), 4, 7).unwrap();
        assert!(!feed.on_device());
        let notice = notice.expect("the fallback says why");
        assert!(
            notice.contains("on the host") && notice.contains(&why),
            "{notice}"
        );
        let x = feed.minibatch(&[3, 1, 4, 1], 5, 9, |x| {
            crate::data::binarize_train(&im, &[3, 1, 4, 1], 5, 9, x)
        });
        assert!(matches!(x, crate::backend::Minibatch::Host(v) if v.len() == 28));
        // Nothing is held, so a step naming images fails with what to do.
        let rows = ImageRows {
            indices: &[0, 1],
            seed: 5,
            step: 9,
        };
        let e = b.binarize_on_device(&rows).unwrap_err().to_string();
        assert!(e.contains("upload_images"), "{e}");
    }

    #[test]
    fn bad_images_and_indices_are_errors() {
        let Some(mut b) = backend() else { return };
        let e = b.upload_images(&images(10, 8)).unwrap_err().to_string();
        assert!(e.contains("8 pixels") && e.contains("takes 7"), "{e}");
        assert_eq!(b.upload_images(&images(10, 7)).unwrap(), ImageUpload::Held);
        let rows = ImageRows {
            indices: &[2, 10],
            seed: 5,
            step: 9,
        };
        let e = b.binarize_on_device(&rows).unwrap_err().to_string();
        assert!(
            e.contains("index 10") && e.contains("10 training images"),
            "{e}"
        );
        // An image count whose bytes end mid-word: the last one padded.
        assert_eq!(b.upload_images(&images(5, 7)).unwrap(), ImageUpload::Held);
        let im = images(5, 7);
        let idx = [4usize, 0, 4];
        let mut want = vec![0.0f32; 21];
        crate::data::binarize_train(&im, &idx, 5, 9, &mut want);
        let got = b
            .binarize_on_device(&ImageRows {
                indices: &[4, 0, 4],
                seed: 5,
                step: 9,
            })
            .unwrap();
        assert_eq!(got, want);
    }
}
