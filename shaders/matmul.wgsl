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
//
// Split-K (k_slice != 0): workgroup z covers k in [z k_slice, min(k, (z + 1) k_slice)) and
// writes its raw 4 x 4 sums to the scratch bound as C, slice after slice ([slices, m, n],
// dense); under ROW_SUMS the first column of tiles also writes each row's sum of its (scaled)
// A over the slice after them ([slices, m]: the bias gradient of a weight gradient). Then
// splitk_reduce, with the same uniform and the scratch bound as A, adds the slices in order
// 0, 1, ... and applies the epilogue above (alpha, beta, bias, tanh, tanh backward), the row
// sums into C[bias_off + row] with alpha and beta. No atomics: the result is deterministic.

struct Gemm {
    m: u32, n: u32, k: u32, flags: u32,
    a_off: u32, a_rs: u32, a_cs: u32, e_off: u32,
    b_off: u32, b_rs: u32, b_cs: u32, e_rs: u32,
    c_off: u32, c_rs: u32, c_cs: u32, k_slice: u32,
    alpha: f32, beta: f32, slices: u32, bias_off: u32,
}

// FLAG_BIAS, FLAG_TANH, FLAG_SCALE_K, FLAG_TANH_GRAD, FLAG_ROW_SUMS (and gemm_vec4's
// FLAG_A_KCONTIG, FLAG_B_KCONTIG) come from the prelude generated from
// src/backend/gpu/matmul.rs.

@group(0) @binding(0) var<uniform> g: Gemm;
@group(0) @binding(1) var<storage, read> mat_a: array<f32>;
@group(0) @binding(2) var<storage, read> mat_b: array<f32>;
@group(0) @binding(3) var<storage, read_write> mat_c: array<f32>;
@group(0) @binding(4) var<storage, read> epi: array<f32>;

const TILE: u32 = 64u;
const TK: u32 = 16u;
var<workgroup> tile_a: array<f32, 1024>; // [TK][TILE]: tile_a[kk * TILE + row]
var<workgroup> tile_b: array<f32, 1024>; // [TK][TILE]: tile_b[kk * TILE + col]

// The epilogue of output (r, c) from its sum over k: alpha, beta, bias, tanh, tanh backward.
fn epilogue(r: u32, c: u32, sum: f32) -> f32 {
    var v = g.alpha * sum;
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
    return v;
}

// Masked store of a thread's 4 x 4 through the epilogue (unsplit), or of its raw sums into
// slice z of the scratch (split-K).
fn store_tile(row0: u32, col0: u32, lid: vec2<u32>, acc_in: array<f32, 16>, z: u32) {
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
            if (g.k_slice != 0u) {
                mat_c[(z * g.m + r) * g.n + c] = acc[i * 4u + j];
            } else {
                mat_c[g.c_off + r * g.c_rs + c * g.c_cs] = epilogue(r, c, acc[i * 4u + j]);
            }
        }
    }
}

// The k range of slice z: all of k unless split.
fn k_range(z: u32) -> vec2<u32> {
    if (g.k_slice == 0u) {
        return vec2<u32>(0u, g.k);
    }
    let lo = z * g.k_slice;
    return vec2<u32>(lo, min(g.k, lo + g.k_slice));
}

// Under ROW_SUMS (split-K only), the first column of tiles stores each of its thread's 4 rows'
// sums of A over slice z after the slices' partial products.
fn store_row_sums(row0: u32, ly: u32, rsum: vec4<f32>, z: u32) {
    for (var i = 0u; i < 4u; i++) {
        let r = row0 + ly * 4u + i;
        if (r < g.m) {
            mat_c[g.slices * g.m * g.n + z * g.m + r] = rsum[i];
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
    let kr = k_range(wg.z);
    let rs_on = (g.flags & FLAG_ROW_SUMS) != 0u && wg.x == 0u && lid.x == 0u;
    var rsum = vec4<f32>(0.0);
    for (var k0 = kr.x; k0 < kr.y; k0 += TK) {
        // 256 threads load 1024 elements of each tile: 4 apiece.
        for (var j = 0u; j < 4u; j++) {
            let e = t + j * 256u;
            let kk = e / TILE;
            let rc = e % TILE;
            let kg = k0 + kk;
            var va = 0.0;
            if (row0 + rc < g.m && kg < kr.y) {
                va = mat_a[g.a_off + (row0 + rc) * g.a_rs + kg * g.a_cs];
                if (scale_k) {
                    va = va * epi[g.e_off + kg];
                }
            }
            tile_a[kk * TILE + rc] = va;
            var vb = 0.0;
            if (col0 + rc < g.n && kg < kr.y) {
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
            if (rs_on) {
                rsum += vec4<f32>(av[0], av[1], av[2], av[3]);
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i * 4u + j] = fma(av[i], bv[j], acc[i * 4u + j]);
                }
            }
        }
        workgroupBarrier();
    }
    store_tile(row0, col0, lid.xy, acc, wg.z);
    if (rs_on) {
        store_row_sums(row0, lid.y, rsum, wg.z);
    }
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
    let kr = k_range(wg.z);
    let rs_on = (g.flags & FLAG_ROW_SUMS) != 0u && wg.x == 0u && lid.x == 0u;
    var rsum = vec4<f32>(0.0);
    for (var k0 = kr.x; k0 < kr.y; k0 += TK) {
        // A: k-contiguous: thread t loads row t / 4, k = 4 (t % 4) .. +3;
        //    m-contiguous: thread t loads k = t / 16, rows 4 (t % 16) .. +3.
        var ra = t / 4u;
        var ka = (t % 4u) * 4u;
        if (!a_k) {
            ka = t / 16u;
            ra = (t % 16u) * 4u;
        }
        var va = vec4<f32>(0.0);
        if (row0 + ra < g.m && k0 + ka < kr.y) {
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
        if (col0 + cb < g.n && k0 + kb < kr.y) {
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
            if (rs_on) {
                rsum += av;
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i * 4u + j] = fma(av[i], bv[j], acc[i * 4u + j]);
                }
            }
        }
        workgroupBarrier();
    }
    store_tile(row0, col0, lid.xy, acc, wg.z);
    if (rs_on) {
        store_row_sums(row0, lid.y, rsum, wg.z);
    }
}

// ---- splitk_reduce: C = epilogue(sum over slices of the scratch), slices in order ----
// One thread per output of the m x n product, then (ROW_SUMS) one per row sum. The scratch
// is bound as A.
@compute @workgroup_size(256)
fn splitk_reduce(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * 256u;
    let mn = g.m * g.n;
    if (i < mn) {
        var sum = 0.0;
        for (var s = 0u; s < g.slices; s++) {
            sum += mat_a[s * mn + i];
        }
        let r = i / g.n;
        let c = i % g.n;
        mat_c[g.c_off + r * g.c_rs + c * g.c_cs] = epilogue(r, c, sum);
        return;
    }
    let r = i - mn;
    if ((g.flags & FLAG_ROW_SUMS) != 0u && r < g.m) {
        var sum = 0.0;
        for (var s = 0u; s < g.slices; s++) {
            sum += mat_a[g.slices * mn + s * g.m + r];
        }
        var v = g.alpha * sum;
        let ci = g.bias_off + r;
        if (g.beta != 0.0) {
            v += g.beta * mat_c[ci];
        }
        mat_c[ci] = v;
    }
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
