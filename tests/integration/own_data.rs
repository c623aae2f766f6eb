//! `--data` beyond the MNIST IDX folder (issue #23): the same images as IDX, `.npz` (uint8
//! and float32) and a `.npy` folder train to the same checkpoint; a MAT v5 file (Burda et
//! al.'s Omniglot layout) trains as its NumPy twin, in the IWAE code's pixel order;
//! `--binarize`; and bad data fails before any run directory exists.

use std::path::{Path, PathBuf};

use unbiased_vae::config::{BackendChoice, TrainConfig};
use unbiased_vae::data::{Binarization, Dataset, ImageShape, LoadOptions};
use unbiased_vae::estimators::{Estimator, EstimatorKind};
use unbiased_vae::model::{checkpoint, ModelChoice};
use unbiased_vae::optim::{AdamConfig, Schedule};
use unbiased_vae::train;

use crate::common::arch;
use crate::common::arrays::{npy_bytes, npy_f32, npy_u8, npz_bytes, write_idx_dir};
use crate::common::cli::{arg, assert_agree, run, train_on_cpu_and_gpu};

const ROWS: usize = 6;
const COLS: usize = 5;
const TRAIN: usize = 20;
const TEST: usize = 6;

/// Grey levels of `count` images of `dim` pixels, every intensity 0-255 present; pixel 0 of
/// image 0 is 0.
fn grey(count: usize, dim: usize, salt: usize) -> Vec<u8> {
    (0..count * dim)
        .map(|i| ((i * 37 + salt * 11) % 256) as u8)
        .collect()
}

/// A short CPU run on `data` into `out`, as the tests' runs are configured.
fn tiny_run(data: &Path, out: PathBuf, binarize: Binarization, x_dim: usize) -> TrainConfig {
    TrainConfig {
        model: ModelChoice::Vae,
        data: Some(data.to_path_buf()),
        binarize,
        image_shape: None,
        valid_size: 4,
        train_limit: None,
        arch: arch(x_dim, &[8], 3),
        estimator: Estimator::new(EstimatorKind::Iwae, 0.0),
        k: 3,
        epochs: 2,
        batch: 4,
        lr: 1e-2,
        schedule: Schedule::Constant,
        adam: AdamConfig::default(),
        seed: 7,
        threads: 1,
        backend: BackendChoice::Cpu,
        adapter: None,
        val_k: 2,
        output_bias: Default::default(),
        test: None,
        grad_var: None,
        out,
    }
}

/// The checkpoint's tensors after training `cfg` (its metadata names the data's path, so
/// the files' bytes differ between formats; the tensors must not).
fn trained(cfg: &TrainConfig) -> Vec<f32> {
    train::train(cfg, |_| {}).unwrap_or_else(|e| panic!("{}: {e:#}", cfg.out.display()));
    checkpoint::load(&cfg.out.join(train::CHECKPOINT_FILE))
        .unwrap()
        .0
        .values
}

fn to_unit_f32(px: &[u8]) -> Vec<f32> {
    px.iter().map(|&p| p as f32 / 255.0).collect()
}

#[test]
fn the_same_images_train_to_the_same_checkpoint_in_every_format() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let dim = ROWS * COLS;
    let (train, test) = (grey(TRAIN, dim, 0), grey(TEST, dim, 5));
    assert_eq!(train[0], 0);
    let idx = t.join("idx");
    write_idx_dir(&idx, &train, &test, ROWS, COLS);
    let npz = |name: &str, tr: Vec<u8>, te: Vec<u8>| {
        let p = t.join(name);
        std::fs::write(&p, npz_bytes(&[("train", tr), ("test", te)], true)).unwrap();
        p
    };
    let u8_npz = npz(
        "u8.npz",
        npy_u8(&[TRAIN, ROWS, COLS], &train),
        npy_u8(&[TEST, ROWS, COLS], &test),
    );
    // Keras's names, float32, stored without compression.
    let f32_npz = t.join("f32.npz");
    std::fs::write(
        &f32_npz,
        npz_bytes(
            &[
                (
                    "x_train",
                    npy_f32(&[TRAIN, ROWS, COLS], &to_unit_f32(&train)),
                ),
                ("x_test", npy_f32(&[TEST, ROWS, COLS], &to_unit_f32(&test))),
            ],
            false,
        ),
    )
    .unwrap();
    let folder = t.join("npy");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(
        folder.join("train.npy"),
        npy_u8(&[TRAIN, ROWS, COLS], &train),
    )
    .unwrap();
    std::fs::write(folder.join("test.npy"), npy_u8(&[TEST, ROWS, COLS], &test)).unwrap();
    let mut changed = train.clone();
    changed[0] = 255;
    let changed_npz = npz(
        "changed.npz",
        npy_u8(&[TRAIN, ROWS, COLS], &changed),
        npy_u8(&[TEST, ROWS, COLS], &test),
    );

    let run = |data: &Path, name: &str| {
        trained(&tiny_run(data, t.join(name), Binarization::Dynamic, dim))
    };
    let reference = run(&idx, "run-idx");
    for (data, name) in [(&u8_npz, "u8"), (&f32_npz, "f32"), (&folder, "folder")] {
        let got = run(data, name);
        let differing = got.iter().zip(&reference).filter(|(a, b)| a != b).count();
        assert_eq!(
            differing, 0,
            "{name}: {differing} parameters differ from the IDX run's"
        );
    }
    assert_ne!(
        run(&changed_npz, "changed"),
        reference,
        "one training pixel changed 0 -> 255 must change the checkpoint (--data is read)"
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.join("u8/config.json")).unwrap()).unwrap();
    assert_eq!(config["binarize"], "dynamic");
    assert_eq!(config["image_shape"], "6x5");
}

