//! MATLAB level-5 MAT-files, as far as image matrices need: numeric matrices, stored plain or
//! in compressed (zlib) elements, in either byte order. Burda et al.'s Omniglot `chardata.mat`
//! holds `data` (784 x 24,345) and `testdata` (784 x 8,070), one image per column, grey
//! levels in [0, 1] as doubles.
//!
//! Pixel order: MATLAB stores a column of D = H x W values, which is an H x W image in
//! MATLAB's column-major order: value c * H + r is pixel (r, c). The IWAE reference code
//! (yburda/iwae, datasets.py) reads the 784-value columns with
//! `data.T.reshape((-1, 28, 28)).reshape((-1, 784), order='fortran')`, which puts value
//! 28 a + b at position a + 28 b: the same transpose. So image pixel (r, c), row-major, is
//! column value c * H + r here.

use super::arrays::{self, Array, ImageShape, Values};
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::Path;

const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;

/// mxUINT8_CLASS: intensities 0-255 (every other numeric class holds grey levels in [0, 1]).
const MX_UINT8: u32 = 9;
/// The numeric classes, mxDOUBLE_CLASS (6) to mxUINT64_CLASS (15).
const MX_NUMERIC: std::ops::RangeInclusive<u32> = 6..=15;

/// A little- or big-endian reader of one buffer, every read bounds-checked.
struct Bytes<'a> {
    buf: &'a [u8],
    big: bool,
}

impl Bytes<'_> {
    fn u32(&self, at: usize) -> Option<u32> {
        let b: [u8; 4] = self.buf.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if self.big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }
}

/// One data element: its type and its payload.
struct Element<'a> {
    ty: u32,
    data: &'a [u8],
}

/// The elements of `buf` from `at` on; an error (in words) on a truncated one.
fn elements<'a>(b: &Bytes<'a>, mut at: usize) -> Result<Vec<Element<'a>>, String> {
    let mut out = Vec::new();
    while at < b.buf.len() {
        let first = b.u32(at).ok_or("a truncated element tag")?;
        // Small data element: type and size in one word, up to 4 bytes of data after it.
        if first >> 16 != 0 {
            let (ty, n) = (first & 0xFFFF, (first >> 16) as usize);
            let data = b.buf.get(at + 4..at + 4 + n).filter(|_| n <= 4);
            out.push(Element {
                ty,
                data: data.ok_or("a malformed small element")?,
            });
            at += 8;
            continue;
        }
        let n = b.u32(at + 4).ok_or("a truncated element tag")? as usize;
        let data = b
            .buf
            .get(at + 8..(at + 8).saturating_add(n))
            .ok_or("an element longer than the file")?;
        out.push(Element { ty: first, data });
        // Elements are padded to 8 bytes; compressed ones are not.
        let padded = if first == MI_COMPRESSED {
            n
        } else {
            n.div_ceil(8) * 8
        };
        at = (at + 8).saturating_add(padded);
    }
    Ok(out)
}

/// The values of a numeric element as f64.
fn numbers(e: &Element, big: bool) -> Result<Vec<f64>, String> {
    let size = match e.ty {
        MI_INT8 | MI_UINT8 => 1,
        MI_INT16 | MI_UINT16 => 2,
        MI_INT32 | MI_UINT32 | MI_SINGLE => 4,
        MI_DOUBLE | MI_INT64 | MI_UINT64 => 8,
        t => return Err(format!("a numeric part of unsupported data type {t}")),
    };
    if !e.data.len().is_multiple_of(size) {
        return Err("a numeric part whose length is not a whole number of values".into());
    }
    Ok(e.data
        .chunks_exact(size)
        .map(|c| {
            let mut w = [0u8; 8];
            w[..size].copy_from_slice(c);
            if big {
                w[..size].reverse();
            }
            let u = u64::from_le_bytes(w);
            match e.ty {
                MI_INT8 => u as u8 as i8 as f64,
                MI_UINT8 | MI_UINT16 | MI_UINT32 | MI_UINT64 => u as f64,
                MI_INT16 => u as u16 as i16 as f64,
                MI_INT32 => u as u32 as i32 as f64,
                MI_INT64 => u as i64 as f64,
                MI_SINGLE => f32::from_bits(u as u32) as f64,
                _ => f64::from_bits(u),
            }
        })
        .collect())
}

/// A numeric matrix: its dimensions, whether its class is uint8, and its values
/// (column-major).
struct Matrix {
    dims: Vec<usize>,
    uint8: bool,
    values: Vec<f64>,
}

