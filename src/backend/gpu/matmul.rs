//! Host side of shaders/matmul.wgsl: the GEMM uniform, the choice between the scalar and the
//! vec4 kernel, the operands' extents checked against their buffers, and a GEMM's dispatches
//! (whole or split along k). The MLP passes built from them are in mlp.rs.

use super::dispatch::{groups_1d, DispatchSpec, Res, UniformArena};
use super::grid::GridConfig;
use super::pipelines::PipelineId;
use super::shaders::{
    FLAG_A_KCONTIG, FLAG_A_SCALAR, FLAG_BIAS, FLAG_B_KCONTIG, FLAG_B_SCALAR, FLAG_LIK_BERNOULLI,
    FLAG_ROW_SUMS, FLAG_SCALE_K, FLAG_TANH_GRAD,
};
use super::vae::noise_binding;
use bytemuck::{Pod, Zeroable};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
pub(super) struct GemmU {
    pub(super) m: u32,
    pub(super) n: u32,
    pub(super) k: u32,
    pub(super) flags: u32,
    pub(super) a_off: u32,
    pub(super) a_rs: u32,
    pub(super) a_cs: u32,
    pub(super) e_off: u32,
    pub(super) b_off: u32,
    pub(super) b_rs: u32,
    pub(super) b_cs: u32,
    pub(super) e_rs: u32,
    pub(super) c_off: u32,
    pub(super) c_rs: u32,
    pub(super) c_cs: u32,
    /// Split-K: the length of each slice of k (0: unsplit).
    pub(super) k_slice: u32,
    pub(super) alpha: f32,
    pub(super) beta: f32,
    /// Split-K: the number of slices.
    pub(super) slices: u32,
    /// Split-K with FLAG_ROW_SUMS: where in C the row sums go.
    pub(super) bias_off: u32,
    /// Sample rows per datapoint: row r scores x row r / samples under FLAG_LIK_BERNOULLI,
    /// and draws datapoint r / samples's normals in a sampled GEMM.
    pub(super) samples: u32,
    /// A sampled GEMM: the normals per sample row, and where this layer's start among them.
    pub(super) noise_dim: u32,
    pub(super) eps_off: u32,
    /// A sampled GEMM: 1 when the head has a row per sample row, 0 per datapoint.
    pub(super) head_per_row: u32,
}

/// A latent layer z = mu + sigma eps drawn inside the loads of the GEMM that first multiplies
/// it (the `sampled_a` kernels), instead of by a dispatch of its own before it. The GEMM's A
/// is z, which its first column of tiles stores (with eps) for the kernels after it.
#[derive(Clone, Copy)]
pub(super) struct LatentDraw<'a> {
    /// The pass's noise address (vae.rs, NoiseU).
    pub noise: &'a wgpu::Buffer,
    /// mu and log sigma, [heads, 2 k].
    pub head: &'a wgpu::Buffer,
    /// The head has a row per sample row (q(z2 | z1)), not per datapoint.
    pub head_per_row: bool,
    /// [rows, noise_dim]: every sample row's normals; this layer's start at `eps_off`.
    pub eps: &'a wgpu::Buffer,
    pub noise_dim: usize,
    pub eps_off: usize,
    /// Sample rows per datapoint.
    pub samples: usize,
}

impl LatentDraw<'_> {
    /// The head rows `m` sample rows read.
    fn heads(&self, m: usize) -> usize {
        match self.head_per_row {
            true => m,
            false => m.div_ceil(self.samples),
        }
    }
}

/// The GEMM kernel for `u` in tiles of `tile_m` rows: the vec4 one, with its layout flags,
/// when at least one operand is contiguous along one dimension and has its other stride
/// and offset multiples of 4 (an operand that has not loads scalars there), else the scalar
/// one.
fn gemm_kernel(u: &mut GemmU, tile_m: usize) -> PipelineId {
    // (scalar, vec4) kernels of each tile.
    let (scalar, vec4) = match tile_m {
        32 => (PipelineId::GemmHalf, PipelineId::GemmVec4Half),
        128 => (PipelineId::GemmBig, PipelineId::GemmVec4Big),
        _ => (PipelineId::Gemm, PipelineId::GemmVec4),
    };
    let a = vec4_layout(u.a_off, (u.a_cs, u.a_rs), (u.a_rs, u.a_cs));
    let b = vec4_layout(u.b_off, (u.b_rs, u.b_cs), (u.b_cs, u.b_rs));
    if a.is_none() && b.is_none() {
        return scalar;
    }
    u.flags |= layout_flag(a, FLAG_A_KCONTIG, FLAG_A_SCALAR);
    u.flags |= layout_flag(b, FLAG_B_KCONTIG, FLAG_B_SCALAR);
    vec4
}

