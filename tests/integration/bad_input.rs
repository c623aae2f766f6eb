//! Bad input through the `uvae` binary: every case exits with a non-zero status and an
//! `error:` line that names the file or flag and what to do, and never panics. Small 8x8
//! IDX data sets keep every run instant. GPU cases run on lavapipe; without an adapter they
//! skip, except under CI=true, where a missing adapter fails.

use std::io::Write;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

use crate::common::cli::{
    arg as s, assert_untrained, run as uvae, run_env as uvae_env, run_success, words, Output,
};
use crate::common::have_gpu;

/// Asserts that `uvae args` fails cleanly with an error naming every one of `names`.
fn fails(args: &[&str], names: &[&str]) -> String {
    let o = uvae(args);
    check_failure(args, &o, names)
}

fn check_failure(args: &[&str], o: &Output, names: &[&str]) -> String {
    let ctx = o.context(args);
    assert_eq!(o.code, Some(1), "expected exit status 1: {ctx}");
    assert!(!o.stderr.contains("panicked"), "a panic: {ctx}");
    assert!(o.stderr.contains("error: "), "no error line: {ctx}");
    for n in names {
        assert!(o.stderr.contains(n), "the error does not name {n:?}: {ctx}");
    }
    o.stderr.clone()
}

fn succeeds(args: &[&str]) -> Output {
    let o = run_success(args);
    assert!(!o.stderr.contains("panicked"), "{}", o.stderr);
    o
}