/// The name of a miMATRIX element's payload, and the matrix when its name is `want`.
fn matrix(payload: &[u8], big: bool, want: &[&str]) -> Result<(String, Option<Matrix>), String> {
    let b = Bytes { buf: payload, big };
    let sub = elements(&b, 0)?;
    let [flags, dims, name, ..] = &sub[..] else {
        return Err("a matrix without flags, dimensions and name".into());
    };
    let name = String::from_utf8_lossy(name.data).into_owned();
    if !want.contains(&name.as_str()) {
        return Ok((name, None));
    }
    let fb = Bytes {
        buf: flags.data,
        big,
    };
    let flag_word = fb.u32(0).ok_or("matrix flags too short")?;
    let class = flag_word & 0xFF;
    if !MX_NUMERIC.contains(&class) || flag_word & 0x0800 != 0 {
        return Err(format!(
            "variable {name} is not a real numeric matrix (class {class}); save the images as a double or uint8 matrix"
        ));
    }
    let db = Bytes {
        buf: dims.data,
        big,
    };
    let dims: Vec<usize> = (0..dims.data.len() / 4)
        .map(|i| db.u32(4 * i).map(|d| d as i32 as usize))
        .collect::<Option<_>>()
        .ok_or("bad dimensions")?;
    let real = sub.get(3).ok_or(format!("variable {name} has no values"))?;
    let values = numbers(real, big)?;
    let count = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    if count != Some(values.len()) {
        return Err(format!(
            "variable {name} has dimensions {dims:?} but {} values",
            values.len()
        ));
    }
    Ok((
        name,
        Some(Matrix {
            dims,
            uint8: class == MX_UINT8,
            values,
        }),
    ))
}

/// The matrices `names` of a MAT-file's bytes (None for those it lacks), in order.
fn matrices(bytes: &[u8], names: &[&str]) -> Result<Vec<Option<Matrix>>, String> {
    if bytes.len() < 128 {
        return Err("shorter than a MAT-file header (128 bytes)".into());
    }
    let big = match &bytes[126..128] {
        b"IM" => false,
        b"MI" => true,
        _ => return Err("no MAT v5 byte-order mark (v4 and v7.3/HDF5 files are not read; save with -v7 or scipy.io.savemat)".into()),
    };
    let b = Bytes { buf: bytes, big };
    let mut found: Vec<Option<Matrix>> = names.iter().map(|_| None).collect();
    for e in elements(&b, 128)? {
        let (name, m) = match e.ty {
            MI_MATRIX => matrix(e.data, big, names)?,
            MI_COMPRESSED => {
                let mut inflated = Vec::new();
                flate2::read::ZlibDecoder::new(e.data)
                    .take(super::idx::MAX_INFLATED_BYTES + 1)
                    .read_to_end(&mut inflated)
                    .map_err(|e| format!("a corrupt compressed element ({e})"))?;
                let inner = Bytes {
                    buf: &inflated,
                    big,
                };
                match elements(&inner, 0)?.first() {
                    Some(m) if m.ty == MI_MATRIX => matrix(m.data, big, names)?,
                    _ => continue,
                }
            }
            _ => continue,
        };
        if let (Some(m), Some(i)) = (m, names.iter().position(|n| *n == name)) {
            found[i] = Some(m);
        }
    }
    Ok(found)
}

/// A matrix of one image per column as an array of images in row-major pixel order (see the
/// module notes), under `given` or the square shape of its columns.
fn images(m: Matrix, given: Option<ImageShape>, what: &str) -> Result<Array> {
    let [d, n] = m.dims[..] else {
        bail!(
            "{what}: dimensions {:?}; expected a 2-D matrix of one image per column",
            m.dims
        );
    };
    let shape = arrays::image_shape(&[n, d], given, what)?;
    let (h, wc) = (shape.height, shape.width * shape.channels);
    let mut out = vec![0.0f64; m.values.len()];
    for (col, img) in m.values.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        for r in 0..h {
            for c in 0..wc {
                img[r * wc + c] = col[c * h + r];
            }
        }
    }
    let values = if m.uint8 {
        Values::U8(out.iter().map(|&v| v as u8).collect())
    } else {
        Values::F64(out)
    };
    Ok(Array {
        shape: vec![n, d],
        values,
    })
}

/// The variables `names` of the MAT-file `path` as image arrays (None for one it lacks).
pub fn load(path: &Path, names: &[&str], given: Option<ImageShape>) -> Result<Vec<Option<Array>>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read MAT-file {}", path.display()))?;
    parse(&bytes, names, given, &path.display().to_string())
}

/// [`load`] of a file's bytes; `what` names it in errors.
pub fn parse(
    bytes: &[u8],
    names: &[&str],
    given: Option<ImageShape>,
    what: &str,
) -> Result<Vec<Option<Array>>> {
    let found = matrices(bytes, names).map_err(|why| {
        anyhow::anyhow!("{what} is not a readable MAT v5 file: {why}; re-save it (MATLAB -v7, or scipy.io.savemat)")
    })?;
    found
        .into_iter()
        .zip(names)
        .map(|(m, name)| {
            m.map(|m| images(m, given, &format!("{what}, variable {name}")))
                .transpose()
        })
        .collect()
}