/// Image n's pixel (r, c) in tests/fixtures/make_fixtures.py.
fn fixture_intensity(n: usize, r: usize, c: usize) -> u8 {
    ((31 * n + 16 * r + 3 * c + r * r) % 256) as u8
}

/// The fixtures' images, row-major, `transpose`d or not.
fn fixture_images(first: usize, count: usize, transpose: bool) -> Vec<u8> {
    let mut v = Vec::new();
    for n in first..first + count {
        for r in 0..4 {
            for c in 0..4 {
                let (r, c) = if transpose { (c, r) } else { (r, c) };
                v.push(fixture_intensity(n, r, c));
            }
        }
    }
    v
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn a_mat_file_reads_in_the_iwae_pixel_order_and_trains_as_its_numpy_twin() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (train, test) = (fixture_images(0, 12, false), fixture_images(12, 4, false));
    assert_ne!(
        train,
        fixture_images(0, 12, true),
        "the image must be asymmetric"
    );
    for name in ["omniglot-tiny.mat", "omniglot-tiny-plain.mat"] {
        let ds = Dataset::load_with(&fixture(name), &LoadOptions::split(2)).unwrap();
        assert_eq!(ds.shape.to_string(), "4x4", "{name}");
        assert_eq!(ds.train.pixels, train[..10 * 16], "{name}: training pixels");
        assert_eq!(
            ds.valid.pixels,
            train[10 * 16..],
            "{name}: validation pixels"
        );
        assert_eq!(ds.test.pixels, test, "{name}: test pixels");
    }
    let twin = |name: &str, transpose: bool| {
        let p = t.join(name);
        let tr = npy_u8(&[12, 4, 4], &fixture_images(0, 12, transpose));
        let te = npy_u8(&[4, 4, 4], &fixture_images(12, 4, transpose));
        std::fs::write(&p, npz_bytes(&[("train", tr), ("test", te)], true)).unwrap();
        p
    };
    let run = |data: &Path, name: &str| {
        let mut cfg = tiny_run(data, t.join(name), Binarization::Dynamic, 16);
        cfg.valid_size = 2;
        trained(&cfg)
    };
    let numpy = run(&twin("twin.npz", false), "twin");
    assert_eq!(run(&fixture("omniglot-tiny.mat"), "mat"), numpy);
    assert_eq!(run(&fixture("omniglot-tiny-plain.mat"), "mat-plain"), numpy);
    assert_ne!(
        run(&twin("transposed.npz", true), "transposed"),
        numpy,
        "a transposed reading must train differently"
    );
}

#[test]
fn binarize_none_on_binary_data_equals_threshold_and_threshold_is_fixed() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let dim = ROWS * COLS;
    let binary: Vec<u8> = grey(TRAIN + TEST, dim, 3)
        .iter()
        .map(|&p| if p >= 128 { 255 } else { 0 })
        .collect();
    let (train, test) = binary.split_at(TRAIN * dim);
    let data = t.join("binary.npz");
    std::fs::write(
        &data,
        npz_bytes(
            &[
                ("train", npy_u8(&[TRAIN, dim], train)),
                ("test", npy_u8(&[TEST, dim], test)),
            ],
            true,
        ),
    )
    .unwrap();
    let run = |b: Binarization, data: &Path, name: &str| {
        let mut cfg = tiny_run(data, t.join(name), b, dim);
        cfg.image_shape = Some("6x5".parse::<ImageShape>().unwrap());
        trained(&cfg)
    };
    let none = run(Binarization::AsGiven, &data, "none");
    assert_eq!(none, run(Binarization::Threshold, &data, "threshold"));
    // On grey data threshold is a fixed rule: it differs from the dynamic draws...
    let grey_data = t.join("grey.npz");
    std::fs::write(
        &grey_data,
        npz_bytes(
            &[
                ("train", npy_u8(&[TRAIN, dim], &grey(TRAIN, dim, 3))),
                ("test", npy_u8(&[TEST, dim], &grey(TEST, dim, 4))),
            ],
            true,
        ),
    )
    .unwrap();
    let thr = run(Binarization::Threshold, &grey_data, "grey-threshold");
    assert_ne!(thr, run(Binarization::Dynamic, &grey_data, "grey-dynamic"));
    // ... and equals the dynamic path on the thresholded images (binary data).
    assert_eq!(thr, none, "threshold of grey data equals its binary twin");
}

