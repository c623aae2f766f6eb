// The input pipeline: dynamic binarization of the training images held on the device, the
// twin of binarize_into in src/data/mod.rs. Row r of the minibatch is image img_of_row[r];
// its pixel p is on when uniform p of Philox counter (STREAM_BINARIZE, step, image, p / 4),
// times 255, is below the pixel's intensity. The test runs on integers: thresholds[px]
// (binarize_thresholds in src/data/mod.rs) counts the 23-bit values k = word >> 9 whose
// uniform (k + 0.5) / 2^23 passes, so (word >> 9) < thresholds[px] is the CPU's f32
// decision bit for bit. STREAM_BINARIZE comes from the prelude generated from
// src/backend/gpu/input.rs. Needs rng.wgsl.

struct Binarize {
    rows: u32, dim: u32, blocks: u32, step: u32,
    seed_lo: u32, seed_hi: u32, _p0: u32, _p1: u32,
}

@group(0) @binding(0) var<uniform> bz: Binarize;
@group(0) @binding(1) var<storage, read> pixels: array<u32>;      // every image's bytes, 4 per word, little-endian
@group(0) @binding(2) var<storage, read> thresholds: array<u32>;  // [256]
@group(0) @binding(3) var<storage, read> img_of_row: array<u32>;  // [rows]
@group(0) @binding(4) var<storage, read_write> x_out: array<f32>; // [rows, dim]

// One thread per (row, block of four pixels): one Philox block each, as the CPU draws them.
@compute @workgroup_size(64)
fn binarize(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let id = gid.x + gid.y * groups.x * 64u;
    if (id >= bz.rows * bz.blocks) {
        return;
    }
    let r = id / bz.blocks;
    let block = id % bz.blocks;
    let image = img_of_row[r];
    let w = philox4x32_10(vec4<u32>(STREAM_BINARIZE, bz.step, image, block), vec2<u32>(bz.seed_lo, bz.seed_hi));
    for (var j = 0u; j < 4u; j++) {
        let p = block * 4u + j;
        if (p < bz.dim) {
            let at = image * bz.dim + p;
            let px = (pixels[at / 4u] >> (8u * (at % 4u))) & 0xFFu;
            x_out[r * bz.dim + p] = select(0.0, 1.0, (w[j] >> 9u) < thresholds[px]);
        }
    }
}
