//! What a training step reads as its minibatch x: values the host prepared, or training
//! images the backend holds and binarizes itself (docs/design.md §6, "Input pipeline").

use std::ops::Range;

/// The minibatch x [batch, x_dim] of a training step.
#[derive(Clone, Copy, Debug)]
pub enum Minibatch<'a> {
    /// The values, prepared on the host (binarized images, or an exact model's data).
    Host(&'a [f32]),
    /// Training images the backend holds ([`Backend::upload_images`](super::Backend::upload_images)
    /// returned [`ImageUpload::Held`]), binarized by the backend.
    Images(ImageRows<'a>),
}

/// Rows of the held training images, binarized exactly as `data::binarize_train` binarizes
/// them: row r is image `indices[r]`, its pixel p on when uniform p of Philox counter
/// (`Stream::Binarize`, `step`, `indices[r]`, p / 4) under key `seed`, times 255, is below
/// the intensity.
#[derive(Clone, Copy, Debug)]
pub struct ImageRows<'a> {
    pub indices: &'a [u32],
    pub seed: u64,
    pub step: u32,
}

impl<'a> Minibatch<'a> {
    /// Rows `rows` of this minibatch (the host's values hold `x_dim` per row).
    pub fn rows(self, rows: Range<usize>, x_dim: usize) -> Minibatch<'a> {
        match self {
            Minibatch::Host(x) => Minibatch::Host(&x[rows.start * x_dim..rows.end * x_dim]),
            Minibatch::Images(im) => Minibatch::Images(ImageRows {
                indices: &im.indices[rows],
                ..im
            }),
        }
    }
}

/// Whether a backend took the training images ([`Backend::upload_images`](super::Backend::upload_images)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageUpload {
    /// The backend holds them: pass minibatches as [`Minibatch::Images`].
    Held,
    /// The host binarizes: this backend's fastest path (the CPU), or the only one it has.
    Declined,
    /// The host binarizes because the backend cannot hold these images: why, in words.
    TooLarge(String),
}
