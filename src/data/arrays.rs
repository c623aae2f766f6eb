//! Image arrays read from NumPy or MATLAB files, whatever their dtype and rank, turned into
//! the 8-bit [`Images`] the pipeline holds, and the image shape (`--image-shape`).

use super::binarization::{self, Binarization};
use super::idx::Images;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// The values of an array as stored.
pub enum Values {
    U8(Vec<u8>),
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// An array of images, C order: shape (N, D), (N, H, W) or (N, H, W, C).
pub struct Array {
    pub shape: Vec<usize>,
    pub values: Values,
}

/// Height, width and channels of one image (`--image-shape HxW[xC]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageShape {
    pub height: usize,
    pub width: usize,
    pub channels: usize,
}

impl ImageShape {
    pub fn dim(&self) -> usize {
        self.height * self.width * self.channels
    }
    /// A square grey image when `dim` is a square number (784: 28x28).
    pub fn square(dim: usize) -> Option<ImageShape> {
        let side = (dim as f64).sqrt().round() as usize;
        (side > 0 && side * side == dim).then_some(ImageShape {
            height: side,
            width: side,
            channels: 1,
        })
    }
}

impl std::fmt::Display for ImageShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.height, self.width)?;
        if self.channels != 1 {
            write!(f, "x{}", self.channels)?;
        }
        Ok(())
    }
}

impl std::str::FromStr for ImageShape {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<Option<usize>> = s
            .split('x')
            .map(|p| p.trim().parse().ok().filter(|&v| v > 0))
            .collect();
        match parts[..] {
            [Some(height), Some(width)] => Ok(ImageShape {
                height,
                width,
                channels: 1,
            }),
            [Some(height), Some(width), Some(channels)] => Ok(ImageShape {
                height,
                width,
                channels,
            }),
            _ => Err(format!(
                "'{s}' is not an image shape: give HxW or HxWxC with positive sizes (28x28, 32x32x3)"
            )),
        }
    }
}

impl Serialize for ImageShape {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ImageShape {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The image shape of an array of `shape`, checked against `given` (`--image-shape`).
pub fn image_shape(shape: &[usize], given: Option<ImageShape>, what: &str) -> Result<ImageShape> {
    let from_array = match shape {
        [_, d] => given.or(ImageShape::square(*d)).ok_or_else(|| {
            anyhow::anyhow!(
                "{what}: images of {d} values are not square; pass --image-shape HxW[xC] (H x W x C = {d})"
            )
        })?,
        [_, h, w] => ImageShape {
            height: *h,
            width: *w,
            channels: 1,
        },
        [_, h, w, c] => ImageShape {
            height: *h,
            width: *w,
            channels: *c,
        },
        _ => bail!(
            "{what}: shape {shape:?} has rank {}; image arrays must be (N, D), (N, H, W) or (N, H, W, C) \
             (one image per row: reshape it before saving)",
            shape.len()
        ),
    };
    let d: usize = shape[1..].iter().product();
    if let Some(g) = given {
        let matches = if shape.len() == 2 {
            g.dim() == d
        } else {
            g == from_array
        };
        if !matches {
            bail!("{what}: --image-shape {g} does not fit images of shape {:?}; drop it or give their shape", &shape[1..]);
        }
    }
    if shape[0] == 0 || d == 0 {
        bail!("{what}: shape {shape:?} holds no images; the split must hold at least one image of at least one value");
    }
    Ok(from_array)
}

/// `array` as 8-bit images under `rule`, its image shape, and how many float values were
/// quantised to a multiple of 1/255.
pub fn to_images(
    array: Array,
    rule: Binarization,
    given: Option<ImageShape>,
    what: &str,
) -> Result<(Images, ImageShape, usize)> {
    let shape = image_shape(&array.shape, given, what)?;
    let dim = shape.dim();
    let (pixels, quantised) = match array.values {
        Values::U8(mut p) => {
            binarization::apply_u8(rule, &mut p, what, dim)?;
            (p, 0)
        }
        Values::F32(v) => binarization::from_unit(rule, v.iter().map(|&x| x as f64), what, dim)?,
        Values::F64(v) => binarization::from_unit(rule, v.into_iter(), what, dim)?,
    };
    let images = Images {
        count: array.shape[0],
        rows: shape.height,
        cols: shape.width * shape.channels,
        pixels,
    };
    Ok((images, shape, quantised))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_shapes_parse_print_and_check() {
        let s: ImageShape = "19x23".parse().unwrap();
        assert_eq!(
            (s.height, s.width, s.channels, s.to_string()),
            (19, 23, 1, "19x23".into())
        );
        assert_eq!("4x5x3".parse::<ImageShape>().unwrap().dim(), 60);
        for bad in ["", "28", "0x3", "3x-1", "axb", "1x2x3x4"] {
            assert!(bad.parse::<ImageShape>().is_err(), "{bad}");
        }
        assert_eq!(
            image_shape(&[5, 784], None, "a").unwrap().to_string(),
            "28x28"
        );
        let e = image_shape(&[5, 437], None, "f.npy")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--image-shape") && e.contains("f.npy"), "{e}");
        assert_eq!(image_shape(&[5, 437], Some(s), "a").unwrap(), s);
        let e = image_shape(&[5, 23, 19], Some(s), "a")
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not fit"), "{e}");
        let e = image_shape(&[0, 19, 23], None, "a")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no images"), "{e}");
        let e = image_shape(&[784], None, "a").unwrap_err().to_string();
        assert!(e.contains("rank 1"), "{e}");
    }
}
