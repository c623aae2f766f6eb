//! Datasets: IDX loading, the train/validation/test split, and binarization drawn from the
//! shared Philox streams (so a GPU backend can binarize the same way).

pub mod idx;

use crate::rng::{self, Stream};
use anyhow::{bail, Context, Result};
use idx::Images;
use std::path::{Path, PathBuf};

/// Seed of the fixed binarization of evaluation images (validation and test): every run and
/// every backend scores the same binary images.
pub const EVAL_BINARIZE_SEED: u64 = 0x5EED_0000_0000_B1A5;

/// The bundled MNIST, relative to the crate root.
pub fn bundled_mnist_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("assets")
        .join("mnist")
}

/// A dataset in the MNIST file layout: train and test images (labels are not needed).
#[derive(Clone, Debug)]
pub struct Dataset {
    pub train: Images,
    pub valid: Images,
    pub test: Images,
    pub source: PathBuf,
}

fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    for name in [format!("{stem}.gz"), stem.to_string()] {
        let p = dir.join(&name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "data directory {} has no {stem}(.gz); --data must point at a folder holding the IDX files \
         train-images-idx3-ubyte.gz and t10k-images-idx3-ubyte.gz (MNIST layout, Fashion-MNIST works unchanged)",
        dir.display()
    )
}

impl Dataset {
    /// Loads `dir`, holding back the last `valid_size` training images for validation
    /// (Burda et al. use the last 400).
    pub fn load(dir: &Path, valid_size: usize) -> Result<Dataset> {
        let train_path = find(dir, "train-images-idx3-ubyte")?;
        let test_path = find(dir, "t10k-images-idx3-ubyte")?;
        let all = idx::load_images(&train_path)?;
        let test = idx::load_images(&test_path)?;
        if (all.rows, all.cols) != (test.rows, test.cols) {
            bail!(
                "train images are {}x{} but test images are {}x{} in {}",
                all.rows,
                all.cols,
                test.rows,
                test.cols,
                dir.display()
            );
        }
        if valid_size >= all.count {
            bail!(
                "--valid-size {valid_size} leaves no training images ({} in {}); use a smaller value \
                 (bench, profile and grad-stats hold back 400: give them more than 400)",
                all.count,
                train_path.display()
            );
        }
        let split = all.count - valid_size;
        Ok(Dataset {
            train: all.slice(0..split),
            valid: all.slice(split..all.count),
            test,
            source: dir.to_path_buf(),
        })
    }

    pub fn dim(&self) -> usize {
        self.train.dim()
    }

    /// Mean pixel intensity of the training images in [0, 1], per pixel (for the decoder bias).
    pub fn train_mean(&self) -> Vec<f32> {
        let d = self.dim();
        let mut sum = vec![0u64; d];
        for i in 0..self.train.count {
            for (s, &p) in sum.iter_mut().zip(self.train.image(i)) {
                *s += p as u64;
            }
        }
        sum.iter()
            .map(|&s| s as f32 / (255.0 * self.train.count as f32))
            .collect()
    }
}

/// Writes pixel ~ Bernoulli(intensity / 255) for one image, with uniforms from the Philox
/// counter (stream, step, index, block): pixel p uses uniform number p.
pub fn binarize_into(
    image: &[u8],
    seed: u64,
    stream: Stream,
    step: u32,
    index: u32,
    out: &mut [f32],
) {
    debug_assert_eq!(image.len(), out.len());
    for (block, (px, o)) in image.chunks(4).zip(out.chunks_mut(4)).enumerate() {
        let u = rng::uniforms4(seed, stream, step, index, block as u32);
        for j in 0..px.len() {
            o[j] = if u[j] * 255.0 < px[j] as f32 {
                1.0
            } else {
                0.0
            };
        }
    }
}

/// The test of [`binarize_into`] as an integer comparison: intensity `px` is on for a
/// Philox word `w` iff `w >> 9 < thresholds[px]`. The uniform `(k + 0.5) / 2^23` of the 23
/// bits `k = w >> 9` grows with k and f32 rounding of `u * 255` is monotone, so the k that
/// pass `u * 255 < px` are a prefix `0..thresholds[px]`, found here with the CPU's own f32
/// arithmetic. A GPU kernel comparing integers thus decides as the CPU does, bit for bit,
/// whatever its float rounding modes.
pub fn binarize_thresholds() -> [u32; 256] {
    let on = |k: u32, px: usize| rng::uniform_open(k << 9) * 255.0 < px as f32;
    let mut t = [0u32; 256];
    for (px, t) in t.iter_mut().enumerate() {
        // The smallest k in 0..=2^23 that is off.
        let (mut lo, mut hi) = (0u32, 1u32 << 23);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if on(mid, px) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        *t = lo;
    }
    t
}