/// The vec4 kernel's flag for an operand's [`vec4_layout`]: `kcontig` along k, none along
/// the other dimension, `scalar` when it loads scalars.
fn layout_flag(layout: Option<bool>, kcontig: u32, scalar: u32) -> u32 {
    match layout {
        Some(true) => kcontig,
        Some(false) => 0,
        None => scalar,
    }
}

/// How an operand at `off` loads vec4s: Some(true) along k, Some(false) along its other
/// dimension, None not at all. `along_k` and `along_other` are (stride along that
/// dimension, the other stride): vec4s along a dimension need unit stride there and the
/// other stride and the offset multiples of 4, so each is aligned. The extent need not be
/// a multiple of 4 (a padded latent's 50 of 52): the kernel zeroes the lanes past it.
fn vec4_layout(off: u32, along_k: (u32, u32), along_other: (u32, u32)) -> Option<bool> {
    let fits = |(unit, other): (u32, u32)| unit == 1 && other.is_multiple_of(4);
    if !off.is_multiple_of(4) {
        None
    } else if fits(along_k) {
        Some(true)
    } else if fits(along_other) {
        Some(false)
    } else {
        None
    }
}

/// The last element of a [rows, cols] operand at `off` with strides (rs, cs), None when it
/// has no element.
pub(super) fn last_element(off: u32, rows: u32, rs: u32, cols: u32, cs: u32) -> Option<u64> {
    (rows > 0 && cols > 0)
        .then(|| off as u64 + (rows as u64 - 1) * rs as u64 + (cols as u64 - 1) * cs as u64)
}

/// Asserts that `last` (an element index) lies inside `buf`. The GEMM family runs without
/// wgpu's runtime bounds checks, so this check at record time is what keeps a wrong plan
/// from reading or writing outside its buffers; it fails on a bug here, never on input.
pub(super) fn check_extent(label: &str, operand: &str, buf: &wgpu::Buffer, last: Option<u64>) {
    check_len(label, operand, buf.size() / 4, last);
}

fn check_len(label: &str, operand: &str, len: u64, last: Option<u64>) {
    if let Some(last) = last {
        assert!(
            last < len,
            "{label}: operand {operand} reaches element {last} of a {len}-float buffer"
        );
    }
}

/// [`check_extent`] for A, B and the epilogue operand of `u` (C is the caller's: it depends
/// on whether k is split).
fn check_operands(label: &str, u: &GemmU, ops: &GemmOperands) {
    let (a, b, e) = (ops.a, ops.b, ops.e);
    check_extent(
        label,
        "A",
        a,
        last_element(u.a_off, u.m, u.a_rs, u.k, u.a_cs),
    );
    check_extent(
        label,
        "B",
        b,
        last_element(u.b_off, u.k, u.b_rs, u.n, u.b_cs),
    );
    if u.flags & FLAG_BIAS != 0 {
        // A bias row per datapoint when e_rs is set (matmul.wgsl, BIAS).
        let rows = match u.e_rs {
            0 => 1,
            _ => u.m.div_ceil(u.samples.max(1)),
        };
        check_extent(
            label,
            "bias",
            e,
            last_element(u.e_off, rows, u.e_rs, u.n, 1),
        );
    }
    if u.flags & FLAG_SCALE_K != 0 {
        check_extent(label, "scale", e, last_element(u.e_off, 1, 0, u.k, 1));
    }
    if u.flags & FLAG_TANH_GRAD != 0 {
        check_extent(
            label,
            "activations",
            e,
            last_element(u.e_off, u.m, u.e_rs, u.n, 1),
        );
    }
}