fn idx_images(count: u32, rows: u32, cols: u32) -> Vec<u8> {
    let mut v = Vec::new();
    for word in [0x0803, count, rows, cols] {
        v.extend_from_slice(&word.to_be_bytes());
    }
    v.extend((0..count * rows * cols).map(|i| ((i * 97 + i / 7) % 256) as u8));
    v
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// A data folder of gzipped `side`x`side` images: 520 training and 20 test images (bench,
/// profile and grad-stats hold back 400 for validation).
fn data_dir(tmp: &TempDir, name: &str, side: u32) -> PathBuf {
    let dir = tmp.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let write = |file: &str, bytes: Vec<u8>| std::fs::write(dir.join(file), bytes).unwrap();
    write(
        "train-images-idx3-ubyte.gz",
        gzip(&idx_images(520, side, side)),
    );
    write(
        "t10k-images-idx3-ubyte.gz",
        gzip(&idx_images(20, side, side)),
    );
    dir
}

/// A temporary folder holding the data folder data/ of 8x8 images.
fn data8() -> (TempDir, PathBuf) {
    let tmp = TempDir::new().unwrap();
    let data = data_dir(&tmp, "data", 8);
    (tmp, data)
}

/// The flags of an instant CPU run on `data`.
fn tiny(data: &Path, out: &Path) -> Vec<String> {
    [
        "train",
        "--backend",
        "cpu",
        "--data",
        s(data),
        "--out",
        s(out),
        "--epochs",
        "1",
        "--batch",
        "20",
        "--k",
        "2",
        "--hidden",
        "8",
        "--latent",
        "2",
        "--val-k",
        "2",
        "--valid-size",
        "20",
        "--quiet",
    ]
    .map(String::from)
    .to_vec()
}

/// `base` then `extra`, where a flag of `extra` replaces the same flag (and its value) of
/// `base` (every flag of `tiny` but --quiet takes a value).
fn with<'a>(base: &'a [String], extra: &[&'a str]) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    let mut i = 0;
    while i < base.len() {
        let flag = base[i].as_str();
        if flag.starts_with("--") && flag != "--quiet" && extra.contains(&flag) {
            i += 2;
            continue;
        }
        out.push(flag);
        i += 1;
    }
    out.extend(extra.iter().copied());
    out
}

/// Asserts that the instant run on `data` fails cleanly, naming every one of `names`.
fn training_fails(tmp: &TempDir, data: &Path, names: &[&str]) {
    let out = tmp.path().join("run");
    fails(&with(&tiny(data, &out), &[]), names);
}

/// A checkpoint of the tiny 8x8 model, trained once per test that needs it: a temporary
/// folder holding its data folder and the checkpoint.
fn tiny_checkpoint() -> (TempDir, PathBuf, PathBuf) {
    let tmp = TempDir::new().unwrap();
    let data = data_dir(&tmp, "data8", 8);
    let out = tmp.path().join("run8");
    succeeds(&with(&tiny(&data, &out), &[]));
    (tmp, data, out.join("checkpoint.safetensors"))
}

// --- data files ---------------------------------------------------------------------------

#[test]
fn a_truncated_gzip_names_the_file() {
    let (tmp, data) = data8();
    let f = data.join("train-images-idx3-ubyte.gz");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    training_fails(
        &tmp,
        &data,
        &[
            "train-images-idx3-ubyte.gz",
            "truncated or corrupt gzip",
            "re-download",
        ],
    );
}

#[test]
fn a_corrupt_gzip_names_the_file() {
    let (tmp, data) = data8();
    let f = data.join("t10k-images-idx3-ubyte.gz");
    let mut bytes = std::fs::read(&f).unwrap();
    let n = bytes.len();
    for b in &mut bytes[12..n - 8] {
        *b ^= 0x5a;
    }
    std::fs::write(&f, &bytes).unwrap();
    training_fails(&tmp, &data, &["t10k-images-idx3-ubyte.gz", "gzip"]);
}

#[test]
fn a_wrong_idx_magic_names_the_file_and_the_expected_file() {
    let (tmp, data) = data8();
    // A label file (magic 0x801) where the images belong, uncompressed.
    std::fs::remove_file(data.join("train-images-idx3-ubyte.gz")).unwrap();
    let mut labels = vec![0, 0, 8, 1, 0, 0, 0, 120];
    labels.extend([0u8; 128]);
    std::fs::write(data.join("train-images-idx3-ubyte"), labels).unwrap();
    training_fails(
        &tmp,
        &data,
        &["train-images-idx3-ubyte", "magic", "images-idx3-ubyte(.gz)"],
    );
}

#[test]
fn a_header_that_disagrees_with_the_payload_names_the_file() {
    let (tmp, data) = data8();
    let mut bytes = idx_images(20, 8, 8);
    bytes.truncate(bytes.len() - 10);
    std::fs::write(data.join("t10k-images-idx3-ubyte.gz"), gzip(&bytes)).unwrap();
    training_fails(
        &tmp,
        &data,
        &[
            "t10k-images-idx3-ubyte.gz",
            "header says 20 images of 8x8",
            "truncated",
        ],
    );
}

#[test]
fn a_data_folder_without_the_files_names_data() {
    let tmp = TempDir::new().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    training_fails(&tmp, &empty, &["--data", "train-images-idx3-ubyte"]);
}

#[test]
fn train_and_test_images_of_different_sizes_are_refused() {
    let (tmp, data) = data8();
    std::fs::write(
        data.join("t10k-images-idx3-ubyte.gz"),
        gzip(&idx_images(20, 7, 7)),
    )
    .unwrap();
    training_fails(&tmp, &data, &["8x8", "7x7"]);
}

/// `uvae eval` of `ckpt` on the images in `data`, at K = 2 on the CPU.
fn eval_on<'a>(ckpt: &'a Path, data: &'a Path) -> Vec<&'a str> {
    let mut args = words("eval --backend cpu --k 2 --checkpoint");
    args.extend([s(ckpt), "--data", s(data)]);
    args
}

#[test]
fn train_follows_the_image_size_of_the_data() {
    let (tmp, data) = data8();
    let out = tmp.path().join("run");
    succeeds(&with(&tiny(&data, &out), &[]));
    let ckpt = out.join("checkpoint.safetensors");
    let o = succeeds(&eval_on(&ckpt, &data));
    assert!(o.stdout.contains("L_2 = "), "{}", o.stdout);
}

#[test]
fn images_of_another_size_than_the_checkpoint_are_refused() {
    let (tmp, _, ckpt) = tiny_checkpoint();
    let other = data_dir(&tmp, "data5", 5);
    let names = [s(&ckpt), "64-pixel", "5x5 = 25", "--data"];
    fails(&eval_on(&ckpt, &other), &names);
    let png = tmp.path().join("r.png");
    fails(
        &[
            "reconstruct",
            "--checkpoint",
            s(&ckpt),
            "--data",
            s(&other),
            "--out",
            s(&png),
        ],
        &names,
    );
    fails(
        &[
            "grad-stats",
            "--model",
            "vae",
            "--backend",
            "cpu",
            "--checkpoint",
            s(&ckpt),
            "--data",
            s(&other),
        ],
        &[s(&ckpt), "64-pixel", "--data"],
    );
}

// --- checkpoints --------------------------------------------------------------------------

fn eval_fails(ckpt: &Path, names: &[&str]) {
    let mut all = vec![s(ckpt)];
    all.extend(names);
    fails(
        &[
            "eval",
            "--backend",
            "cpu",
            "--checkpoint",
            s(ckpt),
            "--k",
            "2",
        ],
        &all,
    );
}

#[test]
fn a_truncated_checkpoint_is_refused() {
    let (_tmp, _, ckpt) = tiny_checkpoint();
    let bytes = std::fs::read(&ckpt).unwrap();
    for cut in [4, 100, bytes.len() - 7] {
        std::fs::write(&ckpt, &bytes[..cut]).unwrap();
        eval_fails(&ckpt, &["not a safetensors checkpoint, or is truncated"]);
    }
}

#[test]
fn a_file_that_is_not_safetensors_is_refused() {
    let tmp = TempDir::new().unwrap();
    let ckpt = tmp.path().join("notes.txt");
    std::fs::write(&ckpt, "these are my notes, not a checkpoint\n").unwrap();
    eval_fails(&ckpt, &["not a safetensors checkpoint", "uvae train"]);
    let png = tmp.path().join("s.png");
    fails(
        &["sample", "--checkpoint", s(&ckpt), "--out", s(&png)],
        &[s(&ckpt), "not a safetensors"],
    );
}

/// Tensors (name, shape, values) as a safetensors file.
fn write_tensors(path: &Path, tensors: &[(&str, Vec<usize>, Vec<f32>)]) {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                    .unwrap();
            (name.to_string(), view)
        })
        .collect();
    std::fs::write(path, safetensors::tensor::serialize(views, None).unwrap()).unwrap();
}

