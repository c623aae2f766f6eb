//! Bounded fuzzing of the loaders that read user files: arbitrary bytes, and valid files
//! with bytes flipped, removed, inserted or cut off, fed to the IDX parser (raw and gzipped),
//! the NumPy (.npy, .npz) and MAT v5 readers, and the checkpoint parser. Errors are expected; a panic fails the test. 256 cases each,
//! so `cargo test --release` stays fast.

use crate::data::{arrays, idx, mat, npy, Binarization};
use crate::model::{checkpoint, Arch, Params};
use proptest::prelude::*;
use std::io::Write;
use std::path::Path;

/// One edit of a byte string; positions are taken modulo the length.
#[derive(Clone, Debug)]
enum Edit {
    Flip(usize, u8),
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(i, m)| Edit::Flip(i, m)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<usize>().prop_map(Edit::Remove),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

/// Applies `edits` in order. Edits near the start matter most (headers), so half the
/// positions are folded into the first 64 bytes.
fn mutate(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    let at = |i: usize, len: usize| {
        if len == 0 {
            0
        } else if i.is_multiple_of(2) {
            (i / 2) % len.min(64)
        } else {
            (i / 2) % len
        }
    };
    for e in edits {
        let len = bytes.len();
        match *e {
            Edit::Flip(i, m) if len > 0 => bytes[at(i, len)] ^= m,
            Edit::Set(i, b) if len > 0 => bytes[at(i, len)] = b,
            Edit::Insert(i, b) => bytes.insert(at(i, len + 1).min(len), b),
            Edit::Remove(i) if len > 0 => {
                bytes.remove(at(i, len));
            }
            Edit::Truncate(i) => bytes.truncate(at(i, len + 1)),
            _ => {}
        }
    }
    bytes
}

fn idx_images(count: u32, rows: u32, cols: u32) -> Vec<u8> {
    let mut v = Vec::new();
    for word in [0x0803, count, rows, cols] {
        v.extend_from_slice(&u32::to_be_bytes(word));
    }
    v.extend((0..count * rows * cols).map(|i| (i * 37 % 256) as u8));
    v
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// Decodes and parses as `Dataset::load` does; an Ok must be self-consistent.
fn load_idx(bytes: Vec<u8>) {
    let parsed = idx::decode(bytes, "fuzz.idx").and_then(|b| idx::parse_images(&b, "fuzz.idx"));
    if let Ok(im) = parsed {
        assert_eq!(im.pixels.len(), im.count * im.dim());
        let _ = im.image(im.count - 1);
    }
    let _ = idx::parse_labels(&[0, 0, 8, 1, 0, 0, 0, 2, 7], "fuzz-labels.idx");
}

fn valid_checkpoint() -> Vec<u8> {
    let arch = Arch {
        x_dim: 6,
        hidden: vec![4],
        z_dim: 2,
        likelihood: Default::default(),
        top: None,
        cond: None,
    };
    let meta = std::collections::HashMap::from([("uvae".to_string(), "{}".to_string())]);
    checkpoint::to_bytes(&Params::init(&arch, 3, None), &meta).unwrap()
}

/// Parses as `checkpoint::load` does; an Ok must be usable.
fn load_checkpoint(bytes: &[u8]) {
    if let Ok((p, _)) = checkpoint::parse(bytes, Path::new("fuzz.safetensors")) {
        assert_eq!(p.values.len(), p.layout.len);
        assert!(p.values.iter().all(|v| v.is_finite()));
    }
}

/// A `.npy` file of 3 x 2 x 2 float32 grey levels, written by npyz.
fn valid_npy() -> Vec<u8> {
    use npyz::WriterBuilder;
    let mut buf = Vec::new();
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&[3, 2, 2])
        .writer(&mut buf)
        .begin_nd()
        .unwrap();
    w.extend((0..12).map(|i| i as f32 / 11.0)).unwrap();
    w.finish().unwrap();
    buf
}

/// An archive of a deflated float32 `train` and a stored uint8 `test`, each 3 x 2 x 2
/// (tests/fixtures/make_fixtures.py).
const NPZ_FIXTURE: &[u8] = include_bytes!("../tests/fixtures/tiny.npz");

const MAT_FIXTURES: [&[u8]; 2] = [
    include_bytes!("../tests/fixtures/omniglot-tiny.mat"),
    include_bytes!("../tests/fixtures/omniglot-tiny-plain.mat"),
];

/// Turns an array into images under every rule, as `Dataset::load_with` does; an Ok must
/// be self-consistent.
fn as_images(array: arrays::Array) {
    let shape = array.shape.clone();
    let values = match &array.values {
        arrays::Values::U8(v) => arrays::Values::U8(v.clone()),
        arrays::Values::F32(v) => arrays::Values::F32(v.clone()),
        arrays::Values::F64(v) => arrays::Values::F64(v.clone()),
    };
    for (rule, a) in [
        (Binarization::Dynamic, array),
        (Binarization::AsGiven, arrays::Array { shape, values }),
    ] {
        if let Ok((im, s, _)) = arrays::to_images(a, rule, None, "fuzz") {
            assert_eq!(im.pixels.len(), im.count * s.dim());
            assert_eq!(im.dim(), s.dim());
        }
    }
}

fn load_npy(bytes: &[u8]) {
    if let Ok(a) = npy::parse(bytes, "fuzz.npy") {
        as_images(a);
    }
}

fn load_npz(bytes: &[u8]) {
    if let Ok(arrays) = npy::parse_archive(bytes, &["train", "test"], "fuzz.npz") {
        arrays.into_iter().flatten().for_each(as_images);
    }
}

fn load_mat(bytes: &[u8]) {
    if let Ok(arrays) = mat::parse(bytes, &["data", "testdata"], None, "fuzz.mat") {
        arrays.into_iter().flatten().for_each(as_images);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn numpy_and_mat_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        load_npy(&bytes);
        load_npz(&bytes);
        load_mat(&bytes);
        // Behind a valid MAT header, so the element parser sees the bytes.
        let mut framed = MAT_FIXTURES[1][..128].to_vec();
        framed.extend(&bytes);
        load_mat(&framed);
    }

    #[test]
    fn numpy_mutated_files_never_panic(edits in proptest::collection::vec(edit(), 1..6)) {
        load_npy(&mutate(valid_npy(), &edits));
        load_npz(&mutate(NPZ_FIXTURE.to_vec(), &edits));
    }

    #[test]
    fn mat_mutated_files_never_panic(
        edits in proptest::collection::vec(edit(), 1..6),
        compressed in any::<bool>(),
    ) {
        let file = MAT_FIXTURES[usize::from(!compressed)];
        // Edits past the 128-byte text header, where the elements are.
        let (head, body) = file.split_at(128);
        let mut bytes = head.to_vec();
        bytes.extend(mutate(body.to_vec(), &edits));
        load_mat(&bytes);
    }

    #[test]
    fn idx_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        load_idx(bytes.clone());
        // The same bytes behind the gzip magic: the inflater sees garbage.
        let mut gz = vec![0x1f, 0x8b];
        gz.extend(bytes);
        load_idx(gz);
    }