/// The sampled GEMM kernel for `u` in tiles of `tile_m` rows: A (drawn) stages vec4s along
/// k whatever z's stride; B loads vec4s when its layout allows.
fn sampled_kernel(u: &mut GemmU, tile_m: usize) -> PipelineId {
    let b = vec4_layout(u.b_off, (u.b_rs, u.b_cs), (u.b_cs, u.b_rs));
    u.flags |= FLAG_A_KCONTIG | layout_flag(b, FLAG_B_KCONTIG, FLAG_B_SCALAR);
    match tile_m {
        32 => PipelineId::GemmVec4SampledHalf,
        128 => PipelineId::GemmVec4SampledBig,
        _ => PipelineId::GemmVec4Sampled,
    }
}

/// Sets `u`'s sampling fields from `draw` and checks the extents of the head it reads and
/// of eps it writes (z's is A's, checked with the other operands).
fn prepare_draw(label: &str, u: &mut GemmU, draw: &LatentDraw) {
    assert!(
        u.flags & FLAG_LIK_BERNOULLI == 0 || u.samples as usize == draw.samples,
        "{label}: the likelihood's and the draw's samples per datapoint differ"
    );
    u.samples = draw.samples as u32;
    u.noise_dim = draw.noise_dim as u32;
    u.eps_off = draw.eps_off as u32;
    u.head_per_row = draw.head_per_row as u32;
    let heads = draw.heads(u.m as usize) as u32;
    let head_last = last_element(0, heads, 2 * u.k, 2 * u.k, 1);
    check_extent(label, "head", draw.head, head_last);
    let eps_last = last_element(u.eps_off, u.m, u.noise_dim, u.k, 1);
    check_extent(label, "eps", draw.eps, eps_last);
}

fn gemm_count(m: usize, n: usize, tile_m: usize) -> [u32; 3] {
    [n.div_ceil(64) as u32, m.div_ceil(tile_m) as u32, 1]
}

/// How the GEMMs of a plan split k: the grid setting and the scratch the slices write to;
/// and the buffers every GEMM binds for the fused likelihood (used under FLAG_LIK_BERNOULLI).
#[derive(Clone, Copy)]
pub(super) struct SplitK<'a> {
    pub grid: GridConfig,
    pub scratch: &'a wgpu::Buffer,
    /// Floats the scratch holds.
    pub floats: usize,
    /// The minibatch x [batch, x_dim].
    pub x: &'a wgpu::Buffer,
    /// [rows, ceil(x_dim / 64)]: the likelihood's row sums per column tile.
    pub lik_part: &'a wgpu::Buffer,
}

/// A GEMM's buffers: C = op(A) op(B) (strides in its [`GemmU`]), and the epilogue operand
/// E (a bias row, a scale per k, or the activations of a tanh backward).
#[derive(Clone, Copy)]
pub(super) struct GemmOperands<'a> {
    pub a: &'a wgpu::Buffer,
    pub b: &'a wgpu::Buffer,
    pub c: &'a wgpu::Buffer,
    pub e: &'a wgpu::Buffer,
}

/// The dispatches of a plan as they are built (bound once its arena is uploaded), with
/// what every GEMM among them needs: the arena its uniform goes to and how it splits k.
pub(super) struct SpecList<'a, 'r> {
    pub arena: &'r mut UniformArena,
    pub split: SplitK<'a>,
    pub specs: Vec<DispatchSpec<'a>>,
}