/// The tiny checkpoint's tensors, with `edit` applied.
fn edited(ckpt: &Path, edit: impl Fn(&mut Vec<(String, Vec<usize>, Vec<f32>)>)) {
    let bytes = std::fs::read(ckpt).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = st
        .tensors()
        .into_iter()
        .map(|(name, t)| {
            let v = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (name, t.shape().to_vec(), v)
        })
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    edit(&mut tensors);
    let refs: Vec<(&str, Vec<usize>, Vec<f32>)> = tensors
        .iter()
        .map(|(n, sh, v)| (n.as_str(), sh.clone(), v.clone()))
        .collect();
    write_tensors(ckpt, &refs);
}

/// The tiny checkpoint with `edit` applied to the shape and values of tensor `name`.
fn edited_tensor(ckpt: &Path, name: &str, edit: impl Fn(&mut Vec<usize>, &mut Vec<f32>)) {
    edited(ckpt, |t| {
        let (_, shape, values) = t.iter_mut().find(|(n, _, _)| n == name).unwrap();
        edit(shape, values);
    });
}

#[test]
fn a_checkpoint_with_a_missing_tensor_is_refused() {
    let (_tmp, _, ckpt) = tiny_checkpoint();
    edited(&ckpt, |t| t.retain(|(n, _, _)| n != "decoder.2.bias"));
    eval_fails(&ckpt, &["has no tensor decoder.2.bias"]);
    write_tensors(&ckpt, &[("weights", vec![2], vec![1.0, 2.0])]);
    eval_fails(
        &ckpt,
        &["lacks encoder.0.weight", "not a uvae VAE checkpoint"],
    );
}

