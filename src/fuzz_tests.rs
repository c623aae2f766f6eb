//! Bounded fuzzing of the loaders that read user files: arbitrary bytes, and valid files
//! with bytes flipped, removed, inserted or cut off, fed to the IDX parser (raw and gzipped)
//! and the checkpoint parser. Errors are expected; a panic fails the test. 256 cases each,
//! so `cargo test --release` stays fast.

use crate::data::idx;
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

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
}
