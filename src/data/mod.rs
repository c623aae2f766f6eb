//! Datasets: IDX, NumPy (.npz, or a folder of .npy) and MAT v5 loading, the
//! train/validation/test split, `--binarize`, and binarization drawn from the shared Philox
//! streams (so a GPU backend can binarize the same way).

pub mod arrays;
pub mod binarization;
pub mod idx;
pub mod mat;
pub mod npy;

use crate::rng::{self, Stream};
use anyhow::{bail, Context, Result};
pub use arrays::ImageShape;
pub use binarization::Binarization;
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

/// Train, validation and test images (labels are not needed), all of one image shape.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub train: Images,
    pub valid: Images,
    pub test: Images,
    /// Height, width and channels of every image (the pictures' tiles).
    pub shape: ImageShape,
    pub source: PathBuf,
}

/// How `--data` is read: the validation split, `--binarize` and `--image-shape`.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions {
    /// Training images held back for validation when the data has no validation array.
    pub valid_size: usize,
    pub binarize: Binarization,
    pub image_shape: Option<ImageShape>,
}

impl LoadOptions {
    pub fn split(valid_size: usize) -> LoadOptions {
        LoadOptions {
            valid_size,
            ..Default::default()
        }
    }
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
         train-images-idx3-ubyte.gz and t10k-images-idx3-ubyte.gz (MNIST layout, Fashion-MNIST works unchanged), \
         a folder holding train.npy and test.npy, a .npz file or a MAT v5 file (chardata.mat)",
        dir.display()
    )
}

/// The array names of a `.npz` archive: train, test, valid, then their Keras names.
const NPZ_NAMES: [&str; 6] = ["train", "test", "valid", "x_train", "x_test", "x_valid"];

/// Train, test and optional validation arrays of the file or folder `path`.
type Splits = (arrays::Array, arrays::Array, Option<arrays::Array>);

fn npz_splits(path: &Path) -> Result<Splits> {
    let mut a = npy::load_archive(path, &NPZ_NAMES)?;
    let mut take = |i: usize| a[i].take().or_else(|| a[i + 3].take());
    let (train, test, valid) = (take(0), take(1), take(2));
    let missing = |name: &str| {
        anyhow::anyhow!(
            "{} has no array {name} (nor x_{name}); save the images as numpy.savez(FILE, train=..., test=...[, valid=...])",
            path.display()
        )
    };
    Ok((
        train.ok_or_else(|| missing("train"))?,
        test.ok_or_else(|| missing("test"))?,
        valid,
    ))
}

fn npy_folder_splits(dir: &Path) -> Result<Splits> {
    let valid = dir.join("valid.npy");
    Ok((
        npy::load(&dir.join("train.npy"))?,
        npy::load(&dir.join("test.npy")).with_context(|| {
            format!(
                "{} holds train.npy, so it needs test.npy beside it",
                dir.display()
            )
        })?,
        valid.is_file().then(|| npy::load(&valid)).transpose()?,
    ))
}

fn mat_splits(path: &Path, shape: Option<ImageShape>) -> Result<Splits> {
    let mut m = mat::load(path, &["data", "testdata"], shape)?;
    let missing = |name: &str| {
        anyhow::anyhow!(
            "{} has no variable {name}; a MAT-file needs `data` (training images) and `testdata` \
             (test images), one image per column, as Burda et al.'s chardata.mat",
            path.display()
        )
    };
    Ok((
        m[0].take().ok_or_else(|| missing("data"))?,
        m[1].take().ok_or_else(|| missing("testdata"))?,
        None,
    ))
}

/// `array` of split `name` as images under `opts`, saying once when grey levels were quantised.
fn images_of(array: arrays::Array, opts: &LoadOptions, what: &str) -> Result<(Images, ImageShape)> {
    let (images, shape, quantised) =
        arrays::to_images(array, opts.binarize, opts.image_shape, what)?;
    if quantised > 0 {
        eprintln!(
            "notice: {what}: {quantised} of {} grey levels are not multiples of 1/255 and were rounded to the nearest \
             (uvae holds pixels as 8 bits; each pixel's Bernoulli probability moves by at most 1/510)",
            images.pixels.len()
        );
    }
    Ok((images, shape))
}