/// One bad input: the file to write (relative name and bytes), the words its error must
/// hold.
struct Bad {
    what: &'static str,
    files: Vec<(&'static str, Vec<u8>)>,
    data: &'static str,
    extra: &'static [&'static str],
    says: &'static [&'static str],
}

fn good(shape: &[usize]) -> Vec<u8> {
    npy_u8(shape, &vec![0u8; shape.iter().product()])
}

fn npz_of(train: Vec<u8>, test: Vec<u8>) -> Vec<u8> {
    npz_bytes(&[("train", train), ("test", test)], true)
}

#[test]
fn bad_data_fails_naming_file_array_and_fix_before_any_run_directory_exists() {
    let f32_with = |v: f32| npy_f32(&[2, 4, 4], &[vec![0.5; 31], vec![v]].concat());
    let valid = npz_of(good(&[8, 4, 4]), good(&[2, 4, 4]));
    let cases = vec![
        Bad {
            what: "wrong dtype",
            files: vec![(
                "d.npz",
                npz_of(npy_bytes("<i8", &[2, 2], &[0; 32]), good(&[2, 4])),
            )],
            data: "d.npz",
            extra: &[],
            says: &["array train", "dtype", "uint8", "float32"],
        },
        Bad {
            what: "wrong rank",
            files: vec![("d.npz", npz_of(good(&[16]), good(&[2, 4, 4])))],
            data: "d.npz",
            extra: &[],
            says: &["train images", "rank 1", "(N, H, W)"],
        },
        Bad {
            what: "outside [0, 1]",
            files: vec![("d.npz", npz_of(good(&[8, 4, 4]), f32_with(1.5)))],
            data: "d.npz",
            extra: &[],
            says: &["test images", "flat index 31", "outside [0, 1]"],
        },
        Bad {
            what: "NaN",
            files: vec![("d.npz", npz_of(good(&[8, 4, 4]), f32_with(f32::NAN)))],
            data: "d.npz",
            extra: &[],
            says: &["test images", "NaN", "replace NaNs"],
        },
        Bad {
            what: "mismatched widths",
            files: vec![("d.npz", npz_of(good(&[8, 4, 4]), good(&[2, 4, 5])))],
            data: "d.npz",
            extra: &[],
            says: &["d.npz", "4x4", "4x5", "same image shape"],
        },
        Bad {
            what: "empty split",
            files: vec![("d.npz", npz_of(good(&[8, 4, 4]), good(&[0, 4, 4])))],
            data: "d.npz",
            extra: &[],
            says: &["test images", "no images"],
        },
        Bad {
            what: "missing test array",
            files: vec![("d.npz", npz_bytes(&[("train", good(&[8, 4, 4]))], false))],
            data: "d.npz",
            extra: &[],
            says: &["d.npz", "no array test", "numpy.savez"],
        },
        Bad {
            what: "truncated archive",
            files: vec![("d.npz", valid[..valid.len() / 2].to_vec())],
            data: "d.npz",
            extra: &[],
            says: &["d.npz", "truncated"],
        },
        Bad {
            what: "not NumPy",
            files: vec![("d.npz", b"hello, not a zip file".to_vec())],
            data: "d.npz",
            extra: &[],
            says: &["d.npz", "is not a NumPy .npz"],
        },
        Bad {
            what: "truncated npy in a folder",
            files: vec![
                ("f/train.npy", good(&[8, 4, 4])[..100].to_vec()),
                ("f/test.npy", good(&[2, 4, 4])),
            ],
            data: "f",
            extra: &[],
            says: &["train.npy", "truncated"],
        },
        Bad {
            what: "grey data under --binarize none",
            files: vec![(
                "d.npz",
                npz_of(
                    good(&[8, 4, 4]),
                    npy_u8(&[2, 16], &[vec![0u8; 20], vec![9u8; 12]].concat()),
                ),
            )],
            data: "d.npz",
            extra: &["--binarize", "none"],
            says: &[
                "test images",
                "image 1, value 4",
                "is 9",
                "--binarize threshold",
            ],
        },
        Bad {
            what: "truncated MAT-file",
            files: vec![(
                "c.mat",
                std::fs::read(fixture("omniglot-tiny-plain.mat")).unwrap()[..900].to_vec(),
            )],
            data: "c.mat",
            extra: &[],
            says: &[
                "c.mat",
                "not a readable MAT v5 file",
                "longer than the file",
            ],
        },
    ];
    for case in cases {
        let tmp = tempfile::tempdir().unwrap();
        for (name, bytes) in &case.files {
            let p = tmp.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, bytes).unwrap();
        }
        let out = tmp.path().join("run");
        let data = tmp.path().join(case.data);
        let args = [
            &[
                "train",
                "--backend",
                "cpu",
                "--hidden",
                "4",
                "--latent",
                "2",
            ][..],
            &["--valid-size", "2", "--batch", "2", "--epochs", "1"],
            &["--data", arg(&data), "--out", arg(&out)],
            case.extra,
        ]
        .concat();
        let o = run(&args);
        assert_ne!(o.code, Some(0), "{}: {}", case.what, o.context(&args));
        for word in case.says {
            assert!(
                o.stderr.contains(word),
                "{}: no '{word}' in {}",
                case.what,
                o.stderr
            );
        }
        assert!(
            !o.stderr.contains("panicked"),
            "{}: {}",
            case.what,
            o.stderr
        );
        assert!(
            !out.exists(),
            "{}: the run directory was created",
            case.what
        );
    }
}