#[test]
fn a_checkpoint_with_a_misshaped_tensor_is_refused() {
    let (_tmp, _, ckpt) = tiny_checkpoint();
    edited_tensor(&ckpt, "decoder.0.weight", |shape, values| {
        values.push(0.0);
        *shape = vec![values.len()];
    });
    eval_fails(&ckpt, &["tensor decoder.0.weight", "expected F32"]);
    edited_tensor(&ckpt, "encoder.0.weight", |shape, values| {
        *shape = vec![values.len()];
    });
    eval_fails(&ckpt, &["encoder.0.weight has shape", "[out, in]"]);
}

#[test]
fn a_checkpoint_with_non_finite_values_is_refused() {
    let (_tmp, _, ckpt) = tiny_checkpoint();
    edited_tensor(&ckpt, "encoder.2.bias", |_, values| {
        values[0] = f32::NAN;
        values[1] = f32::INFINITY;
    });
    eval_fails(
        &ckpt,
        &[
            "encoder.2.bias",
            "2 non-finite values",
            "earlier checkpoint",
        ],
    );
}

// --- the run directory --------------------------------------------------------------------

#[test]
fn an_out_holding_another_run_is_refused_unless_forced() {
    let (tmp, data) = data8();
    let out = tmp.path().join("run");
    let base = tiny(&data, &out);
    succeeds(&with(&base, &[]));
    let before = std::fs::read(out.join("checkpoint.safetensors")).unwrap();
    let err = fails(
        &with(&base, &["--estimator", "elbo", "--k", "1"]),
        &[s(&out), "--out", "another run", "estimator", "k", "--force"],
    );
    assert!(err.contains("estimator, k differ"), "{err}");
    let after = std::fs::read(out.join("checkpoint.safetensors")).unwrap();
    assert!(
        before == after,
        "a refused run must leave the old one intact"
    );
    // The same configuration again (other threads): replaced, with a notice.
    let o = succeeds(&with(&base, &["--threads", "1"]));
    assert!(
        o.stderr.contains("same configuration; replacing"),
        "{}",
        o.stderr
    );
    // --force replaces another configuration's run, saying so.
    let o = succeeds(&with(&base, &["--seed", "3", "--force"]));
    assert!(o.stderr.contains("replacing it (--force)"), "{}", o.stderr);
    // A checkpoint without a config.json is another program's state too.
    std::fs::remove_file(out.join("config.json")).unwrap();
    fails(
        &with(&base, &[]),
        &["checkpoint.safetensors but no config.json", "--force"],
    );
    std::fs::write(out.join("config.json"), "{not json").unwrap();
    fails(&with(&base, &[]), &["not a uvae run configuration"]);
}

// --- flags out of range -------------------------------------------------------------------

