// C = alpha * A[m, k] B[k, n] (+ beta C), every operand with its own element offset and
// (row, column) strides, so transposes are strides. TILE_M x 64 output tiles, 16 x 16
// threads, RPT x 4 outputs per thread held in RPT vec4 registers, fed per k-step by one vec4
// read of B and one of A (half of one, or two); the next k-tile is loaded into registers
// while the current one is multiplied. The module is compiled three times: TILE_M = 64
// (4 x 4 per thread, the `full_tiles` sections), TILE_M = 32 (2 x 4, `half_tiles`) for grids
// that 64-row tiles would leave short of the GPU, and TILE_M = 128 (8 x 4, `big_tiles`:
// twice the FMAs per shared read of B) for grids large enough without them. Edges of shapes
// that are not multiples of the tile are zero-padded on load and masked on store. Every
// access is guarded by the shape, and the host checks each operand's extent against its
// buffer when it records the dispatch, so this family may be compiled without wgpu's
// runtime bounds checks (src/backend/gpu/pipelines.rs).
//
// Fused epilogues (flags), one operand E each:
//   BIAS       C = acc + E[bias_off + column]           (forward: x W^T + b); with e_rs != 0
//              a bias row per datapoint, E[e_off + (row / samples) e_rs + column] (the
//              conditional decoder's first layer: c W_c^T + b, src/backend/gpu/cond.rs)
//   TANH       then tanh                                 (hidden layers)
//   SCALE_K    acc = sum_k A[m,k] E[scale_off + k] B[k,n] (weight gradient scaled per sample)
//   TANH_GRAD  C = acc * (1 - E[act_off + row * act_rs + col]^2) (back through tanh)
//   LIK_BERNOULLI  after BIAS, the logits l against the binary x of row r's datapoint
//              (X[(r / samples) * n + col]): C = x - sigmoid(l), the likelihood's gradient,
//              and each row's sum of x l - softplus(l) over the tile's 64 columns into
//              lik_part[r * column tiles + tile column] (the decoder's last layer, never
//              split; vae.wgsl's log_weights_partials adds the partials).
//
// Split-K (k_slice != 0): workgroup z covers k in [z k_slice, min(k, (z + 1) k_slice)) and
// writes its raw RPT x 4 sums to the scratch bound as C, slice after slice ([slices, m, n],
// dense); under ROW_SUMS the first column of tiles also writes each row's sum of its (scaled)
// A over the slice after them ([slices, m]: the bias gradient of a weight gradient). Then
// splitk_reduce, with the same uniform and the scratch bound as A, adds the slices in order
// 0, 1, ... and applies the epilogue above (alpha, beta, bias, tanh, tanh backward), the row
// sums into C[bias_off + row] with alpha and beta. No atomics: the result is deterministic.
//
// Sampled A (the `sampled_a` variants, rng.wgsl prepended; gemm_vec4 only): A is the latent
// z = mu + sigma eps of the layer it feeds, drawn in the loads instead of read, so no
// sampling dispatch runs before the GEMM. Row r is sample r % samples of datapoint
// r / samples; its normals are numbers (first_sample + s) noise_dim + eps_off + d of the
// datapoint's Philox counter (as the CPU draws them), mu and log sigma come from row
// r / samples of the head (the encoder's output) or row r (head_per_row: q(z2 | z1)'s), [.., 2
// k]. The first column of tiles also stores z where A would be read (a_off, a_rs) and eps
// at [r, noise_dim] + eps_off, for the kernels after it; the other columns draw the same
// numbers again, which costs two Philox blocks per vec4 instead of a pass over z.

struct Gemm {
    m: u32, n: u32, k: u32, flags: u32,
    a_off: u32, a_rs: u32, a_cs: u32, e_off: u32,
    b_off: u32, b_rs: u32, b_cs: u32, e_rs: u32,
    c_off: u32, c_rs: u32, c_cs: u32, k_slice: u32,
    alpha: f32, beta: f32, slices: u32, bias_off: u32,
    samples: u32, noise_dim: u32, eps_off: u32, head_per_row: u32,
}

// FLAG_BIAS, FLAG_TANH, FLAG_SCALE_K, FLAG_TANH_GRAD, FLAG_ROW_SUMS, FLAG_LIK_BERNOULLI (and
// gemm_vec4's FLAG_A_KCONTIG, FLAG_B_KCONTIG, FLAG_A_SCALAR, FLAG_B_SCALAR) and TILE_M come
// from the prelude generated from src/backend/gpu/matmul.rs and shaders.rs.

