//! Philox4x32-10 (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3"),
//! the counter-based generator shared bit for bit with `shaders/rng.wgsl`.
//!
//! Key = run seed (low, high 32 bits). Counter = (stream, step, datapoint, block): every
//! random number the training step needs has a fixed address, so the CPU reference and
//! the GPU kernels draw the same numbers without sharing any state.

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// Named streams: the first counter word. Distinct streams never overlap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Stream {
    /// Dynamic binarization of training images: (step, dataset index, pixel block).
    Binarize = 1,
    /// Reparameterisation noise eps: (step, row in minibatch, normal block).
    Eps = 2,
    /// Coupled-chain uniforms.
    Coupling = 3,
    /// Parameter initialisation: (0, tensor index, block).
    Init = 4,
    /// Fixed binarization of evaluation images: (0, dataset index, pixel block).
    EvalBinarize = 5,
    /// Evaluation noise: (chunk, datapoint, normal block).
    EvalEps = 6,
    /// `train --grad-var-every`: the noise of the gradient estimates on the fixed minibatch,
    /// apart from training's, so the logging leaves the trajectory unchanged: (run step,
    /// row of the minibatch, normal block; replication r takes samples from r n).
    GradVar = 7,
}

#[inline(always)]
fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = (a as u64) * (b as u64);
    ((p >> 32) as u32, p as u32)
}

/// One Philox4x32 block with 10 rounds.
#[inline]
pub fn philox4x32_10(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = ctr;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        let (hi0, lo0) = mulhilo(M0, c[0]);
        let (hi1, lo1) = mulhilo(M1, c[2]);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// The Philox key for a run seed.
#[inline]
pub fn key_of(seed: u64) -> [u32; 2] {
    [seed as u32, (seed >> 32) as u32]
}

/// Maps 32 random bits to a float in the open interval (0, 1): the top 23 bits, centred.
/// With 23 bits, k + 0.5 is exact in f32's 24-bit significand, so the value is the same on
/// both sides, never 0 (safe for ln) and never 1.
#[inline(always)]
pub fn uniform_open(x: u32) -> f32 {
    ((x >> 9) as f32 + 0.5) * (1.0 / 8_388_608.0)
}

/// Four uniforms in (0, 1) from counter (stream, step, datapoint, block).
#[inline]
pub fn uniforms4(seed: u64, stream: Stream, step: u32, datapoint: u32, block: u32) -> [f32; 4] {
    let r = philox4x32_10([stream as u32, step, datapoint, block], key_of(seed));
    [
        uniform_open(r[0]),
        uniform_open(r[1]),
        uniform_open(r[2]),
        uniform_open(r[3]),
    ]
}

/// Box-Muller on two uniform pairs: four standard normals. The WGSL twin uses the same formula.
#[inline]
pub fn box_muller4(u: [f32; 4]) -> [f32; 4] {
    const TWO_PI: f32 = std::f32::consts::TAU;
    let r0 = (-2.0 * u[0].ln()).sqrt();
    let r1 = (-2.0 * u[2].ln()).sqrt();
    let (s0, c0) = (TWO_PI * u[1]).sin_cos();
    let (s1, c1) = (TWO_PI * u[3]).sin_cos();
    [r0 * c0, r0 * s0, r1 * c1, r1 * s1]
}

/// Fills `out` with standard normals number 0..out.len() of (stream, step, datapoint):
/// normal j comes from block j / 4, lane j % 4.
pub fn fill_normals(seed: u64, stream: Stream, step: u32, datapoint: u32, out: &mut [f32]) {
    for (block, chunk) in out.chunks_mut(4).enumerate() {
        let n = box_muller4(uniforms4(seed, stream, step, datapoint, block as u32));
        chunk.copy_from_slice(&n[..chunk.len()]);
    }
}

/// Fills `out` with standard normals number first..first + out.len() of (stream, step,
/// datapoint), the same numbers `fill_normals` gives at those positions.
pub fn fill_normals_from(
    seed: u64,
    stream: Stream,
    step: u32,
    datapoint: u32,
    first: usize,
    out: &mut [f32],
) {
    let mut j = first;
    let mut i = 0;
    while i < out.len() {
        let n = box_muller4(uniforms4(seed, stream, step, datapoint, (j / 4) as u32));
        let lane = j % 4;
        let take = (4 - lane).min(out.len() - i);
        out[i..i + take].copy_from_slice(&n[lane..lane + take]);
        i += take;
        j += take;
    }
}

/// Fills `out` with uniforms number 0..out.len() of (stream, step, datapoint).
pub fn fill_uniforms(seed: u64, stream: Stream, step: u32, datapoint: u32, out: &mut [f32]) {
    for (block, chunk) in out.chunks_mut(4).enumerate() {
        let u = uniforms4(seed, stream, step, datapoint, block as u32);
        chunk.copy_from_slice(&u[..chunk.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known answers published with Random123 (kat_vectors, philox4x32_10).
    #[test]
    fn philox_known_answers() {
        let cases: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
            (
                [0, 0, 0, 0],
                [0, 0],
                [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8],
            ),
            (
                [0xffffffff; 4],
                [0xffffffff; 2],
                [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
            ),
            (
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0],
                [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
            ),
        ];
        for (ctr, key, want) in cases {
            let got = philox4x32_10(ctr, key);
            assert_eq!(
                got, want,
                "philox4x32_10({ctr:08x?}, {key:08x?}) = {got:08x?}, want {want:08x?}"
            );
        }
    }

    #[test]
    fn uniforms_are_open_and_centred() {
        assert!(uniform_open(0) > 0.0);
        assert!(uniform_open(u32::MAX) < 1.0);
        let mut u = vec![0.0f32; 40_000];
        fill_uniforms(7, Stream::Binarize, 3, 11, &mut u);
        let mean = u.iter().map(|&x| x as f64).sum::<f64>() / u.len() as f64;
        // sd of the mean = sqrt(1/12/40000) ~ 0.0014; 5 sd bound.
        assert!((mean - 0.5).abs() < 0.0075, "uniform mean {mean}");
    }

    #[test]
    fn normals_have_unit_moments_and_distinct_streams() {
        let mut z = vec![0.0f32; 40_001];
        fill_normals(42, Stream::Eps, 0, 0, &mut z);
        let n = z.len() as f64;
        let mean = z.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = z.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        // 5-sigma bounds: sd(mean) = 0.005, sd(var) ~ sqrt(2/n) = 0.007.
        assert!(mean.abs() < 0.025, "normal mean {mean}");
        assert!((var - 1.0).abs() < 0.035, "normal variance {var}");
        let mut other = vec![0.0f32; 8];
        fill_normals(42, Stream::Eps, 0, 1, &mut other);
        assert_ne!(&z[..8], &other[..]);
        // A prefix is stable: normal j never depends on how many were asked for.
        let mut short = vec![0.0f32; 7];
        fill_normals(42, Stream::Eps, 0, 0, &mut short);
        assert_eq!(&z[..7], &short[..]);
        let mut mid = vec![0.0f32; 9];
        fill_normals_from(42, Stream::Eps, 0, 0, 5, &mut mid);
        assert_eq!(&z[5..14], &mid[..]);
    }
}
