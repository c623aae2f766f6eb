//! How training steps get their minibatch: binarized on the host into one reused buffer, or,
//! where the backend holds the training images (`Backend::upload_images`), as their index
//! list, which the backend binarizes itself with the same Philox numbers.

use crate::backend::{Backend, ImageRows, ImageUpload, Minibatch};
use crate::data::idx::Images;
use anyhow::Result;

/// The minibatches of a run (or a benchmark), `batch` rows of `dim` values each.
pub struct MinibatchFeed {
    on_device: bool,
    x: Vec<f32>,
    indices: Vec<u32>,
}

impl MinibatchFeed {
    /// Offers `images` (None: data that is not images, which the host prepares) to
    /// `backend` once. The notice says why the host binarizes where the backend could
    /// binarize, but not these images.
    pub fn new(
        backend: &mut dyn Backend,
        images: Option<&Images>,
        batch: usize,
        dim: usize,
    ) -> Result<(MinibatchFeed, Option<String>)> {
        let upload = match images {
            Some(im) => backend.upload_images(im)?,
            None => ImageUpload::Declined,
        };
        let on_device = upload == ImageUpload::Held;
        let notice = match upload {
            ImageUpload::TooLarge(why) => {
                Some(format!("binarizing the minibatches on the host: {why}"))
            }
            ImageUpload::Held | ImageUpload::Declined => None,
        };
        let feed = MinibatchFeed {
            on_device,
            x: if on_device {
                Vec::new()
            } else {
                vec![0.0; batch * dim]
            },
            indices: Vec::with_capacity(if on_device { batch } else { 0 }),
        };
        Ok((feed, notice))
    }

    /// Whether the backend binarizes (the host uploads only index lists).
    pub fn on_device(&self) -> bool {
        self.on_device
    }

    /// The minibatch of dataset `indices` at (`seed`, `step`): their index list for the
    /// backend, or the values `host` writes into [batch, dim] (the loop's binarization).
    pub fn minibatch(
        &mut self,
        indices: &[usize],
        seed: u64,
        step: u32,
        host: impl FnOnce(&mut [f32]),
    ) -> Minibatch<'_> {
        if self.on_device {
            self.indices.clear();
            self.indices.extend(indices.iter().map(|&i| i as u32));
            Minibatch::Images(ImageRows {
                indices: &self.indices,
                seed,
                step,
            })
        } else {
            host(&mut self.x);
            Minibatch::Host(&self.x)
        }
    }
}