impl Dataset {
    /// Loads `dir`, holding back the last `valid_size` training images for validation
    /// (Burda et al. use the last 400).
    pub fn load(dir: &Path, valid_size: usize) -> Result<Dataset> {
        Dataset::load_with(dir, &LoadOptions::split(valid_size))
    }

    /// Loads the data at `path` (an IDX folder, a .npy folder, a .npz or a MAT-file) as
    /// `opts` says. Every check runs here, before a run writes anything.
    pub fn load_with(path: &Path, opts: &LoadOptions) -> Result<Dataset> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let splits = if path.is_dir() && path.join("train.npy").is_file() {
            npy_folder_splits(path)?
        } else if path.is_dir() {
            return Dataset::load_idx(path, opts);
        } else if !path.exists() {
            bail!(
                "--data {} does not exist; pass an IDX folder, a folder of train.npy and test.npy, a .npz or a .mat file",
                path.display()
            );
        } else {
            match ext.as_deref() {
                Some("npz") => npz_splits(path)?,
                Some("mat") => mat_splits(path, opts.image_shape)?,
                _ => bail!(
                    "--data {}: not a .npz or .mat file nor a folder; pass an IDX folder, a folder of train.npy and test.npy, \
                     a .npz (numpy.savez) or a MAT v5 file (chardata.mat)",
                    path.display()
                ),
            }
        };
        let what = |split: &str| format!("{} ({split} images)", path.display());
        let (train, shape) = images_of(splits.0, opts, &what("train"))?;
        let (test, test_shape) = images_of(splits.1, opts, &what("test"))?;
        let check = |other: ImageShape, split: &str| -> Result<()> {
            if other != shape {
                bail!(
                    "{}: train images are {shape} but {split} images are {other}; every split needs the same image shape",
                    path.display()
                );
            }
            Ok(())
        };
        check(test_shape, "test")?;
        let valid = match splits.2 {
            Some(v) => {
                let (valid, valid_shape) = images_of(v, opts, &what("valid"))?;
                check(valid_shape, "valid")?;
                eprintln!(
                    "notice: {} holds a valid array of {} images; it is the validation set (--valid-size is not used)",
                    path.display(),
                    valid.count
                );
                Some(valid)
            }
            None => None,
        };
        Dataset::split(train, valid, test, shape, path, opts.valid_size)
    }

    fn load_idx(dir: &Path, opts: &LoadOptions) -> Result<Dataset> {
        let train_path = find(dir, "train-images-idx3-ubyte")?;
        let test_path = find(dir, "t10k-images-idx3-ubyte")?;
        let mut all = idx::load_images(&train_path)?;
        let mut test = idx::load_images(&test_path)?;
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
        for (im, p) in [(&mut all, &train_path), (&mut test, &test_path)] {
            let what = p.display().to_string();
            arrays::image_shape(&[im.count, im.rows, im.cols], opts.image_shape, &what)?;
            let dim = im.dim();
            binarization::apply_u8(opts.binarize, &mut im.pixels, &what, dim)?;
        }
        let shape = arrays::image_shape(&[1, all.rows, all.cols], None, "")?;
        Dataset::split(all, None, test, shape, dir, opts.valid_size)
    }

    /// The dataset of `train` and `test`, validating on `valid` or else on the last
    /// `valid_size` training images.
    fn split(
        all: Images,
        valid: Option<Images>,
        test: Images,
        shape: ImageShape,
        source: &Path,
        valid_size: usize,
    ) -> Result<Dataset> {
        if let Some(valid) = valid {
            return Ok(Dataset {
                train: all,
                valid,
                test,
                shape,
                source: source.to_path_buf(),
            });
        }
        if valid_size >= all.count {
            bail!(
                "--valid-size {valid_size} leaves no training images ({} in {}); use a smaller value \
                 (bench, profile and grad-stats hold back 400: give them more than 400)",
                all.count,
                source.display()
            );
        }
        let split = all.count - valid_size;
        Ok(Dataset {
            train: all.slice(0..split),
            valid: all.slice(split..all.count),
            test,
            shape,
            source: source.to_path_buf(),
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
    load_or_bundled_with(dir, &LoadOptions::split(valid_size))
}

/// [`load_or_bundled`] as `opts` says.
pub fn load_or_bundled_with(path: Option<&Path>, opts: &LoadOptions) -> Result<Dataset> {
    match path {
        Some(p) => Dataset::load_with(p, opts),
        None => Dataset::load_with(&bundled_mnist_dir(), opts).context(
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
