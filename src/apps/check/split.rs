//! Split-K GEMMs and the two-level reductions: the forward and backward passes at 201 sample
//! rows (3 datapoints x 67 samples) with every GEMM forced into 1, 3 or 13 slices of k (201
//! is a multiple of neither: the last slice is shorter) or split as the automatic choice
//! splits it, on a model whose widths suit neither GEMM tile (scalar kernel), one whose
//! widths are multiples of 4 (vec4 kernel) and that one with a 5-wide latent (vec4 kernel
//! with one operand loaded as scalars), each with 64-, 32- and 128-row GEMM tiles
//! (forced, or as the automatic choice picks them; 128-row tiles are never split). The
//! decoder's bias gradients are the row sums folded into its weight gradients' split; the
//! norms run with several partial sizes.

use super::{binary_data, compare, ParityRow};
use crate::backend::cpu::CpuBackend;
use crate::backend::gpu::{AdapterChoice, GpuBackend, GridConfig};
use crate::backend::{Backend, Noise};
use crate::estimators::{Estimator, EstimatorKind};
use crate::model::{Arch, Params};
use crate::rng::Stream;
use anyhow::Result;

/// (slices forced, or None for the automatic choice; parameters per norm partial; GEMM tile
/// rows forced, or None for the automatic choice).
type Config = (Option<usize>, Option<usize>, Option<usize>);
const SCALAR: [Config; 7] = [
    (None, None, Some(128)),
    (Some(1), None, Some(64)),
    (Some(3), Some(1024), Some(32)),
    (Some(13), Some(1 << 24), Some(64)),
    (Some(1), None, Some(32)),
    (None, None, None),
    (None, None, Some(64)),
];
const VEC4: [Config; 5] = [
    (None, Some(512), Some(128)),
    (Some(3), Some(512), Some(64)),
    (Some(3), Some(512), Some(32)),
    (None, None, None),
    (None, None, Some(64)),
];
const MIXED: [Config; 4] = [
    (None, None, Some(128)),
    (Some(3), Some(512), Some(32)),
    (Some(13), None, Some(64)),
    (None, None, None),
];

pub(super) fn rows(choice: &AdapterChoice) -> Result<Vec<ParityRow>> {
    let scalar = Arch {
        x_dim: 70,
        hidden: vec![33, 17],
        z_dim: 5,
        likelihood: Default::default(),
        top: None,
        cond: None,
    };
    let vec4 = Arch {
        x_dim: 72,
        hidden: vec![36, 20],
        z_dim: 4,
        likelihood: Default::default(),
        top: None,
        cond: None,
    };
    // The vec4 model with a 5-wide latent: the GEMMs into and out of z, and the encoder
    // head's weight gradient, load one operand as vec4s and the other as scalars.
    let mixed = Arch {
        z_dim: 5,
        ..vec4.clone()
    };
    let mut rows = model_rows(choice, &scalar, "scalar", &SCALAR)?;
    rows.extend(model_rows(choice, &vec4, "vec4", &VEC4)?);
    rows.extend(model_rows(choice, &mixed, "mixed", &MIXED)?);
    Ok(rows)
}