    #[test]
    fn idx_mutated_raw_files_never_panic(edits in proptest::collection::vec(edit(), 1..6)) {
        load_idx(mutate(idx_images(3, 4, 5), &edits));
    }

    #[test]
    fn idx_mutated_gzip_files_never_panic(
        edits in proptest::collection::vec(edit(), 1..6),
        inner in any::<bool>(),
    ) {
        // Either the gzip stream is damaged, or a damaged IDX file is gzipped intact.
        let raw = idx_images(3, 4, 5);
        let bytes = if inner { gzip(&mutate(raw, &edits)) } else { mutate(gzip(&raw), &edits) };
        load_idx(bytes);
    }

    #[test]
    fn checkpoint_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        load_checkpoint(&bytes);
        // A plausible header length in front, so the parser reaches the JSON.
        let mut framed = (bytes.len() as u64).to_le_bytes().to_vec();
        framed.extend(&bytes);
        load_checkpoint(&framed);
    }

    #[test]
    fn checkpoint_mutated_files_never_panic(edits in proptest::collection::vec(edit(), 1..6)) {
        load_checkpoint(&mutate(valid_checkpoint(), &edits));
    }
}

#[test]
fn the_unmutated_files_load() {
    let im =
        idx::parse_images(&idx::decode(gzip(&idx_images(3, 4, 5)), "t").unwrap(), "t").unwrap();
    assert_eq!((im.count, im.rows, im.cols), (3, 4, 5));
    let (p, _) = checkpoint::parse(&valid_checkpoint(), Path::new("c")).unwrap();
    assert_eq!(p.layout.arch.x_dim, 6);
    let a = npy::parse(&valid_npy(), "t").unwrap();
    assert_eq!(a.shape, [3, 2, 2]);
    let a = npy::parse_archive(NPZ_FIXTURE, &["train", "test", "valid"], "t").unwrap();
    assert!(a[2].is_none());
    let [Some(train), Some(test), _] = &a[..] else {
        panic!("tiny.npz holds train and test")
    };
    let (train, test) = (&train.values, &test.values);
    assert!(matches!(train, arrays::Values::F32(v) if v[11] == 1.0 && v[1] == 1.0 / 11.0));
    assert!(matches!(test, arrays::Values::U8(v) if v[..3] == [0, 21, 42] && v.len() == 12));
    for file in MAT_FIXTURES {
        let m = mat::parse(file, &["data", "testdata"], None, "t").unwrap();
        assert_eq!(m[0].as_ref().unwrap().shape, [12, 16]);
        assert_eq!(m[1].as_ref().unwrap().shape, [4, 16]);
    }
}