#[test]
fn train_flags_out_of_range_name_the_flag() {
    let (tmp, data) = data8();
    let out = tmp.path().join("run");
    let base = tiny(&data, &out);
    let cases: &[(&[&str], &[&str])] = &[
        (&["--k", "0"], &["--k 0", "at least 1"]),
        (&["--k", "100000000"], &["--k 100000000", "at most"]),
        (&["--estimator", "jvi", "--k", "1"], &["--k 1", "jvi"]),
        (&["--batch", "0"], &["--batch 0"]),
        (
            &["--batch", "1000"],
            &["--batch 1000", "500 training datapoints"],
        ),
        (&["--lr", "0"], &["--lr 0", "positive"]),
        (&["--lr", "-1"], &["--lr -1", "positive"]),
        (&["--lr", "NaN"], &["--lr NaN", "positive"]),
        (&["--epochs", "0"], &["--epochs 0"]),
        (
            &["--estimator", "mlmc-rr", "--mlmc-p", "0"],
            &["--mlmc-p 0", "(0, 1)"],
        ),
        (
            &["--estimator", "mlmc-rr", "--mlmc-p", "1"],
            &["--mlmc-p 1", "(0, 1)"],
        ),
        (
            &["--estimator", "mlmc-ss", "--mlmc-p", "1.5"],
            &["--mlmc-p 1.5"],
        ),
        (
            &["--estimator", "mlmc-ss", "--mlmc-i0", "70"],
            &["--mlmc-i0 70"],
        ),
        (
            &[
                "--estimator",
                "coupled-pimh",
                "--chain-k",
                "5",
                "--chain-m",
                "4",
            ],
            &["--chain-k 5", "--chain-m 4"],
        ),
        (&["--estimator", "coupled-pimh", "--lag", "0"], &["--lag 0"]),
        (
            &["--estimator", "coupled-pimh", "--max-iters", "4"],
            &["--max-iters 4", "--chain-m"],
        ),
        (
            &["--threads", "100000"],
            &["--threads 100000", "at most 1024"],
        ),
        (&["--val-k", "0"], &["--val-k 0"]),
        (&["--val-k", "99999999"], &["--val-k 99999999"]),
        (
            &["--valid-size", "520"],
            &["--valid-size 520", "leaves no training images"],
        ),
        (&["--valid-size", "600"], &["--valid-size 600"]),
        (&["--valid-size", "0"], &["--valid-size 0"]),
        (&["--train-limit", "0"], &["--train-limit 0"]),
        (&["--hidden", "0"], &["--hidden"]),
        (
            &["--hidden", "100000"],
            &["--hidden 100000", "at most 65536"],
        ),
        (&["--latent", "0"], &["--latent"]),
        (
            &["--hidden", "60000,60000"],
            &["--hidden/--latent", "parameters"],
        ),
        (&["--clip-encoder", "0"], &["--clip-encoder 0"]),
        (&["--estimator", "dreg", "--alpha", "inf"], &["--alpha inf"]),
        (&["--estimator", "nonsense"], &["--estimator", "nonsense"]),
        (
            &["--model", "toy", "--hidden", "3"],
            &["--hidden", "--model toy"],
        ),
        (
            &["--estimator", "sumo", "--encoder", "iwae"],
            &["--encoder-k 0", "--encoder iwae"],
        ),
        (
            &["--estimator", "sumo", "--encoder-k", "5"],
            &["--encoder-k", "--encoder dreg", "--encoder iwae"],
        ),
        (
            &[
                "--estimator",
                "iwae",
                "--encoder",
                "iwae",
                "--encoder-k",
                "5",
            ],
            &["--encoder", "sumo, mlmc-ss and mlmc-rr"],
        ),
        (&["--adam-eps", "0"], &["--adam-eps 0"]),
        (&["--test-k", "10"], &["--test-k", "--test-every"]),
        (&["--test-limit", "10"], &["--test-limit", "--test-every"]),
        (&["--test-every", "0"], &["--test-every 0"]),
        (&["--test-every", "1", "--test-k", "0"], &["--test-k 0"]),
        (
            &["--model", "toy", "--test-every", "1"],
            &["--test-every", "--model toy"],
        ),
        (
            &["--model", "toy", "--output-bias", "zero"],
            &["--output-bias", "--model toy"],
        ),
        (&["--schedule", "cosine"], &["--schedule", "linear"]),
    ];
    for (extra, names) in cases {
        let mut args = with(&base, extra);
        if args.contains(&"--model") {
            // The exact models fix their data and shape: the base's flags for them go.
            let fixed: &[&str] = if extra.contains(&"--hidden") {
                &["--data"]
            } else {
                &["--data", "--hidden", "--latent"]
            };
            for flag in fixed {
                let i = args.iter().position(|a| a == flag).unwrap();
                args.drain(i..i + 2);
            }
        }
        let o = uvae(&args);
        // clap's own errors (an unknown estimator) exit with 2.
        if o.code == Some(2) {
            assert!(!o.stderr.contains("panicked"));
            for n in names.iter() {
                assert!(o.stderr.contains(n), "{n:?} in {}", o.stderr);
            }
            continue;
        }
        check_failure(&args, &o, names);
    }
    assert_untrained(&out, "no case may train");
}

