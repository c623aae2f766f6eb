//! The dispatch structure of the GPU training step, read from the recorded plan (nothing is
//! timed, nothing run): at K = 50, batch 100 on the default model (784-200-200-50) every
//! dispatch of at least 200 MFLOP launches enough workgroups to fill a 132-SM GPU four times
//! over, and the step stays within a stated number of dispatches. The plan is built on
//! whatever adapter wgpu finds (lavapipe on CI machines); with CI=true a missing adapter is a
//! failure, never a skip.

use unbiased_vae::apps::profile::DispatchStructure;
use unbiased_vae::backend::gpu::{GpuBackend, GridConfig};
use unbiased_vae::backend::DispatchInfo;
use unbiased_vae::model::{Arch, Params};

/// Dispatches of one K = 50, batch 100 IWAE step. Before split-K and the two-level
/// reductions: 30 (one per GEMM, six bias column sums, one norms pass); with them, 39 (eleven
/// split GEMMs add a reduce each, the decoder's three bias gradients fold into their weight
/// gradients' reduces, the norms take a partials pass and a total); now 29: the norms'
/// total, Adam and the running statistics are one dispatch (`adam_step`), 32-row tiles
/// give the 5,000-row GEMMs of n = 200 their 628 workgroups without a split and its reduce,
/// and k under 1,024 (the encoder's GEMMs, the decoder's input gradients) is never split;
/// now 28: z is drawn inside the first decoder GEMM's loads instead of by `sample_z`.
/// A training run whose images live on the device adds one `binarize` dispatch in front
/// (replacing the minibatch's 313 KB upload), which this backend, holding none, leaves out.
const MAX_DISPATCHES: usize = 28;
const COMPUTE_UNITS: usize = 132;

use crate::common::{any_adapter, arch, have_gpu};

fn backend(arch: &Arch, grid: GridConfig) -> GpuBackend {
    let params = Params::init(arch, 0, None);
    let mut gpu =
        GpuBackend::new(&params.layout, &params.values, &any_adapter()).expect("GPU backend");
    gpu.set_grid(grid);
    gpu
}

fn plan(arch: &Arch, grid: GridConfig, batch: usize, n: usize) -> Vec<DispatchInfo> {
    let d = backend(arch, grid)
        .plan_dispatches(batch, n)
        .expect("plan builds");
    assert!(!d.is_empty(), "a {batch}x{n} step fits one pass");
    d
}

#[test]
fn default_model_step_fills_132_compute_units() {
    if !have_gpu() {
        return;
    }
    let grid = GridConfig {
        compute_units: COMPUTE_UNITS,
        ..Default::default()
    };
    let d = plan(&Arch::burda_mnist(), grid, 100, 50);
    let s = DispatchStructure::new(d.clone(), COMPUTE_UNITS);
    println!("{}", s.format_table());
    let big: Vec<&DispatchInfo> = d.iter().filter(|x| x.flops >= 2e8).collect();
    assert!(big.len() >= 6, "the decoder's six big GEMMs: {big:?}");
    for x in &big {
        assert!(
            x.workgroups >= 4 * COMPUTE_UNITS as u64,
            "{} launches {} workgroups, fewer than 4 x {COMPUTE_UNITS}",
            x.label,
            x.workgroups
        );
    }
    assert_eq!(s.big_below_four_per_unit, 0);
    // z is drawn in the first decoder GEMM's loads: no dispatch of its own samples it.
    let first = d
        .iter()
        .position(|x| x.label.starts_with("decoder.0 forward"))
        .expect("the first decoder GEMM");
    assert!(
        d[first].kernel.starts_with("gemm_vec4_sample"),
        "{:?}",
        d[first]
    );
    assert!(
        !d.iter().any(|x| x.kernel.starts_with("sample_z")),
        "{:?}",
        d.iter().map(|x| &x.kernel).collect::<Vec<_>>()
    );
    assert!(
        d.len() <= MAX_DISPATCHES,
        "{} dispatches, at most {MAX_DISPATCHES} expected",
        d.len()
    );
    // The reductions over the 5,000 sample rows are split: the weight gradients' k, the
    // decoder's bias gradients (folded into them) and the norms.
    for layer in ["decoder.0", "decoder.2", "decoder.4"] {
        let wg = d
            .iter()
            .find(|x| x.label.starts_with(&format!("{layer} weight grad")))
            .expect("weight gradient");
        assert!(wg.label.contains(" split "), "{}", wg.label);
        assert!(
            d.iter()
                .any(|x| x.label
                    == format!("{layer} weight grad reduce {} slices + bias", wg.count[2])),
            "{layer}: a reduce that writes the bias gradient"
        );
        assert!(!d
            .iter()
            .any(|x| x.label.starts_with(&format!("{layer} bias grad"))));
    }
    let partials = d
        .iter()
        .find(|x| x.kernel == "grad_norm_partials")
        .expect("norm partials");
    assert!(partials.workgroups >= 4 * COMPUTE_UNITS as u64);
    // Every split GEMM is followed by its reduce.
    for (i, x) in d.iter().enumerate() {
        if x.label.contains(" split ") {
            assert_eq!(d[i + 1].kernel, "splitk_reduce", "after {}", x.label);
        }
    }
}

/// Short reductions are not split: at batch 3 x 7 samples and a small model no GEMM reaches
/// two minimum-length slices, so the plan is one dispatch per GEMM as before.
#[test]
fn small_shapes_are_not_split() {
    if !have_gpu() {
        return;
    }
    let d = plan(&arch(70, &[33, 17], 5), GridConfig::default(), 3, 7);
    assert!(!d.iter().any(|x| x.kernel == "splitk_reduce"), "{d:?}");
    assert_eq!(d.iter().filter(|x| x.kernel == "column_sums").count(), 6);
}
