//! NumPy arrays: one `.npy` file (read with the `npyz` crate), or a `.npz` archive of them
//! (a zip file, read with the `zip` crate). Only uint8, float32 and float64 arrays in C order
//! are images here; every other dtype, a Fortran-ordered array, a truncated or foreign file
//! is an error naming the file, the array and the fix.

use super::arrays::{Array, Values};
use anyhow::{bail, Context, Result};
use npyz::{DType, NpyFile, TypeChar};
use std::io::Read;
use std::path::Path;

/// The most bytes one array of an archive may inflate to, as for gzipped IDX files.
const MAX_ARRAY_BYTES: u64 = super::idx::MAX_INFLATED_BYTES;

/// Parses the bytes of a `.npy` file; `what` names it (and the array) in errors.
pub fn parse(bytes: &[u8], what: &str) -> Result<Array> {
    let not_npy = |e: std::io::Error| {
        anyhow::anyhow!(
            "{what} is not a NumPy .npy array, or is truncated ({e}); save it with numpy.save (or numpy.savez for a .npz)"
        )
    };
    header_shape_fits(bytes, what)?;
    let npy = NpyFile::new(bytes).map_err(not_npy)?;
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let count = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= bytes.len())
        .with_context(|| {
            format!(
                "{what}: its header gives shape {shape:?}, more values than the file's {} bytes hold (truncated or corrupt; re-save it)",
                bytes.len()
            )
        })?;
    if npy.order() == npyz::Order::Fortran {
        bail!(
            "{what}: the array is stored in Fortran order; save numpy.ascontiguousarray(x) instead"
        );
    }
    let DType::Plain(ty) = npy.dtype() else {
        bail!("{what}: a structured array is not an image array; save a plain uint8, float32 or float64 array");
    };
    let truncated = |e: std::io::Error| {
        anyhow::anyhow!("{what}: cannot read its {count} values ({e}); the file is truncated or corrupt, re-save it")
    };
    let values = match (ty.type_char(), ty.size_field()) {
        (TypeChar::Uint, 1) => Values::U8(npy.into_vec().map_err(truncated)?),
        (TypeChar::Float, 4) => Values::F32(npy.into_vec().map_err(truncated)?),
        (TypeChar::Float, 8) => Values::F64(npy.into_vec().map_err(truncated)?),
        _ => bail!(
            "{what}: dtype {ty} is not an image dtype; save uint8 (0-255), float32 or float64 (in [0, 1]): \
             x.astype(numpy.uint8) or x.astype(numpy.float32) / 255"
        ),
    };
    Ok(Array { shape, values })
}

/// Checks the header's shape before npyz reads it: npyz multiplies the dimensions without
/// overflow checks, so a crafted shape would panic in a debug build. An error names the file.
fn header_shape_fits(bytes: &[u8], what: &str) -> Result<()> {
    // The header is ASCII within its first 64 KiB (a u16 length in format 1, u32 in 2 and 3,
    // but numpy never writes more); a file without one is npyz's error to report.
    let head = &bytes[..bytes.len().min(1 << 16)];
    let Some(at) = head.windows(8).position(|w| w == b"'shape':") else {
        return Ok(());
    };
    let rest = &head[at + 8..];
    let (Some(open), Some(close)) = (
        rest.iter().position(|&b| b == b'('),
        rest.iter().position(|&b| b == b')'),
    ) else {
        return Ok(());
    };
    if open >= close {
        return Ok(());
    }
    let dims = String::from_utf8_lossy(&rest[open + 1..close]).into_owned();
    let product = dims
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .try_fold(1u64, |n, d| {
            d.parse::<u64>().ok().and_then(|d| n.checked_mul(d))
        });
    if product.is_none() {
        bail!(
            "{what}: its header gives shape ({dims}), which is not a shape of countable size (corrupt; re-save it with numpy.save)"
        );
    }
    Ok(())
}

/// Reads a `.npy` file.
pub fn load(path: &Path) -> Result<Array> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read NumPy file {}", path.display()))?;
    parse(&bytes, &path.display().to_string())
}

/// The arrays of a `.npz` archive's bytes named `names` (without `.npy`), in order; None
/// for a name it lacks. `what` names the file in errors.
pub fn parse_archive(bytes: &[u8], names: &[&str], what: &str) -> Result<Vec<Option<Array>>> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| {
        anyhow::anyhow!(
            "{what} is not a NumPy .npz archive, or is truncated ({e}); save it with numpy.savez or numpy.savez_compressed"
        )
    })?;
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let entry = format!("{name}.npy");
        let mut file = match zip.by_name(&entry) {
            Ok(f) => f,
            Err(zip::result::ZipError::FileNotFound) => {
                out.push(None);
                continue;
            }
            Err(e) => bail!(
                "{what}: cannot open its array {name} ({e}); the archive is corrupt, re-save it"
            ),
        };
        let mut raw = Vec::new();
        file.by_ref()
            .take(MAX_ARRAY_BYTES + 1)
            .read_to_end(&mut raw)
            .map_err(|e| anyhow::anyhow!("{what}: cannot inflate its array {name} ({e}); the archive is truncated or corrupt, re-save it"))?;
        if raw.len() as u64 > MAX_ARRAY_BYTES {
            bail!(
                "{what}: its array {name} inflates to more than {} GiB; split the data",
                MAX_ARRAY_BYTES >> 30
            );
        }
        out.push(Some(parse(&raw, &format!("{what}, array {name}"))?));
    }
    Ok(out)
}

/// Reads a `.npz` archive's arrays `names` (see [`parse_archive`]).
pub fn load_archive(path: &Path, names: &[&str]) -> Result<Vec<Option<Array>>> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read NumPy archive {}", path.display()))?;
    parse_archive(&bytes, names, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A format-1 `.npy` header for `shape` and dtype uint8, with no data after it.
    fn header(shape: &str) -> Vec<u8> {
        let mut dict = format!("{{'descr': '|u1', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + dict.len() + 1) % 64 != 0 {
            dict.push(' ');
        }
        dict.push('\n');
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend((dict.len() as u16).to_le_bytes());
        b.extend(dict.bytes());
        b
    }

    #[test]
    fn a_shape_whose_size_overflows_is_an_error_not_a_panic() {
        let err = |b: &[u8], what: &str| match parse(b, what) {
            Ok(_) => panic!("{what} parsed"),
            Err(e) => e.to_string(),
        };
        let e = err(&header("(4294967296, 4294967296, 16)"), "x.npy");
        assert!(e.contains("x.npy") && e.contains("re-save"), "{e}");
        // A plausible shape passes the check and fails later, as truncated.
        let e = err(&header("(3, 4)"), "y.npy");
        assert!(e.contains("y.npy") && !e.contains("countable"), "{e}");
    }
}