impl<'a, 'r> SpecList<'a, 'r> {
    pub(super) fn new(arena: &'r mut UniformArena, split: SplitK<'a>) -> Self {
        SpecList {
            arena,
            split,
            specs: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, spec: DispatchSpec<'a>) {
        self.specs.push(spec);
    }

    /// The dispatches of a GEMM of `u` (scalar or vec4 kernel, whichever its layout allows)
    /// over `ops`: one dispatch, or, when the split cuts k into slices, the sliced GEMM into
    /// the scratch and the reduce that applies the epilogue. `bias_off`: fold the row sums
    /// of A (scaled as the product scales it) into the split, written to C[bias_off + row]
    /// with the same alpha and beta. Returns whether it did (the caller then needs no bias
    /// dispatch). With `draw`, A is the latent z drawn in the GEMM's loads and `ops.a` the
    /// buffer it is stored to.
    pub(super) fn gemm(
        &mut self,
        mut u: GemmU,
        ops: GemmOperands<'a>,
        label: String,
        bias_off: Option<usize>,
        draw: Option<&LatentDraw<'a>>,
    ) -> bool {
        let (arena, split, out) = (&mut *self.arena, &self.split, &mut self.specs);
        let GemmOperands { c, e, .. } = ops;
        let (m, n, k) = (u.m as usize, u.n as usize, u.k as usize);
        let tile_m = split.grid.tile_rows(m, n);
        assert!(
            super::grid::TILE_ROWS.contains(&tile_m),
            "{label}: {tile_m}-row tiles"
        );
        let pipeline = match draw {
            Some(d) => {
                prepare_draw(&label, &mut u, d);
                sampled_kernel(&mut u, tile_m)
            }
            None => gemm_kernel(&mut u, tile_m),
        };
        let label = match draw {
            Some(_) => format!("{label} + sample z"),
            None => label,
        };
        check_operands(&label, &u, &ops);
        check_extent(
            &label,
            "C",
            c,
            last_element(u.c_off, u.m, u.c_rs, u.n, u.c_cs),
        );
        let mut count = gemm_count(m, n, tile_m);
        let flops = 2.0 * m as f64 * n as f64 * k as f64;
        let lik = u.flags & FLAG_LIK_BERNOULLI != 0;
        if lik {
            let last_x = (m - 1) / u.samples as usize * n + n - 1;
            check_extent(&label, "x", split.x, Some(last_x as u64));
            let last_part = m * n.div_ceil(64) - 1;
            check_extent(
                &label,
                "likelihood partials",
                split.lik_part,
                Some(last_part as u64),
            );
        }
        // The fused likelihood needs whole sums over k, and 128-row tiles keep no row sums
        // (they are taken only where the grid is large without a split): never split.
        let sliced = match lik || tile_m == 128 {
            true => None,
            false => split
                .grid
                .split_k(m, n, k, tile_m, bias_off.is_some(), split.floats),
        };
        let Some((len, slices)) = sliced else {
            let slot = arena.push(&u);
            // x (read per datapoint) and the partials written.
            let lik_words = match lik {
                true => (m.div_ceil(u.samples as usize) * n + m * n.div_ceil(64)) as f64,
                false => 0.0,
            };
            out.push(DispatchSpec {
                pipeline,
                bindings: gemm_bindings(slot, ops, split, draw),
                count,
                label,
                flops,
                bytes: gemm_bytes(&u) + 4.0 * (lik_words + draw_words(&u, draw)),
            });
            return false;
        };
        u.k_slice = len as u32;
        u.slices = slices as u32;
        let rows = match bias_off {
            Some(off) => {
                u.flags |= FLAG_ROW_SUMS;
                u.bias_off = off as u32;
                m
            }
            None => 0,
        };
        let partial_words = (slices * (m * n + rows)) as f64;
        check_extent(
            &label,
            "split-K scratch",
            split.scratch,
            Some(partial_words as u64 - 1),
        );
        if rows > 0 {
            check_extent(
                &label,
                "row sums",
                c,
                last_element(u.bias_off, u.m, 1, 1, 0),
            );
        }
        // The sliced product and the reduce share one uniform.
        let slot = arena.push(&u);
        count[2] = slices as u32;
        out.push(DispatchSpec {
            pipeline,
            bindings: gemm_bindings(
                slot,
                GemmOperands {
                    c: split.scratch,
                    ..ops
                },
                split,
                draw,
            ),
            count,
            label: format!("{label} split {slices}x{len}"),
            flops,
            // A, B (and the scale) once, the partials written.
            bytes: 4.0 * (operand_words(&u) + partial_words + draw_words(&u, draw)),
        });
        let bias = if rows > 0 { " + bias" } else { "" };
        out.push(DispatchSpec {
            pipeline: PipelineId::SplitkReduce,
            bindings: vec![
                (0, Res::Slot(slot.0, slot.1)),
                (1, Res::Buf(split.scratch)),
                (3, Res::Buf(c)),
                (4, Res::Buf(e)),
            ],
            count: groups_1d(m * n + rows, 256),
            label: format!("{} reduce {slices} slices{bias}", label_head(&label)),
            flops: partial_words,
            // The partials read, C written (and read under beta), the epilogue operand.
            bytes: 4.0 * (partial_words + output_words(&u, m * n + rows) + epilogue_words(&u)),
        });
        true
    }
}

/// The label up to its shape: "decoder.4 weight grad [..]" -> "decoder.4 weight grad".
fn label_head(label: &str) -> &str {
    label.split(" [").next().unwrap_or(label).trim_end()
}

/// A GEMM's bindings; a sampled one binds no A but the draw's uniform and buffers, and z
/// (`a`) to store.
fn gemm_bindings<'a>(
    slot: (u64, u64),
    ops: GemmOperands<'a>,
    split: &SplitK<'a>,
    draw: Option<&LatentDraw<'a>>,
) -> Vec<(u32, Res<'a>)> {
    let GemmOperands { a, b, c, e } = ops;
    let mut out = vec![
        (0, Res::Slot(slot.0, slot.1)),
        (2, Res::Buf(b)),
        (3, Res::Buf(c)),
        (4, Res::Buf(e)),
        (5, Res::Buf(split.x)),
        (6, Res::Buf(split.lik_part)),
    ];
    match draw {
        Some(d) => out.extend([
            (7, noise_binding(d.noise)),
            (8, Res::Buf(d.head)),
            (9, Res::Buf(d.eps)),
            (10, Res::Buf(a)),
        ]),
        None => out.insert(1, (1, Res::Buf(a))),
    }
    out
}

