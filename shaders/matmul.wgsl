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

// FLAG_BIAS, FLAG_TANH, FLAG_SCALE_K, FLAG_TANH_GRAD (and gemm_vec4's FLAG_A_KCONTIG,
// FLAG_B_KCONTIG) come from the prelude generated from src/backend/gpu/matmul.rs.

@group(0) @binding(0) var<uniform> g: Gemm;
@group(0) @binding(1) var<storage, read> mat_a: array<f32>;
@group(0) @binding(2) var<storage, read> mat_b: array<f32>;
@group(0) @binding(3) var<storage, read_write> mat_c: array<f32>;
@group(0) @binding(4) var<storage, read> epi: array<f32>;

const TILE: u32 = 64u;
const TK: u32 = 16u;
var<workgroup> tile_a: array<f32, 1024>; // [TK][TILE]: tile_a[kk * TILE + row]
var<workgroup> tile_b: array<f32, 1024>; // [TK][TILE]: tile_b[kk * TILE + col]

// The epilogue: alpha, beta, bias, tanh, tanh backward, masked store of a thread's 4 x 4.
fn store_tile(row0: u32, col0: u32, lid: vec2<u32>, acc_in: array<f32, 16>) {
    var acc = acc_in; // dynamic indexing needs a variable, not a value
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
    store_tile(row0, col0, lid.xy, acc);
}

// ---- gemm_vec4: the same product with one vec4 load per operand per thread per k-step ----
// For operands whose contiguous dimension, other stride and offset are multiples of 4 (the
// host checks). A is contiguous along k (A_KCONTIG) or along m; B along k (B_KCONTIG) or
// along n. A 64 x 16 tile is then 256 vec4s, one per thread, so every vec4 lies wholly in
// or wholly out of the matrix and edges stay zero-padded.

@group(0) @binding(1) var<storage, read> mat_a4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> mat_b4: array<vec4<f32>>;

@compute @workgroup_size(16, 16, 1)
fn gemm_vec4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row0 = wg.y * TILE;
    let col0 = wg.x * TILE;
    let t = lid.y * 16u + lid.x;
    var acc: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) {
        acc[i] = 0.0;
    }
    let scale_k = (g.flags & FLAG_SCALE_K) != 0u;
    let a_k = (g.flags & FLAG_A_KCONTIG) != 0u;
    let b_k = (g.flags & FLAG_B_KCONTIG) != 0u;
    for (var k0 = 0u; k0 < g.k; k0 += TK) {
        // A: k-contiguous: thread t loads row t / 4, k = 4 (t % 4) .. +3;
        //    m-contiguous: thread t loads k = t / 16, rows 4 (t % 16) .. +3.
        var ra = t / 4u;
        var ka = (t % 4u) * 4u;
        if (!a_k) {
            ka = t / 16u;
            ra = (t % 16u) * 4u;
        }
        var va = vec4<f32>(0.0);
        if (row0 + ra < g.m && k0 + ka < g.k) {
            va = mat_a4[(g.a_off + (row0 + ra) * g.a_rs + (k0 + ka) * g.a_cs) / 4u];
            if (scale_k) {
                if (a_k) {
                    va = va * vec4<f32>(epi[g.e_off + k0 + ka], epi[g.e_off + k0 + ka + 1u], epi[g.e_off + k0 + ka + 2u], epi[g.e_off + k0 + ka + 3u]);
                } else {
                    va = va * epi[g.e_off + k0 + ka];
                }
            }
        }
        if (a_k) {
            for (var j = 0u; j < 4u; j++) {
                tile_a[(ka + j) * TILE + ra] = va[j];
            }
        } else {
            for (var j = 0u; j < 4u; j++) {
                tile_a[ka * TILE + ra + j] = va[j];
            }
        }
        // B: k-contiguous: thread t loads column t / 4, k = 4 (t % 4) .. +3;
        //    n-contiguous: thread t loads k = t / 16, columns 4 (t % 16) .. +3.
        var cb = t / 4u;
        var kb = (t % 4u) * 4u;
        if (!b_k) {
            kb = t / 16u;
            cb = (t % 16u) * 4u;
        }
        var vb = vec4<f32>(0.0);
        if (col0 + cb < g.n && k0 + kb < g.k) {
            vb = mat_b4[(g.b_off + (k0 + kb) * g.b_rs + (col0 + cb) * g.b_cs) / 4u];
        }
        if (b_k) {
            for (var j = 0u; j < 4u; j++) {
                tile_b[(kb + j) * TILE + cb] = vb[j];
            }
        } else {
            for (var j = 0u; j < 4u; j++) {
                tile_b[kb * TILE + cb + j] = vb[j];
            }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let av = vec4<f32>(tile_a[kk * TILE + lid.y * 4u], tile_a[kk * TILE + lid.y * 4u + 1u], tile_a[kk * TILE + lid.y * 4u + 2u], tile_a[kk * TILE + lid.y * 4u + 3u]);
            let bv = vec4<f32>(tile_b[kk * TILE + lid.x * 4u], tile_b[kk * TILE + lid.x * 4u + 1u], tile_b[kk * TILE + lid.x * 4u + 2u], tile_b[kk * TILE + lid.x * 4u + 3u]);
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i * 4u + j] = fma(av[i], bv[j], acc[i * 4u + j]);
                }
            }
        }
        workgroupBarrier();
    }
    store_tile(row0, col0, lid.xy, acc);
}

// ---- column_sums: C[c_off + j] = alpha * sum_r A[a_off + r * a_rs + j] * w(r) + beta C ----
// The bias gradient: weighted column sums of a row-major delta (a_cs must be 1), with
// weights E[e_off + r] under SCALE_K and 1 otherwise. A GEMM with one output column would
// leave 63 of every 64 threads idle; here 64 adjacent columns read coalesced and 4 row
// groups per workgroup meet in shared memory. m = number of rows, n = number of columns.
var<workgroup> colsum: array<f32, 256>;

@compute @workgroup_size(64, 4, 1)
fn column_sums(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let j = wg.x * 64u + lid.x;
    var part = 0.0;
    if (j < g.n) {
        let scaled = (g.flags & FLAG_SCALE_K) != 0u;
        for (var r = lid.y; r < g.m; r += 4u) {
            var v = mat_a[g.a_off + r * g.a_rs + j];
            if (scaled) {
                v = v * epi[g.e_off + r];
            }
            part += v;
        }
    }
    colsum[lid.y * 64u + lid.x] = part;
    workgroupBarrier();
    if (lid.y == 0u && j < g.n) {
        var total = colsum[lid.x] + colsum[64u + lid.x] + colsum[128u + lid.x] + colsum[192u + lid.x];
        total = g.alpha * total;
        let ci = g.c_off + j * g.c_cs;
        if (g.beta != 0.0) {
            total += g.beta * mat_c[ci];
        }
        mat_c[ci] = total;
    }
}