/// A 19 x 23 image (437 pixels: not square, not a multiple of 4) trains on both backends,
/// which agree on the first epoch.
#[test]
fn a_19_by_23_image_trains_alike_on_both_backends() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("odd.npz");
    let (h, w) = (19, 23);
    std::fs::write(
        &data,
        npz_bytes(
            &[
                ("train", npy_u8(&[24, h, w], &grey(24, h * w, 1))),
                ("test", npy_u8(&[4, h, w], &grey(4, h * w, 2))),
                ("valid", npy_u8(&[4, h, w], &grey(4, h * w, 3))),
            ],
            true,
        ),
    )
    .unwrap();
    let args = format!(
        "--data {} --hidden 16 --latent 4 --k 3 --batch 8 --epochs 2 --val-k 4",
        arg(&data)
    );
    let Some(runs) = train_on_cpu_and_gpu(&args, &["iwae"]) else {
        return;
    };
    for (e, c, g) in &runs {
        assert_agree(e, &c[1], &g[1], "train_objective", 1e-3);
        assert_agree(e, &c[1], &g[1], "val_lk", 1e-3);
    }
}

/// `uvae eval` binarizes the test images as the checkpoint was trained unless told: a
/// threshold run scores as `--binarize threshold`, not as the dynamic draws; a checkpoint
/// without the field (written before it existed) scores as dynamic.
#[test]
fn eval_binarizes_as_the_checkpoint_was_trained() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let data = t.join("grey.npz");
    std::fs::write(
        &data,
        npz_bytes(
            &[
                (
                    "train",
                    npy_u8(&[TRAIN, ROWS, COLS], &grey(TRAIN, ROWS * COLS, 1)),
                ),
                (
                    "test",
                    npy_u8(&[TEST, ROWS, COLS], &grey(TEST, ROWS * COLS, 2)),
                ),
            ],
            true,
        ),
    )
    .unwrap();
    let cfg = tiny_run(&data, t.join("run"), Binarization::Threshold, ROWS * COLS);
    trained(&cfg);
    let ckpt = cfg.out.join(train::CHECKPOINT_FILE);
    let eval = |extra: &[&str]| {
        let args = [
            &["eval", "--backend", "cpu", "--k", "4", "--json"][..],
            &["--data", arg(&data), "--checkpoint", arg(&ckpt)],
            extra,
        ]
        .concat();
        crate::common::cli::run_json(&args)
    };
    let default = eval(&[]);
    assert_eq!(default["binarize"], "threshold");
    assert_eq!(default["mean"], eval(&["--binarize", "threshold"])["mean"]);
    let dynamic = eval(&["--binarize", "dynamic"]);
    assert_eq!(dynamic["binarize"], "dynamic");
    assert_ne!(default["mean"], dynamic["mean"]);
    assert_eq!(default["active_units"].as_array().map(Vec::len), Some(1));
    // The same tensors without the rule in their metadata: an older checkpoint.
    let (params, _) = checkpoint::load(&ckpt).unwrap();
    let old = t.join("old.safetensors");
    checkpoint::save(&params, &Default::default(), &old).unwrap();
    let args = [
        &["eval", "--backend", "cpu", "--k", "4", "--json"][..],
        &["--data", arg(&data), "--checkpoint", arg(&old)],
    ]
    .concat();
    let v = crate::common::cli::run_json(&args);
    assert_eq!(
        (&v["binarize"], &v["mean"]),
        (&dynamic["binarize"], &dynamic["mean"])
    );
}