#[test]
fn eval_bench_profile_and_picture_flags_out_of_range_name_the_flag() {
    let (tmp, data, ckpt) = tiny_checkpoint();
    let (d, c) = (s(&data), s(&ckpt));
    let png = tmp.path().join("p.png");
    let p = s(&png);
    let cpu = ["--backend", "cpu", "--data", d];
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec!["eval", "--checkpoint", c, "--k", "0"], vec!["--k 0"]),
        (
            vec!["eval", "--checkpoint", c, "--k", "999999999"],
            vec!["--k 999999999"],
        ),
        (
            vec!["eval", "--checkpoint", c, "--limit", "0"],
            vec!["--limit 0"],
        ),
        (
            vec!["eval", "--checkpoint", c, "--threads", "100000"],
            vec!["--threads 100000"],
        ),
        (
            vec!["bench", "--steps", "0", "--configs", "iwae:2:10"],
            vec!["--steps 0"],
        ),
        (
            vec!["bench", "--repeats", "0", "--configs", "iwae:2:10"],
            vec!["--repeats 0"],
        ),
        (
            vec!["bench", "--configs", "iwae:2"],
            vec!["--configs", "estimator:k:batch"],
        ),
        (
            vec!["bench", "--configs", "iwae:x:10"],
            vec!["--configs", "'x' is not a number"],
        ),
        (
            vec!["bench", "--configs", "iwae:0:10"],
            vec!["--configs", "--k 0"],
        ),
        (
            vec!["bench", "--configs", "iwae:2:5000", "--eval-k", "0"],
            vec!["--configs", "--batch 5000", "120 training images"],
        ),
        (
            vec!["bench", "--configs", "iwae:2:10", "--eval-images", "0"],
            vec!["--eval-images 0"],
        ),
        (vec!["profile", "--steps", "0"], vec!["--steps 0"]),
        (vec!["profile", "--batch", "0"], vec!["--batch 0"]),
        (vec!["profile", "--batch", "100000"], vec!["--batch 100000"]),
        (vec!["profile", "--k", "0"], vec!["--k 0"]),
        (vec!["grad-stats", "--reps", "1"], vec!["--reps"]),
        (
            vec!["grad-stats", "--datapoint", "1000000"],
            vec!["--datapoint 1000000"],
        ),
        (
            vec!["grad-stats", "--model", "vae", "--datapoint", "50"],
            vec!["--datapoint 50"],
        ),
        (
            vec!["grad-stats", "--model", "ppca", "--dreg-check"],
            vec!["--dreg-check", "--model hgauss"],
        ),
        (
            vec![
                "grad-stats",
                "--model",
                "hgauss",
                "--dreg-check",
                "--k",
                "1",
            ],
            vec!["--k 1"],
        ),
        (
            vec!["figure", "snr", "--checkpoint", c, "--out", p],
            vec!["--checkpoint", "--model vae"],
        ),
        (
            vec!["figure", "snr", "--reps", "10", "--out", p],
            vec!["--reps 10"],
        ),
        (
            vec!["sample", "--checkpoint", c, "--n", "0", "--out", p],
            vec!["--n 0"],
        ),
        (
            vec!["sample", "--checkpoint", c, "--n", "100000", "--out", p],
            vec!["--n 100000"],
        ),
        (
            vec!["sample", "--checkpoint", c, "--cols", "0", "--out", p],
            vec!["--cols 0"],
        ),
        (
            vec!["sample", "--checkpoint", c, "--scale", "17", "--out", p],
            vec!["--scale 17"],
        ),
        (
            vec!["reconstruct", "--checkpoint", c, "--n", "0", "--out", p],
            vec!["--n 0"],
        ),
    ];
    for (mut args, names) in cases {
        let cmd = args[0];
        if matches!(cmd, "eval" | "bench" | "profile" | "reconstruct")
            || (cmd == "grad-stats" && args.contains(&"vae"))
        {
            args.extend(cpu);
        }
        fails(&args, &names);
    }
}

