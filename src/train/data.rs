//! What a run trains on: binarized images, or an exact model's own data.

use crate::config::{OutputBias, TrainConfig};
use crate::data::{self, idx::Images, Dataset};
use crate::model::exact_training::ExactTraining;
use crate::model::{Conditional, Params};
use anyhow::Result;

/// What a run trains on: binarized images (the VAE), or an exact model's own continuous
/// data, where validation is on the same training data (the exact log p(x) is over it too).
pub(crate) enum TrainData {
    Images(Dataset),
    Exact {
        model: ExactTraining,
        x: Vec<f32>,
        count: usize,
    },
}

impl TrainData {
    /// The data `cfg` trains on and the initial parameters for it.
    pub fn load(cfg: &TrainConfig) -> Result<(TrainData, Params)> {
        Ok(match ExactTraining::new(cfg.model, cfg.seed) {
            None => {
                let mut ds = data::load_or_bundled_with(cfg.data.as_deref(), &cfg.load_options())?;
                if let Some(limit) = cfg.train_limit {
                    if limit < ds.train.count {
                        ds.train = ds.train.slice(0..limit);
                    }
                }
                let mut arch = cfg.arch.clone();
                arch.x_dim = ds.dim();
                if let Some(cond) = &mut arch.cond {
                    *cond = Conditional::for_images(cond.split_row, ds.train.rows, ds.train.cols)?;
                }
                let mean = match cfg.output_bias {
                    OutputBias::DataMean => Some(ds.train_mean()),
                    OutputBias::Zero => None,
                };
                let params = Params::init(&arch, cfg.seed, mean.as_deref());
                (TrainData::Images(ds), params)
            }
            Some(model) => {
                let params = model.initial_params(cfg.seed);
                let count = cfg.train_limit.unwrap_or(usize::MAX).min(model.count());
                let mut x = model.data_f32();
                x.truncate(count * model.dim());
                (TrainData::Exact { model, x, count }, params)
            }
        })
    }

    /// The images' shape (None for an exact model's data).
    pub fn image_shape(&self) -> Option<crate::data::ImageShape> {
        match self {
            TrainData::Images(ds) => Some(ds.shape),
            TrainData::Exact { .. } => None,
        }
    }

    pub fn dim(&self) -> usize {
        match self {
            TrainData::Images(ds) => ds.dim(),
            TrainData::Exact { model, .. } => model.dim(),
        }
    }
    pub fn train_count(&self) -> usize {
        match self {
            TrainData::Images(ds) => ds.train.count,
            TrainData::Exact { count, .. } => *count,
        }
    }
    /// (validation x, count).
    pub fn validation(&self) -> (Vec<f32>, usize) {
        match self {
            TrainData::Images(ds) => (data::binarize_eval(&ds.valid), ds.valid.count),
            TrainData::Exact { x, count, .. } => (x.clone(), *count),
        }
    }
    /// (binarized test x, count) of the first `limit` test images (all when None); None for
    /// the exact models, which have no test set.
    pub fn test(&self, limit: Option<usize>) -> Option<(Vec<f32>, usize)> {
        match self {
            TrainData::Images(ds) => {
                let n = limit.unwrap_or(usize::MAX).min(ds.test.count);
                let test = ds.test.slice(0..n);
                Some((data::binarize_eval(&test), n))
            }
            TrainData::Exact { .. } => None,
        }
    }
    /// The training images (None for an exact model's data), for a backend to hold.
    pub fn images(&self) -> Option<&Images> {
        match self {
            TrainData::Images(ds) => Some(&ds.train),
            TrainData::Exact { .. } => None,
        }
    }
    /// Fills `out` with the minibatch `indices` (binarized afresh per step for images).
    pub fn minibatch(&self, indices: &[usize], seed: u64, step: u32, out: &mut [f32]) {
        match self {
            TrainData::Images(ds) => data::binarize_train(&ds.train, indices, seed, step, out),
            TrainData::Exact { model, x, .. } => {
                let d = model.dim();
                for (row, &i) in out.chunks_exact_mut(d).zip(indices) {
                    row.copy_from_slice(&x[i * d..(i + 1) * d]);
                }
            }
        }
    }
}