@group(0) @binding(0) var<uniform> g: Gemm;
@group(0) @binding(1) var<storage, read> mat_a: array<f32>;
// The GEMM kernels see A and B as vec4s (an entry point binds each once, as one type or the
// other), and read single elements through the view: storage buffers are whole vec4s long
// (context.rs), so it reaches every float. splitk_reduce and column_sums read scalars.
@group(0) @binding(1) var<storage, read> mat_a4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> mat_b4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> mat_c: array<f32>;
@group(0) @binding(4) var<storage, read> epi: array<f32>;
@group(0) @binding(5) var<storage, read> lik_x: array<f32>;
@group(0) @binding(6) var<storage, read_write> lik_part: array<f32>;

// sampled_a: the pass's noise address, the head (mu, log sigma), and z and eps written.
// #if sampled_a
@group(0) @binding(7) var<uniform> noise: NoiseAt;
@group(0) @binding(8) var<storage, read> smp_head: array<f32>;
@group(0) @binding(9) var<storage, read_write> smp_eps: array<f32>;
@group(0) @binding(10) var<storage, read_write> smp_z: array<f32>;
// Whether this workgroup stores z and eps: the first column of tiles.
var<private> store_latent: bool;
// #endif

// TILE_M (the tile's rows) comes from the prelude; a tile has 64 columns.
const TILE: u32 = 64u;
const TK: u32 = 16u;
// Rows per thread.
const RPT: u32 = TILE_M / 16u;
// The vec4s of A a thread stages per k-tile (one, or two for 128-row tiles).
const AQ: u32 = (RPT + 3u) / 4u;
alias AStage = array<vec4<f32>, AQ>;
// The shared tiles hold vec4 rows, [TK][ROW4]: element (k, i) is tile[k * ROW4 + i / 4][i % 4],
// so one read per operand per k-step feeds a thread's FMAs. A row is its vec4s and one of
// padding: consecutive k rows start 4 banks apart, so the stores of a k-contiguous load
// (threads walking k) meet at most 2-way bank conflicts instead of 16-way.
const ROW4: u32 = 17u;
const ROW4A: u32 = TILE_M / 4u + 1u;
var<workgroup> tile_a: array<vec4<f32>, TK * ROW4A>;
var<workgroup> tile_b: array<vec4<f32>, TK * ROW4>;