/// Words a sampled GEMM moves besides those of a read A: the head read, eps and z written
/// (m k more than the A it does not read).
fn draw_words(u: &GemmU, draw: Option<&LatentDraw>) -> f64 {
    let Some(d) = draw else {
        return 0.0;
    };
    let (m, k) = (u.m as usize, u.k as usize);
    (d.heads(m) * 2 * k + m * k) as f64
}

/// Words of the epilogue operand a GEMM's store reads: a bias row or a tanh backward's
/// activations.
fn epilogue_words(u: &GemmU) -> f64 {
    let (m, n) = (u.m as f64, u.n as f64);
    let mut w = 0.0;
    if u.flags & FLAG_BIAS != 0 {
        w += n;
    }
    if u.flags & FLAG_TANH_GRAD != 0 {
        w += m * n;
    }
    w
}

/// Bytes a GEMM of `u` reads and writes: A, B and C once, C again under beta, and its
/// epilogue operand (a bias row, a scale per k, or the activations of a tanh backward).
fn gemm_bytes(u: &GemmU) -> f64 {
    4.0 * (operand_words(u) + output_words(u, u.m as usize * u.n as usize) + epilogue_words(u))
}

/// Words of A and B, and of the scale per k under SCALE_K.
fn operand_words(u: &GemmU) -> f64 {
    let (m, n, k) = (u.m as f64, u.n as f64, u.k as f64);
    let scale = if u.flags & FLAG_SCALE_K != 0 { k } else { 0.0 };
    m * k + k * n + scale
}

