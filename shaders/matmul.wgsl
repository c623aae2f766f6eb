// C = alpha * A[m, k] B[k, n] (+ beta C), every operand with its own element offset and
// (row, column) strides, so transposes are strides. 64 x 64 output tiles, 16 x 16 threads,
// 4 x 4 outputs per thread held in registers. Edges of shapes that are not multiples of
// the tile are zero-padded on load and masked on store.
//
// Fused epilogues (flags), one operand E each:
//   BIAS       C = acc + E[bias_off + column]           (forward: x W^T + b)
//   TANH       then tanh                                 (hidden layers)
//   SCALE_K    acc = sum_k A[m,k] E[scale_off + k] B[k,n] (weight gradient scaled per sample)
//   TANH_GRAD  C = acc * (1 - E[act_off + row * act_rs + col]^2) (back through tanh)

struct Gemm {
    m: u32, n: u32, k: u32, flags: u32,
    a_off: u32, a_rs: u32, a_cs: u32, e_off: u32,
    b_off: u32, b_rs: u32, b_cs: u32, e_rs: u32,
    c_off: u32, c_rs: u32, c_cs: u32, _pad: u32,
    alpha: f32, beta: f32, _pad1: u32, _pad2: u32,
}

const FLAG_BIAS: u32 = 1u;
const FLAG_TANH: u32 = 2u;
const FLAG_SCALE_K: u32 = 4u;
const FLAG_TANH_GRAD: u32 = 8u;

@group(0) @binding(0) var<uniform> g: Gemm;
@group(0) @binding(1) var<storage, read> mat_a: array<f32>;
@group(0) @binding(2) var<storage, read> mat_b: array<f32>;
@group(0) @binding(3) var<storage, read_write> mat_c: array<f32>;
@group(0) @binding(4) var<storage, read> epi: array<f32>;

const TILE: u32 = 64u;
const TK: u32 = 16u;
var<workgroup> tile_a: array<f32, 1024>; // [TK][TILE]: tile_a[kk * TILE + row]
var<workgroup> tile_b: array<f32, 1024>; // [TK][TILE]: tile_b[kk * TILE + col]

@compute @workgroup_size(16, 16, 1)
fn gemm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row0 = wg.y * TILE;
    let col0 = wg.x * TILE;
    let t = lid.y * 16u + lid.x;
    var acc: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) {
        acc[i] = 0.0;
    }
    let scale_k = (g.flags & FLAG_SCALE_K) != 0u;
    for (var k0 = 0u; k0 < g.k; k0 += TK) {
        // 256 threads load 1024 elements of each tile: 4 apiece.
        for (var j = 0u; j < 4u; j++) {
            let e = t + j * 256u;
            let kk = e / TILE;
            let rc = e % TILE;
            let kg = k0 + kk;
            var va = 0.0;
            if (row0 + rc < g.m && kg < g.k) {
                va = mat_a[g.a_off + (row0 + rc) * g.a_rs + kg * g.a_cs];
                if (scale_k) {
                    va = va * epi[g.e_off + kg];
                }
            }
            tile_a[kk * TILE + rc] = va;
            var vb = 0.0;
            if (col0 + rc < g.n && kg < g.k) {
                vb = mat_b[g.b_off + kg * g.b_rs + (col0 + rc) * g.b_cs];
            }
            tile_b[kk * TILE + rc] = vb;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            var av: array<f32, 4>;
            var bv: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                av[i] = tile_a[kk * TILE + lid.y * 4u + i];
                bv[i] = tile_b[kk * TILE + lid.x * 4u + i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i * 4u + j] = fma(av[i], bv[j], acc[i * 4u + j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let r = row0 + lid.y * 4u + i;
        if (r >= g.m) {
            continue;
        }
        for (var j = 0u; j < 4u; j++) {
            let c = col0 + lid.x * 4u + j;
            if (c >= g.n) {
                continue;
            }
            var v = g.alpha * acc[i * 4u + j];
            let ci = g.c_off + r * g.c_rs + c * g.c_cs;
            if (g.beta != 0.0) {
                v += g.beta * mat_c[ci];
            }
            if ((g.flags & FLAG_BIAS) != 0u) {
                v += epi[g.e_off + c];
            }
            if ((g.flags & FLAG_TANH) != 0u) {
                // Clamped: some drivers overflow exp inside tanh for large |v| and return NaN.
                v = tanh(clamp(v, -15.0, 15.0));
            }
            if ((g.flags & FLAG_TANH_GRAD) != 0u) {
                let act = epi[g.e_off + r * g.e_rs + c];
                v = v * (1.0 - act * act);
            }
            mat_c[ci] = v;
        }
    }
}