fn model_rows(
    choice: &AdapterChoice,
    arch: &Arch,
    kernel: &str,
    configs: &[Config],
) -> Result<Vec<ParityRow>> {
    let (batch, n) = (3, 67);
    let xd = arch.x_dim;
    let mean: Vec<f32> = (0..xd).map(|j| 0.1 + 0.8 * j as f32 / xd as f32).collect();
    let params = Params::init(arch, 5, Some(&mean));
    let layout = &params.layout;
    let mut gpu = GpuBackend::new(layout, &params.values, choice)?;
    let mut cpu = CpuBackend::new(layout, &params.values, 2)?;
    let x = binary_data(batch, xd, 23);
    let noise = Noise {
        seed: 41,
        stream: Stream::Eps,
        step: 1,
        first_datapoint: 0,
        first_sample: 0,
    };
    let lw_cpu = cpu.forward(&x, batch, n, &noise)?.to_vec();
    let enc = crate::model::reference::encode_batch(&params, &x, batch);
    let (eps_c, z_c) = super::forward::reference_latent(&enc, arch.z_dim, batch, n, &noise);
    let latent_cpu = [z_c, eps_c].concat();
    let co = Estimator::new(EstimatorKind::IwaeDreg, 0.0).coefficients(&lw_cpu, batch, n);
    let nc = cpu.backward(&co.a, &co.b, &co.c)?;
    let gc = cpu.gradient()?;
    let el = layout.encoder_len;
    let bias: Vec<usize> = layout
        .decoder
        .iter()
        .flat_map(|l| l.b..l.b + l.out)
        .collect();
    let mut rows = Vec::new();
    for &(slices, chunk, tile_rows) in configs {
        gpu.set_grid(GridConfig {
            force_slices: slices,
            norm_chunk: chunk,
            force_tile_rows: tile_rows,
            // k = 201 is under the automatic choice's shortest split: let it split here, so
            // the automatic slicing runs too.
            min_split_k: 0,
            ..GridConfig::default()
        });
        // z's rows are padded to whole vec4s (5 of 8 floats here), and the vec4 loads of the
        // GEMMs through z must keep the padding out.
        gpu.poison_latent_padding(batch, n)?;
        let lw_gpu = gpu.forward(&x, batch, n, &noise)?.to_vec();
        let ng = gpu.backward(&co.a, &co.b, &co.c)?;
        let gg = gpu.gradient()?;
        let plan = gpu.plan_dispatches(batch, n)?;
        let count = |kernel: &str| plan.iter().filter(|d| d.kernel == kernel).count();
        let sampled = count("gemm_vec4_sample");
        let gemms = count("gemm") + count("gemm_vec4") + sampled;
        let half = count("gemm_32") + count("gemm_vec4_32") + count("gemm_vec4_sample_32");
        let big = count("gemm_128") + count("gemm_vec4_128") + count("gemm_vec4_sample_128");
        let what = match slices {
            Some(s) => format!("{s} slices"),
            None => format!("auto, {} split", count("splitk_reduce")),
        };
        let vec4 = count("gemm_vec4")
            + count("gemm_vec4_32")
            + count("gemm_vec4_128")
            + sampled
            + count("gemm_vec4_sample_32")
            + count("gemm_vec4_sample_128");
        let what = match big {
            0 => format!(
                "{what}, {half} of {} GEMMs ({vec4} vec4) in 32-row tiles",
                gemms + half
            ),
            _ => format!("{what}, {big} GEMMs ({vec4} vec4) in 128-row tiles"),
        };
        let other = gemms + half + big;
        let forced = match tile_rows {
            Some(32) => half,
            Some(64) => gemms,
            Some(128) => big,
            _ => other,
        };
        if forced != other {
            anyhow::bail!("split-K {kernel} {what}: the plan ignores --tile rows {tile_rows:?}");
        }
        let partials = plan
            .iter()
            .find(|d| d.kernel == "grad_norm_partials")
            .map_or(0, |d| d.workgroups);
        let name = |q: &str| format!("split-K {kernel} {what}: {q}");
        // z and eps as the first decoder GEMM drew and stored them, in this config's tile.
        let (eps_g, z_g, _) = gpu.read_forward_state()?;
        rows.push(compare(
            &name("z, eps drawn in decoder.0's GEMM"),
            &[z_g, eps_g].concat(),
            &latent_cpu,
            1e-5,
            1e-4,
        ));
        rows.push(compare(&name("log-weights"), &lw_gpu, &lw_cpu, 1e-4, 1e-5));
        rows.push(compare(
            &name("decoder gradient"),
            &gg[el..],
            &gc[el..],
            1e-5,
            1e-3,
        ));
        let pick = |g: &[f32]| bias.iter().map(|&i| g[i]).collect::<Vec<f32>>();
        rows.push(compare(
            &name("decoder bias (row sums)"),
            &pick(&gg),
            &pick(&gc),
            1e-5,
            1e-3,
        ));
        rows.push(compare(
            &name("encoder gradient"),
            &gg[..el],
            &gc[..el],
            1e-5,
            1e-3,
        ));
        rows.push(compare(
            &format!("optim: norms from {partials} partials ({kernel} {what})"),
            &[ng.encoder as f32, ng.decoder as f32],
            &[nc.encoder as f32, nc.decoder as f32],
            1e-5,
            1e-4,
        ));
    }
    Ok(rows)
}