// The epilogue of output (r, c) from its sum over k: alpha, beta, bias, tanh, tanh backward.
fn epilogue(r: u32, c: u32, sum: f32) -> f32 {
    var v = g.alpha * sum;
    let ci = g.c_off + r * g.c_rs + c * g.c_cs;
    if (g.beta != 0.0) {
        v += g.beta * mat_c[ci];
    }
    if ((g.flags & FLAG_BIAS) != 0u) {
        var bi = g.e_off + c;
        if (g.e_rs != 0u) {
            bi += (r / g.samples) * g.e_rs;
        }
        v += epi[bi];
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

// Element i of A or of B.
fn a_at(i: u32) -> f32 {
    return mat_a4[i / 4u][i % 4u];
}

fn b_at(i: u32) -> f32 {
    return mat_b4[i / 4u][i % 4u];
}

// Writes element (kk, i) of a shared tile.
fn put_a(kk: u32, i: u32, v: f32) {
    tile_a[kk * ROW4A + i / 4u][i % 4u] = v;
}

fn put_b(kk: u32, i: u32, v: f32) {
    tile_b[kk * ROW4 + i / 4u][i % 4u] = v;
}

// One k-tile of the product from the shared tiles: thread (lx, ly) owns rows RPT ly .. and
// columns 4 lx .. +3; acc[i] is row RPT ly + i. Under `rs_on` also the rows' sums of A.
fn multiply_tile(lid: vec2<u32>, acc: ptr<function, array<vec4<f32>, RPT>>, rsum: ptr<function, vec4<f32>>, rs_on: bool) {
    for (var kk = 0u; kk < TK; kk++) {
        let bv = tile_b[kk * ROW4 + lid.x];
// #if half_tiles
        let a4 = tile_a[kk * ROW4A + lid.y / 2u];
        let av = select(a4.xy, a4.zw, (lid.y & 1u) == 1u);
        if (rs_on) {
            *rsum += vec4<f32>(av, 0.0, 0.0);
        }
        (*acc)[0] = fma(vec4<f32>(av.x), bv, (*acc)[0]);
        (*acc)[1] = fma(vec4<f32>(av.y), bv, (*acc)[1]);
// #endif
// #if big_tiles
        // 128-row tiles are never split, so there are no row sums to keep.
        let a0 = tile_a[kk * ROW4A + 2u * lid.y];
        let a1 = tile_a[kk * ROW4A + 2u * lid.y + 1u];
        (*acc)[0] = fma(vec4<f32>(a0.x), bv, (*acc)[0]);
        (*acc)[1] = fma(vec4<f32>(a0.y), bv, (*acc)[1]);
        (*acc)[2] = fma(vec4<f32>(a0.z), bv, (*acc)[2]);
        (*acc)[3] = fma(vec4<f32>(a0.w), bv, (*acc)[3]);
        (*acc)[4] = fma(vec4<f32>(a1.x), bv, (*acc)[4]);
        (*acc)[5] = fma(vec4<f32>(a1.y), bv, (*acc)[5]);
        (*acc)[6] = fma(vec4<f32>(a1.z), bv, (*acc)[6]);
        (*acc)[7] = fma(vec4<f32>(a1.w), bv, (*acc)[7]);
// #endif
// #if full_tiles
        let av = tile_a[kk * ROW4A + lid.y];
        if (rs_on) {
            *rsum += av;
        }
        (*acc)[0] = fma(vec4<f32>(av.x), bv, (*acc)[0]);
        (*acc)[1] = fma(vec4<f32>(av.y), bv, (*acc)[1]);
        (*acc)[2] = fma(vec4<f32>(av.z), bv, (*acc)[2]);
        (*acc)[3] = fma(vec4<f32>(av.w), bv, (*acc)[3]);
// #endif
    }
}

// Masked store of a thread's RPT x 4 through the epilogue (unsplit), or of its raw sums into
// slice z of the scratch (split-K).
fn store_tile(row0: u32, col0: u32, lid: vec2<u32>, acc: ptr<function, array<vec4<f32>, RPT>>, z: u32) {
    let lik = (g.flags & FLAG_LIK_BERNOULLI) != 0u;
    var lsum: array<f32, RPT>; // this thread's likelihood terms per row
    for (var i = 0u; i < RPT; i++) {
        let r = row0 + lid.y * RPT + i;
        if (r >= g.m) {
            continue;
        }
        let row = (*acc)[i];
        for (var j = 0u; j < 4u; j++) {
            let c = col0 + lid.x * 4u + j;
            if (c >= g.n) {
                continue;
            }
            if (g.k_slice != 0u) {
                mat_c[(z * g.m + r) * g.n + c] = row[j];
            } else {
                var v = epilogue(r, c, row[j]);
                if (lik) {
                    let x = lik_x[(r / g.samples) * g.n + c];
                    // Stable softplus and sigmoid, as log_weights computes them.
                    let e = exp(-abs(v));
                    let inv = 1.0 / (1.0 + e);
                    lsum[i] += x * v - (max(v, 0.0) + log(1.0 + e));
                    v = x - select(e * inv, inv, v >= 0.0);
                }
                mat_c[g.c_off + r * g.c_rs + c * g.c_cs] = v;
            }
        }
    }
    if (lik) {
        store_lik_partials(row0, col0, lid, &lsum);
    }
}

// The row sums of the tile's likelihood terms: the 16 threads of a row meet in tile_a (free
// after the k loop's last barrier: TILE_M x 16 floats fit in it), the first adds them in order.
fn store_lik_partials(row0: u32, col0: u32, lid: vec2<u32>, lsum: ptr<function, array<f32, RPT>>) {
    workgroupBarrier();
    for (var i = 0u; i < RPT; i++) {
        let e = (lid.y * RPT + i) * 16u + lid.x;
        tile_a[e / 4u][e % 4u] = (*lsum)[i];
    }
    workgroupBarrier();
    if (lid.x != 0u) {
        return;
    }
    let tiles = (g.n + TILE - 1u) / TILE;
    for (var i = 0u; i < RPT; i++) {
        let r = row0 + lid.y * RPT + i;
        if (r < g.m) {
            let base = (lid.y * RPT + i) * 4u; // the row's 16 floats: 4 vec4s
            let s = tile_a[base] + tile_a[base + 1u] + tile_a[base + 2u] + tile_a[base + 3u];
            lik_part[r * tiles + col0 / TILE] = (s.x + s.y) + (s.z + s.w);
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

// Under ROW_SUMS (split-K only), the first column of tiles stores each of its thread's RPT
// rows' sums of A over slice z after the slices' partial products.
fn store_row_sums(row0: u32, ly: u32, rsum: vec4<f32>, z: u32) {
    for (var i = 0u; i < min(RPT, 4u); i++) {
        let r = row0 + ly * RPT + i;
        if (r < g.m) {
            mat_c[g.slices * g.m * g.n + z * g.m + r] = rsum[i];
        }
    }
}

// ---- gemm: any strides ----
// 256 threads load the elements of each `extent` x 16 tile (64 for B, TILE_M for A), extent /
// 16 apiece, consecutive threads along the operand's contiguous dimension so that their
// loads coalesce: along k when A is row-major (a_cs = 1) or B column-major (b_rs = 1), else
// along m or n. Element j of thread t is (k, i) = (t % 16, t / 16 + 16 j) along k,
// (t / extent + (256 / extent) j, t % extent) otherwise.

fn tile_coord(t: u32, j: u32, k_contig: bool, extent: u32) -> vec2<u32> {
    if (k_contig) {
        return vec2<u32>(t % 16u, t / 16u + 16u * j);
    }
    return vec2<u32>(t / extent + (256u / extent) * j, t % extent);
}

// The RPT elements of A thread t loads for the k-tile at k0 (zero outside the matrix).
fn load_a(t: u32, row0: u32, k0: u32, k_end: u32) -> AStage {
    var v: AStage;
    let k_contig = g.a_cs == 1u;
    for (var j = 0u; j < RPT; j++) {
        let kc = tile_coord(t, j, k_contig, TILE_M);
        let kg = k0 + kc.x;
        if (row0 + kc.y < g.m && kg < k_end) {
            var va = a_at(g.a_off + (row0 + kc.y) * g.a_rs + kg * g.a_cs);
            if ((g.flags & FLAG_SCALE_K) != 0u) {
                va = va * epi[g.e_off + kg];
            }
            v[j / 4u][j % 4u] = va;
        }
    }
    return v;
}

fn load_b(t: u32, col0: u32, k0: u32, k_end: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    let k_contig = g.b_rs == 1u;
    for (var j = 0u; j < 4u; j++) {
        let kc = tile_coord(t, j, k_contig, TILE);
        let kg = k0 + kc.x;
        if (col0 + kc.y < g.n && kg < k_end) {
            v[j] = b_at(g.b_off + kg * g.b_rs + (col0 + kc.y) * g.b_cs);
        }
    }
    return v;
}

fn store_a(t: u32, va_in: AStage) {
    var va = va_in; // dynamic indexing needs a variable, not a value
    let a_k = g.a_cs == 1u;
    for (var j = 0u; j < RPT; j++) {
        let ka = tile_coord(t, j, a_k, TILE_M);
        put_a(ka.x, ka.y, va[j / 4u][j % 4u]);
    }
}

fn store_b(t: u32, vb: vec4<f32>) {
    let b_k = g.b_rs == 1u;
    for (var j = 0u; j < 4u; j++) {
        let kb = tile_coord(t, j, b_k, TILE);
        put_b(kb.x, kb.y, vb[j]);
    }
}

@compute @workgroup_size(16, 16, 1)
fn gemm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row0 = wg.y * TILE_M;
    let col0 = wg.x * TILE;
    let t = lid.y * 16u + lid.x;
    var acc: array<vec4<f32>, RPT>; // zero-initialized
    let kr = k_range(wg.z);
    let rs_on = (g.flags & FLAG_ROW_SUMS) != 0u && wg.x == 0u && lid.x == 0u;
    var rsum = vec4<f32>(0.0);
    // The next k-tile is loaded into registers while this one is multiplied.
    var va = load_a(t, row0, kr.x, kr.y);
    var vb = load_b(t, col0, kr.x, kr.y);
    for (var k0 = kr.x; k0 < kr.y; k0 += TK) {
        store_a(t, va);
        store_b(t, vb);
        workgroupBarrier();
        if (k0 + TK < kr.y) {
            va = load_a(t, row0, k0 + TK, kr.y);
            vb = load_b(t, col0, k0 + TK, kr.y);
        }
        multiply_tile(lid.xy, &acc, &rsum, rs_on);
        workgroupBarrier();
    }
    store_tile(row0, col0, lid.xy, &acc, wg.z);
    if (rs_on) {
        store_row_sums(row0, lid.y, rsum, wg.z);
    }
}

// ---- gemm_vec4: the same product with one vec4 load per operand per thread per k-step ----
// For operands contiguous along one dimension whose other stride and offset are multiples
// of 4 (the host checks). A is contiguous along k (A_KCONTIG) or along m; B along k
// (B_KCONTIG) or along n. A 64 x 16 tile is then 256 vec4s, one per thread (a 32-row tile of
// A: 128, one per thread of the first half). Only the last vec4 along the contiguous
// dimension can cross the matrix's edge (z padded to 52 floats a row holds 50): its lanes
// past the edge read the padding, inside the buffer (buffers are whole vec4s), and are
// zeroed, so edges stay zero-padded. An operand whose layout allows no vec4 (A_SCALAR,
// B_SCALAR: a weight matrix whose rows are 50 long) is loaded as `gemm` loads it, so the
// other operand still loads vec4s: the registers staged are the same either way.

// Thread t's vec4 of an `extent` x 16 tile as (k, i) of its first element: along k it
// covers k .. k + 3 at i, else i .. i + 3 at k.
fn vec4_coord(t: u32, k_contig: bool, extent: u32) -> vec2<u32> {
    if (k_contig) {
        return vec2<u32>((t % 4u) * 4u, t / 4u);
    }
    return vec2<u32>(t / (extent / 4u), (t % (extent / 4u)) * 4u);
}

// The vec4s of A's tile: vec4 t + 256 q is thread t's q-th (one per thread of the first
// 128 for 32-row tiles, two per thread for 128-row tiles).
const A_VEC4S: u32 = TILE_M * TK / 4u;

fn load_a4(t: u32, row0: u32, k0: u32, k_end: u32) -> AStage {
    var v: AStage;
// #if sampled_a
    for (var q = 0u; q < AQ; q++) {
        v[q] = sample_a4_one(t + 256u * q, row0, k0, k_end);
    }
// #else
    if ((g.flags & FLAG_A_SCALAR) != 0u) {
        return load_a(t, row0, k0, k_end);
    }
    for (var q = 0u; q < AQ; q++) {
        v[q] = load_a4_one(t + 256u * q, row0, k0, k_end);
    }
// #endif
    return v;
}

// The lanes of a vec4 starting at `first` that lie before `end`.
fn lanes_before(first: u32, end: u32) -> vec4<bool> {
    return vec4<u32>(first) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(end);
}

fn load_a4_one(t: u32, row0: u32, k0: u32, k_end: u32) -> vec4<f32> {
    let a_k = (g.flags & FLAG_A_KCONTIG) != 0u;
    let kc = vec4_coord(t, a_k, TILE_M);
    let ka = k0 + kc.x;
    var va = vec4<f32>(0.0);
    if (t < A_VEC4S && row0 + kc.y < g.m && ka < k_end) {
        va = mat_a4[(g.a_off + (row0 + kc.y) * g.a_rs + ka * g.a_cs) / 4u];
        let inside = select(lanes_before(row0 + kc.y, g.m), lanes_before(ka, k_end), a_k);
        va = select(vec4<f32>(0.0), va, inside);
        if ((g.flags & FLAG_SCALE_K) != 0u) {
            if (a_k) {
                // Lanes past k are zero already; their scale index stays inside k.
                let last = k_end - 1u;
                va = va * vec4<f32>(epi[g.e_off + ka], epi[g.e_off + min(ka + 1u, last)], epi[g.e_off + min(ka + 2u, last)], epi[g.e_off + min(ka + 3u, last)]);
            } else {
                va = va * epi[g.e_off + ka];
            }
        }
    }
    return va;
}

// #if sampled_a
// Vec4 t of A's tile drawn (A_KCONTIG: 4 latent dimensions d0 .. d0 + 3 of row r): z =
// mu + sigma eps, zero past k_end; the first column of tiles stores z and eps.
fn sample_a4_one(t: u32, row0: u32, k0: u32, k_end: u32) -> vec4<f32> {
    let kc = vec4_coord(t, true, TILE_M);
    let r = row0 + kc.y;
    let d0 = k0 + kc.x;
    var zv = vec4<f32>(0.0);
    if (t >= A_VEC4S || r >= g.m || d0 >= k_end) {
        return zv;
    }
    let b = r / g.samples;
    let s = r % g.samples;
    let key = vec2<u32>(noise.seed_lo, noise.seed_hi);
    let dp = noise.first_datapoint + b;
    // Normals j0 .. j0 + 3 span at most two Philox blocks.
    let j0 = (noise.first_sample + s) * g.noise_dim + g.eps_off + d0;
    let lo = box_muller4(uniforms4(key, noise.stream, noise.step, dp, j0 / 4u));
    var hi = lo;
    if (j0 % 4u != 0u) {
        hi = box_muller4(uniforms4(key, noise.stream, noise.step, dp, j0 / 4u + 1u));
    }
    let h = select(b, r, g.head_per_row != 0u);
    for (var i = 0u; i < 4u; i++) {
        let d = d0 + i;
        if (d < k_end) {
            let q = j0 % 4u + i;
            let e = select(lo[q % 4u], hi[q % 4u], q >= 4u);
            let z = smp_head[h * 2u * g.k + d] + exp(smp_head[h * 2u * g.k + g.k + d]) * e;
            zv[i] = z;
            if (store_latent) {
                smp_eps[r * g.noise_dim + g.eps_off + d] = e;
                smp_z[g.a_off + r * g.a_rs + d] = z;
            }
        }
    }
    return zv;
}
// #endif

fn load_b4(t: u32, col0: u32, k0: u32, k_end: u32) -> vec4<f32> {
    if ((g.flags & FLAG_B_SCALAR) != 0u) {
        return load_b(t, col0, k0, k_end);
    }
    let b_k = (g.flags & FLAG_B_KCONTIG) != 0u;
    let kc = vec4_coord(t, b_k, TILE);
    let kb = k0 + kc.x;
    if (col0 + kc.y < g.n && kb < k_end) {
        let vb = mat_b4[(g.b_off + kb * g.b_rs + (col0 + kc.y) * g.b_cs) / 4u];
        let inside = select(lanes_before(col0 + kc.y, g.n), lanes_before(kb, k_end), b_k);
        return select(vec4<f32>(0.0), vb, inside);
    }
    return vec4<f32>(0.0);
}

fn store_a4(t: u32, va: vec4<f32>) {
    let a_k = (g.flags & FLAG_A_KCONTIG) != 0u;
    let ka = vec4_coord(t, a_k, TILE_M);
    if (t >= A_VEC4S) {
        // No element of A's tile (32-row tiles).
    } else if (a_k) {
        for (var j = 0u; j < 4u; j++) {
            put_a(ka.x + j, ka.y, va[j]);
        }
    } else {
        tile_a[ka.x * ROW4A + ka.y / 4u] = va;
    }
}

// A vec4 along i is one shared vec4 (i is a multiple of 4); along k, four scalars.
fn store_loaded4(t: u32, va_in: AStage, vb: vec4<f32>) {
    if ((g.flags & FLAG_A_SCALAR) != 0u) {
        store_a(t, va_in);
    } else {
        var va = va_in; // dynamic indexing needs a variable, not a value
        for (var q = 0u; q < AQ; q++) {
            store_a4(t + 256u * q, va[q]);
        }
    }
    if ((g.flags & FLAG_B_SCALAR) != 0u) {
        store_b(t, vb);
        return;
    }
    let b_k = (g.flags & FLAG_B_KCONTIG) != 0u;
    let kb = vec4_coord(t, b_k, TILE);
    if (b_k) {
        for (var j = 0u; j < 4u; j++) {
            put_b(kb.x + j, kb.y, vb[j]);
        }
    } else {
        tile_b[kb.x * ROW4 + kb.y / 4u] = vb;
    }
}

@compute @workgroup_size(16, 16, 1)
fn gemm_vec4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
// #if sampled_a
    store_latent = wg.x == 0u;
// #endif
    let row0 = wg.y * TILE_M;
    let col0 = wg.x * TILE;
    let t = lid.y * 16u + lid.x;
    var acc: array<vec4<f32>, RPT>; // zero-initialized
    let kr = k_range(wg.z);
    let rs_on = (g.flags & FLAG_ROW_SUMS) != 0u && wg.x == 0u && lid.x == 0u;
    var rsum = vec4<f32>(0.0);
    var va = load_a4(t, row0, kr.x, kr.y);
    var vb = load_b4(t, col0, kr.x, kr.y);
    for (var k0 = kr.x; k0 < kr.y; k0 += TK) {
        store_loaded4(t, va, vb);
        workgroupBarrier();
        if (k0 + TK < kr.y) {
            va = load_a4(t, row0, k0 + TK, kr.y);
            vb = load_b4(t, col0, k0 + TK, kr.y);
        }
        multiply_tile(lid.xy, &acc, &rsum, rs_on);
        workgroupBarrier();
    }
    store_tile(row0, col0, lid.xy, &acc, wg.z);
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