/// Words of `outputs` results written, and read again under beta.
fn output_words(u: &GemmU, outputs: usize) -> f64 {
    outputs as f64 * if u.beta != 0.0 { 2.0 } else { 1.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_element_follows_the_strides() {
        // A [3, 5] block of a row-major [.., 8] matrix at offset 2: last at 2 + 2*8 + 4.
        assert_eq!(last_element(2, 3, 8, 5, 1), Some(22));
        // Its transpose view (column-major strides) ends at the same element.
        assert_eq!(last_element(2, 5, 1, 3, 8), Some(22));
        assert_eq!(last_element(7, 0, 8, 5, 1), None);
        assert_eq!(last_element(7, 3, 8, 0, 1), None);
    }

    /// The default model's GEMMs through its 50-wide latent (z's rows padded to 52), 5,000
    /// sample rows; the 200 x 50 weight W1 is at offset 8.
    #[test]
    fn latent_gemms_load_their_aligned_operands_as_vec4s() {
        let kernel = |u: GemmU| {
            let mut u = u;
            let id = gemm_kernel(&mut u, 64);
            (id, u.flags)
        };
        // z . W1^T: z along k (its last vec4 half past k = 50), W1^T scalar.
        let forward = GemmU {
            m: 5000,
            n: 200,
            k: 50,
            a_rs: 52,
            a_cs: 1,
            b_off: 8,
            b_rs: 1,
            b_cs: 50,
            ..Default::default()
        };
        assert_eq!(
            kernel(forward),
            (PipelineId::GemmVec4, FLAG_A_KCONTIG | FLAG_B_SCALAR)
        );
        // Unpadded, neither operand is aligned.
        assert_eq!(
            kernel(GemmU {
                a_rs: 50,
                ..forward
            }),
            (PipelineId::Gemm, 0)
        );
        // dz = delta [5000, 200] . W1: A along k, B scalar.
        let dz = GemmU {
            m: 5000,
            n: 50,
            k: 200,
            a_rs: 200,
            a_cs: 1,
            b_off: 8,
            b_rs: 50,
            b_cs: 1,
            c_rs: 52,
            c_cs: 1,
            ..Default::default()
        };
        assert_eq!(
            kernel(dz),
            (PipelineId::GemmVec4, FLAG_A_KCONTIG | FLAG_B_SCALAR)
        );
        // dW1 = delta^T [200, 5000] . z: A along m, z along n.
        let dw = GemmU {
            m: 200,
            n: 50,
            k: 5000,
            a_rs: 1,
            a_cs: 200,
            b_rs: 52,
            b_cs: 1,
            ..Default::default()
        };
        assert_eq!(kernel(dw), (PipelineId::GemmVec4, 0));
        assert_eq!(
            kernel(GemmU { b_rs: 50, ..dw }),
            (PipelineId::GemmVec4, FLAG_B_SCALAR)
        );
        // An aligned operand at an offset that is not a multiple of 4 loads scalars.
        assert_eq!(kernel(GemmU { a_off: 2, ..dz }), (PipelineId::Gemm, 0));
        assert_eq!(
            kernel(GemmU { a_off: 2, ..dw }),
            (PipelineId::GemmVec4, FLAG_A_SCALAR)
        );
    }

    /// A drawn A stages vec4s along k whatever z's stride; B keeps its own layout; the
    /// tile picks the variant.
    #[test]
    fn sampled_gemms_take_the_sampled_variant_of_their_tile() {
        // z . W1^T over 5,000 rows, z unpadded (50 floats a row), W1^T scalar.
        let forward = GemmU {
            m: 5000,
            n: 200,
            k: 50,
            a_rs: 50,
            a_cs: 1,
            b_off: 8,
            b_rs: 1,
            b_cs: 50,
            ..Default::default()
        };
        for (tile, id) in [
            (32, PipelineId::GemmVec4SampledHalf),
            (64, PipelineId::GemmVec4Sampled),
            (128, PipelineId::GemmVec4SampledBig),
        ] {
            let mut u = forward;
            assert_eq!(sampled_kernel(&mut u, tile), id);
            assert_eq!(u.flags, FLAG_A_KCONTIG | FLAG_B_SCALAR);
        }
        // A 52-wide W^T (rows of 52) loads vec4s along k.
        let mut u = GemmU {
            b_cs: 52,
            ..forward
        };
        sampled_kernel(&mut u, 64);
        assert_eq!(u.flags, FLAG_A_KCONTIG | FLAG_B_KCONTIG);
    }

    #[test]
    fn check_len_accepts_the_last_float_and_nothing_after() {
        check_len("gemm", "A", 23, Some(22));
        check_len("gemm", "A", 0, None);
        let err = std::panic::catch_unwind(|| check_len("decoder.4 forward", "B", 22, Some(22)))
            .expect_err("one element past the end");
        let msg = err.downcast_ref::<String>().expect("a formatted message");
        assert!(
            msg.contains("decoder.4 forward") && msg.contains("operand B"),
            "{msg}"
        );
    }
}