// --- GPU faults ---------------------------------------------------------------------------

#[test]
fn gpu_without_an_adapter_names_the_fix_and_auto_falls_back_in_one_line() {
    let (tmp, data) = data8();
    let out = tmp.path().join("run");
    let mut base = tiny(&data, &out);
    let i = base.iter().position(|a| a == "--backend").unwrap();
    base.drain(i..i + 2);
    // WGPU_BACKEND=metal: on this machine wgpu then sees no adapter at all.
    let no_gpu = [("WGPU_BACKEND", "metal")];
    let args = with(&base, &["--backend", "gpu"]);
    let o = uvae_env(&args, &no_gpu);
    check_failure(
        &args,
        &o,
        &[
            "no GPU adapter found",
            "mesa-vulkan-drivers",
            "--backend cpu",
        ],
    );
    let args = with(&base, &["--backend", "gpu", "--adapter", "nvidia"]);
    let o = uvae_env(&args, &no_gpu);
    check_failure(
        &args,
        &o,
        &["'nvidia' (--adapter)", "sees none", "--backend cpu"],
    );
    let o = uvae_env(&with(&base, &["--backend", "auto"]), &no_gpu);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let notices: Vec<&str> = o.stderr.lines().filter(|l| l.contains("notice")).collect();
    assert_eq!(notices.len(), 1, "{}", o.stderr);
    assert!(notices[0].contains("running on the CPU"), "{}", o.stderr);
    assert_eq!(o.stderr.lines().count(), 1, "one line only: {}", o.stderr);
}

#[test]
fn an_adapter_name_matching_nothing_lists_the_adapters() {
    if !have_gpu() {
        return;
    }
    let (tmp, _, ckpt) = tiny_checkpoint();
    let err = fails(
        &[
            "eval",
            "--backend",
            "gpu",
            "--adapter",
            "no-such-gpu",
            "--checkpoint",
            s(&ckpt),
            "--data",
            s(&tmp.path().join("data8")),
            "--k",
            "2",
        ],
        &["'no-such-gpu' (--adapter)", "the adapters are: "],
    );
    let listed = uvae(&["devices", "--json"]).stdout;
    let first: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let name = first[0]["name"].as_str().unwrap();
    assert!(err.contains(name), "{err}");
    fails(
        &["check", "--adapter", "no-such-gpu"],
        &["'no-such-gpu' (--adapter)"],
    );
}

#[test]
fn a_shape_beyond_the_gpu_limits_names_batch_and_k() {
    if !have_gpu() {
        return;
    }
    // 65,536 datapoints per step exceed the workgroup count a GPU step dispatches.
    let tmp = TempDir::new().unwrap();
    let data = tmp.path().join("big");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("train-images-idx3-ubyte.gz"),
        gzip(&idx_images(70_000, 2, 2)),
    )
    .unwrap();
    std::fs::write(
        data.join("t10k-images-idx3-ubyte.gz"),
        gzip(&idx_images(10, 2, 2)),
    )
    .unwrap();
    fails(
        &[
            "profile",
            "--backend",
            "gpu",
            "--data",
            s(&data),
            "--batch",
            "66000",
            "--k",
            "1",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--trace",
            s(&tmp.path().join("t.json")),
        ],
        &["--batch 66000", "65535"],
    );
}