/// Dynamic binarization of training images `indices` at `step` into `out` [len, dim].
pub fn binarize_train(images: &Images, indices: &[usize], seed: u64, step: u32, out: &mut [f32]) {
    let d = images.dim();
    for (row, &i) in indices.iter().enumerate() {
        binarize_into(
            images.image(i),
            seed,
            Stream::Binarize,
            step,
            i as u32,
            &mut out[row * d..(row + 1) * d],
        );
    }
}

/// The fixed binarization of a whole evaluation set, [count, dim].
pub fn binarize_eval(images: &Images) -> Vec<f32> {
    let d = images.dim();
    let mut out = vec![0.0f32; images.count * d];
    for i in 0..images.count {
        binarize_into(
            images.image(i),
            EVAL_BINARIZE_SEED,
            Stream::EvalBinarize,
            0,
            i as u32,
            &mut out[i * d..(i + 1) * d],
        );
    }
    out
}

/// `Ok(())` when `ds`'s images have the `x_dim` pixels the checkpoint at `checkpoint` models.
pub fn check_dim(ds: &Dataset, x_dim: usize, checkpoint: &Path) -> Result<()> {
    if ds.dim() != x_dim {
        bail!(
            "checkpoint {} models {x_dim}-pixel images but the data in {} has {}x{} = {} pixels; \
             pass the --data the checkpoint was trained on",
            checkpoint.display(),
            ds.source.display(),
            ds.train.rows,
            ds.train.cols,
            ds.dim()
        );
    }
    Ok(())
}

/// Loads the dataset named by `--data`, or the bundled MNIST.
pub fn load_or_bundled(dir: Option<&Path>, valid_size: usize) -> Result<Dataset> {
    match dir {
        Some(d) => Dataset::load(d, valid_size),
        None => Dataset::load(&bundled_mnist_dir(), valid_size).context(
            "loading the bundled MNIST from assets/mnist (pass --data DIR to use another copy)",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binarization_matches_intensity_and_is_reproducible() {
        let image: Vec<u8> = (0..4000).map(|i| [0u8, 64, 191, 255][i % 4]).collect();
        let mut a = vec![0.0f32; image.len()];
        let mut b = vec![0.0f32; image.len()];
        binarize_into(&image, 9, Stream::Binarize, 5, 17, &mut a);
        binarize_into(&image, 9, Stream::Binarize, 5, 17, &mut b);
        assert_eq!(a, b);
        for (lane, want) in [0.0f64, 64.0 / 255.0, 191.0 / 255.0, 1.0]
            .iter()
            .enumerate()
        {
            let ones = a
                .iter()
                .skip(lane)
                .step_by(4)
                .filter(|&&v| v == 1.0)
                .count() as f64
                / 1000.0;
            // sd <= sqrt(0.25/1000) = 0.016; 5 sd.
            assert!((ones - want).abs() < 0.08, "lane {lane}: {ones} vs {want}");
        }
        binarize_into(&image, 9, Stream::Binarize, 6, 17, &mut b);
        assert_ne!(a, b, "a new step must draw new noise");
    }

    /// Every one of the 2^23 uniforms against the thresholds: `k < t[px]` iff
    /// `u_k * 255 < px`, at the intensities either side of where u_k * 255 falls (the
    /// thresholds grow with px, so those two decide every other).
    #[test]
    fn thresholds_decide_as_the_float_comparison() {
        let t = binarize_thresholds();
        assert!(t.windows(2).all(|w| w[0] <= w[1]), "thresholds must grow");
        assert_eq!(t[0], 0, "intensity 0 is never on");
        assert_eq!(t[255], 1 << 23, "intensity 255 is always on (u < 1)");
        for k in 0..1u32 << 23 {
            let v = rng::uniform_open(k << 9) * 255.0;
            // The smallest intensity above v (0 < v < 255).
            let first_on = v.floor() as usize + 1;
            assert!(v < first_on as f32 && (first_on - 1) as f32 <= v);
            if first_on < 256 {
                assert!(k < t[first_on], "k {k}: px {first_on} is on");
            }
            if first_on > 0 {
                assert!(k >= t[first_on - 1], "k {k}: px {} is off", first_on - 1);
            }
        }
    }

    #[test]
    fn bundled_mnist_loads_with_expected_shapes() {
        let d = Dataset::load(&bundled_mnist_dir(), 400).unwrap();
        assert_eq!(
            (d.train.count, d.valid.count, d.test.count),
            (59_600, 400, 10_000)
        );
        assert_eq!(d.dim(), 784);
        let m = d.train_mean();
        let avg = m.iter().sum::<f32>() / m.len() as f32;
        assert!((avg - 0.1307).abs() < 0.002, "MNIST mean intensity {avg}");
    }

    #[test]
    fn missing_directory_names_the_fix() {
        let e = Dataset::load(Path::new("/nonexistent/dir"), 400)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--data"), "{e}");
    }
}
