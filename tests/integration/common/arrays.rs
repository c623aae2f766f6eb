//! Writers of the data formats `--data` reads, for tests: IDX, `.npy` (by hand from the
//! format's description, not through the loader's crate) and `.npz` (a zip of `.npy`).

use std::io::Write;
use std::path::Path;

/// An IDX3 image file of `count` images of `rows` x `cols` bytes.
pub fn idx_bytes(pixels: &[u8], count: usize, rows: usize, cols: usize) -> Vec<u8> {
    let mut b = 0x0803u32.to_be_bytes().to_vec();
    for d in [count, rows, cols] {
        b.extend_from_slice(&(d as u32).to_be_bytes());
    }
    b.extend_from_slice(pixels);
    b
}

/// A `.npy` file (format 1.0) of dtype `descr` ('|u1', '<f4', '<f8', ...), C order.
pub fn npy_bytes(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let tuple = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {tuple}, }}");
    // Magic (6) + version (2) + length (2) + header, a multiple of 64, ending in '\n'.
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(header.len() as u16).to_le_bytes());
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    b
}

/// `.npy` bytes of uint8 images.
pub fn npy_u8(shape: &[usize], pixels: &[u8]) -> Vec<u8> {
    npy_bytes("|u1", shape, pixels)
}

/// `.npy` bytes of float32 values.
pub fn npy_f32(shape: &[usize], values: &[f32]) -> Vec<u8> {
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    npy_bytes("<f4", shape, &data)
}

/// A `.npz` archive of `(name, npy bytes)` entries (`name.npy` inside), deflated or stored.
pub fn npz_bytes(entries: &[(&str, Vec<u8>)], deflate: bool) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let method = if deflate {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    let opts = zip::write::SimpleFileOptions::default().compression_method(method);
    for (name, bytes) in entries {
        zip.start_file(format!("{name}.npy"), opts).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// Writes the IDX pair of a folder `dir` (MNIST file names, uncompressed).
pub fn write_idx_dir(dir: &Path, train: &[u8], test: &[u8], rows: usize, cols: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let d = rows * cols;
    for (name, px) in [
        ("train-images-idx3-ubyte", train),
        ("t10k-images-idx3-ubyte", test),
    ] {
        std::fs::write(dir.join(name), idx_bytes(px, px.len() / d, rows, cols)).unwrap();
    }
}
