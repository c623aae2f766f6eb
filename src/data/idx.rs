//! IDX files (LeCun's MNIST format), gzipped or plain. Every header field is checked so a
//! wrong or truncated file fails with a message naming the file and what was expected.

use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::Path;

/// Grayscale images, one byte per pixel, row-major.
#[derive(Clone, Debug)]
pub struct Images {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
}

impl Images {
    pub fn dim(&self) -> usize {
        self.rows * self.cols
    }
    pub fn image(&self, i: usize) -> &[u8] {
        let d = self.dim();
        &self.pixels[i * d..(i + 1) * d]
    }
    /// Images `range` as a new set (used for the validation split and subsets).
    pub fn slice(&self, range: std::ops::Range<usize>) -> Images {
        let d = self.dim();
        Images {
            count: range.len(),
            rows: self.rows,
            cols: self.cols,
            pixels: self.pixels[range.start * d..range.end * d].to_vec(),
        }
    }
}

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;

/// The most bytes a gzipped IDX file may inflate to (MNIST's training images are 47 MB):
/// a corrupt or hostile header cannot make the loader allocate without bound.
pub const MAX_INFLATED_BYTES: u64 = 1 << 32;

fn read_all(path: &Path) -> Result<Vec<u8>> {
    let raw =
        std::fs::read(path).with_context(|| format!("cannot read IDX file {}", path.display()))?;
    decode(raw, &path.display().to_string())
}

/// The IDX bytes of a file's contents: inflated when they start with the gzip magic, as they
/// are otherwise. `what` names the file in errors.
pub fn decode(raw: Vec<u8>, what: &str) -> Result<Vec<u8>> {
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let mut out = Vec::new();
    // MultiGzDecoder: `cat a.gz b.gz` is a valid gzip file too.
    let mut inflate = flate2::read::MultiGzDecoder::new(&raw[..]).take(MAX_INFLATED_BYTES + 1);
    if let Err(e) = inflate.read_to_end(&mut out) {
        bail!(
            "{what} is a truncated or corrupt gzip file ({e}); re-download it (`gzip -t` checks a copy)"
        );
    }
    if out.len() as u64 > MAX_INFLATED_BYTES {
        bail!(
            "{what} inflates to more than {} GiB, far beyond any IDX image set; it is not an MNIST-layout file",
            MAX_INFLATED_BYTES >> 30
        );
    }
    Ok(out)
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_be_bytes(b)
}

/// Parses an IDX3 unsigned-byte image file (magic 0x00000803).
pub fn parse_images(bytes: &[u8], what: &str) -> Result<Images> {
    if bytes.len() < 16 {
        bail!(
            "{what}: {} bytes is too short for an IDX image header (16 bytes)",
            bytes.len()
        );
    }
    let magic = be_u32(bytes, 0);
    if magic != IMAGES_MAGIC {
        bail!(
            "{what}: magic number {magic:#010x} is not that of an IDX image file ({IMAGES_MAGIC:#010x}); \
             pass the *-images-idx3-ubyte(.gz) file"
        );
    }
    let (count, rows, cols) = (
        be_u32(bytes, 4) as usize,
        be_u32(bytes, 8) as usize,
        be_u32(bytes, 12) as usize,
    );
    if count == 0 || rows == 0 || cols == 0 {
        bail!(
            "{what}: header says {count} images of {rows}x{cols}; every dimension must be positive"
        );
    }
    let want = rows
        .checked_mul(cols)
        .and_then(|d| d.checked_mul(count))
        .with_context(|| {
            format!("{what}: header says {count} images of {rows}x{cols}, more bytes than memory holds (corrupt header)")
        })?;
    let body = &bytes[16..];
    if body.len() != want {
        bail!(
            "{what}: header says {count} images of {rows}x{cols} = {want} bytes, but the file holds {} \
             (truncated or corrupt; re-copy it)",
            body.len()
        );
    }
    Ok(Images {
        count,
        rows,
        cols,
        pixels: body.to_vec(),
    })
}

/// Parses an IDX1 unsigned-byte label file (magic 0x00000801).
pub fn parse_labels(bytes: &[u8], what: &str) -> Result<Vec<u8>> {
    if bytes.len() < 8 {
        bail!(
            "{what}: {} bytes is too short for an IDX label header (8 bytes)",
            bytes.len()
        );
    }
    let magic = be_u32(bytes, 0);
    if magic != LABELS_MAGIC {
        bail!("{what}: magic number {magic:#010x} is not that of an IDX label file ({LABELS_MAGIC:#010x}); pass the *-labels-idx1-ubyte(.gz) file");
    }
    let count = be_u32(bytes, 4) as usize;
    if bytes.len() - 8 != count {
        bail!(
            "{what}: header says {count} labels but the file holds {} (truncated or corrupt; re-copy it)",
            bytes.len() - 8
        );
    }
    Ok(bytes[8..].to_vec())
}

pub fn load_images(path: &Path) -> Result<Images> {
    parse_images(&read_all(path)?, &path.display().to_string())
}

pub fn load_labels(path: &Path) -> Result<Vec<u8>> {
    parse_labels(&read_all(path)?, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(magic: u32, dims: &[u32]) -> Vec<u8> {
        let mut v = magic.to_be_bytes().to_vec();
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v
    }

    #[test]
    fn parses_a_small_image_file() {
        let mut b = header(IMAGES_MAGIC, &[2, 2, 3]);
        b.extend(0u8..12);
        let im = parse_images(&b, "t").unwrap();
        assert_eq!((im.count, im.rows, im.cols), (2, 2, 3));
        assert_eq!(im.image(1), &[6, 7, 8, 9, 10, 11]);
    }

    #[test]
    fn rejects_bad_magic_truncation_and_label_files() {
        let mut b = header(IMAGES_MAGIC, &[2, 2, 3]);
        b.extend(0u8..11);
        let e = parse_images(&b, "t").unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        let l = header(LABELS_MAGIC, &[3]);
        let e = parse_images(&l, "labels.idx").unwrap_err().to_string();
        assert!(e.contains("too short") || e.contains("magic"), "{e}");
        let mut l = header(LABELS_MAGIC, &[3, 0, 0]);
        l.truncate(8);
        l.extend([1, 2, 3]);
        assert_eq!(parse_labels(&l, "t").unwrap(), vec![1, 2, 3]);
        let e = parse_images(
            &[
                0x00, 0x00, 0x08, 0x01, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0,
            ],
            "x",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("magic"), "{e}");
    }
}
