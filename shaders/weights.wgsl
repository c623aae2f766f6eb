// Per-datapoint normalisation of the log-weights and the estimators' coefficients,
// interpreted from a CoefficientProgram (src/estimators/device.rs): backends run every
// estimator without knowing it. One workgroup per datapoint, any number of samples.

struct Program {
    batch: u32, n: u32, mode: u32, n_terms: u32,
    pa: vec4<f32>, // (1/N, w, w^2) weights of a
    pb: vec4<f32>,
    pc: vec4<f32>,
    // Subset programs: (encoder rule, DReG block size, scratch slots per datapoint, 0).
    extra: vec4<u32>,
}

// prog.mode: MODE_SOFTMAX (objective L_N), MODE_SOFTMAX_MEAN (objective mean(l)),
// MODE_JACKKNIFE, MODE_JACKKNIFE_DREG; MODE_SUBSETS runs subset_coefficients, whose encoder
// rule is prog.extra.x (RULE_*). All come from the prelude generated from
// src/backend/gpu/weights.rs.

@group(0) @binding(0) var<uniform> prog: Program;
@group(0) @binding(1) var<storage, read> lw: array<f32>;            // [batch, n]
@group(0) @binding(2) var<storage, read_write> coef: array<f32>;    // [3, batch * n]: a, b, c
@group(0) @binding(3) var<storage, read_write> objective: array<f32>; // [batch]

const WG: u32 = 64u;
// One slot per thread for the workgroup tree, or per subgroup plus the result (slot WG).
var<workgroup> red: array<f32, 65>;

// #if subgroups
// Subgroup path: each subgroup reduces in registers, one lane per subgroup writes its partial,
// and one thread combines the partials. Nothing assumes a subgroup size: the partials are
// indexed by subgroup_id and counted by num_subgroups.
var<private> sg_lane: u32;
var<private> sg_id: u32;
var<private> sg_count: u32;

fn set_lanes(lane: u32, id: u32, count: u32) {
    sg_lane = lane;
    sg_id = id;
    sg_count = count;
}

fn combine(lid: u32, op: u32) -> f32 {
    workgroupBarrier();
    if (lid == 0u) {
        var t = red[0];
        for (var i = 1u; i < sg_count; i++) {
            if (op == 0u) {
                t += red[i];
            } else if (op == 1u) {
                t = max(t, red[i]);
            } else {
                t = min(t, red[i]);
            }
        }
        red[WG] = t;
    }
    workgroupBarrier();
    let r = red[WG];
    workgroupBarrier();
    return r;
}

fn reduce_sum(lid: u32, v: f32) -> f32 {
    let s = subgroupAdd(v);
    if (sg_lane == 0u) {
        red[sg_id] = s;
    }
    return combine(lid, 0u);
}

fn reduce_max(lid: u32, v: f32) -> f32 {
    let s = subgroupMax(v);
    if (sg_lane == 0u) {
        red[sg_id] = s;
    }
    return combine(lid, 1u);
}

fn reduce_min(lid: u32, v: f32) -> f32 {
    let s = subgroupMin(v);
    if (sg_lane == 0u) {
        red[sg_id] = s;
    }
    return combine(lid, 2u);
}
// #else
// Workgroup path (adapters without subgroups): a shared-memory tree.
fn reduce_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn reduce_max(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] = max(red[lid], red[lid + s]);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn reduce_min(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] = min(red[lid], red[lid + s]);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}
// #endif

const NEG_HUGE: f32 = -3.0e38;

@compute @workgroup_size(64)
fn coefficients(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
// #if subgroups
    @builtin(subgroup_invocation_id) sgl: u32,
    @builtin(subgroup_id) sgi: u32,
    @builtin(num_subgroups) sgn: u32,
// #endif
) {
// #if subgroups
    set_lanes(sgl, sgi, sgn);
// #endif
    let b = wg.x;
    let n = prog.n;
    let rows = prog.batch * n;
    let base = b * n;
    let nf = f32(n);
    var m_part = NEG_HUGE;
    for (var i = lid; i < n; i += WG) {
        m_part = max(m_part, lw[base + i]);
    }
    let m = reduce_max(lid, m_part);
    var s_part = 0.0;
    var l_part = 0.0;
    for (var i = lid; i < n; i += WG) {
        s_part += exp(lw[base + i] - m);
        l_part += lw[base + i];
    }
    let total = reduce_sum(lid, s_part);
    let sum_l = reduce_sum(lid, l_part);

    if (prog.mode == MODE_SOFTMAX || prog.mode == MODE_SOFTMAX_MEAN) {
        for (var i = lid; i < n; i += WG) {
            let w = exp(lw[base + i] - m) / total;
            let basis = vec4<f32>(1.0 / nf, w, w * w, 0.0);
            coef[base + i] = dot(prog.pa, basis);
            coef[rows + base + i] = dot(prog.pb, basis);
            coef[2u * rows + base + i] = dot(prog.pc, basis);
        }
        if (lid == 0u) {
            objective[b] = select(m + log(total) - log(nf), sum_l / nf, prog.mode == MODE_SOFTMAX_MEAN);
        }
        return;
    }

    // Jackknife (Nowozin 2018): J = N L_N - (N-1)/N sum_i L_{N-1}^(-i). Leave-one-out sums
    // are S - e_i except for the largest weight, whose complement is summed afresh, so no
    // sum loses its digits to cancellation.
    var first = f32(n);
    for (var i = lid; i < n; i += WG) {
        if (lw[base + i] == m) {
            first = min(first, f32(i));
        }
    }
    let top = u32(reduce_min(lid, first));
    var m2_part = NEG_HUGE;
    for (var i = lid; i < n; i += WG) {
        if (i != top) {
            m2_part = max(m2_part, lw[base + i]);
        }
    }
    let m2 = reduce_max(lid, m2_part);
    var s2_part = 0.0;
    for (var i = lid; i < n; i += WG) {
        if (i != top) {
            s2_part += exp(lw[base + i] - m2);
        }
    }
    let lse_top = m2 + log(reduce_sum(lid, s2_part));
    // lse_{-i} for every i, kept in the c slot until the end; T1, T2 over i != top.
    var t1_part = 0.0;
    var t2_part = 0.0;
    var loo_part = 0.0;
    for (var i = lid; i < n; i += WG) {
        var lse_i = lse_top;
        if (i != top) {
            lse_i = m + log(total - exp(lw[base + i] - m));
            let q = exp(m - lse_i);
            t1_part += q;
            t2_part += q * q;
        }
        coef[2u * rows + base + i] = lse_i;
        loo_part += lse_i;
    }
    let t1 = reduce_sum(lid, t1_part);
    let t2 = reduce_sum(lid, t2_part);
    let sum_lse = reduce_sum(lid, loo_part);
    let k = (nf - 1.0) / nf;
    for (var i = lid; i < n; i += WG) {
        let l = lw[base + i];
        let e = exp(l - m);
        let w = e / total;
        var s1 = t1;
        var s2 = t2;
        if (i != top) {
            let q = exp(m - coef[2u * rows + base + i]);
            s1 = e * (t1 - q) + exp(l - lse_top);
            s2 = e * e * (t2 - q * q) + exp(2.0 * (l - lse_top));
        }
        let a = nf * w - k * s1;
        coef[base + i] = a;
        if (prog.mode == MODE_JACKKNIFE_DREG) {
            coef[rows + base + i] = nf * w * w - k * s2;
            coef[2u * rows + base + i] = 0.0;
        } else {
            coef[rows + base + i] = a;
            coef[2u * rows + base + i] = a;
        }
    }
    if (lid == 0u) {
        let l_n = m + log(total) - log(nf);
        objective[b] = nf * l_n - k * (sum_lse - nf * log(nf - 1.0));
    }
}

// ---- lse_accumulate: running log-sum-exp over chunks of samples (evaluation L_K) ----
// state[2b] = running max, state[2b + 1] = sum of exp(l - max) so far. One workgroup per
// datapoint; `first` starts a new accumulation.
struct LseChunk {
    batch: u32, n: u32, first: u32, _p0: u32,
}

@group(0) @binding(0) var<uniform> chunk: LseChunk;
@group(0) @binding(1) var<storage, read> chunk_lw: array<f32>;       // [batch, n]
@group(0) @binding(2) var<storage, read_write> lse_state: array<f32>; // [batch, 2]

@compute @workgroup_size(64)
fn lse_accumulate(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
// #if subgroups
    @builtin(subgroup_invocation_id) sgl: u32,
    @builtin(subgroup_id) sgi: u32,
    @builtin(num_subgroups) sgn: u32,
// #endif
) {
// #if subgroups
    set_lanes(sgl, sgi, sgn);
// #endif
    let b = wg.x;
    let base = b * chunk.n;
    var m_part = NEG_HUGE;
    for (var i = lid; i < chunk.n; i += WG) {
        m_part = max(m_part, chunk_lw[base + i]);
    }
    let m_chunk = reduce_max(lid, m_part);
    var s_part = 0.0;
    for (var i = lid; i < chunk.n; i += WG) {
        s_part += exp(chunk_lw[base + i] - m_chunk);
    }
    let s_chunk = reduce_sum(lid, s_part);
    if (lid == 0u) {
        if (chunk.first != 0u) {
            lse_state[2u * b] = m_chunk;
            lse_state[2u * b + 1u] = s_chunk;
        } else {
            let m_old = lse_state[2u * b];
            let s_old = lse_state[2u * b + 1u];
            let m_new = max(m_old, m_chunk);
            lse_state[2u * b] = m_new;
            lse_state[2u * b + 1u] = s_old * exp(m_old - m_new) + s_chunk * exp(m_chunk - m_new);
        }
    }
}

// ---- subset_coefficients: SUMO's prefixes and MLMC's dyadic blocks ----
// objective = sum_t weight_t sum_{S of term t} (logsumexp(l_S) - ln |S|),
// a_n = sum_t weight_t exp(l_n - logsumexp(l_{S_t(n)})). Terms are (blocks?, size, weight, 0):
// a prefix [0, size) or every aligned block of size. Block log-sum-exps go to `scratch`
// first (extra.z slots per datapoint), then each sample sums its terms. Encoder rules
// (extra.x): 0 DReG over blocks of extra.y samples, whose log-sum-exps are the last term's
// (the host appends it with weight 0); 1 unbiased RWS (b = 0, c = -a); 2 variance
// (b = c = -2 objective a); 3 IWAE on the last extra.w samples, the terms on the others.
// Mirrors evaluate_subsets in src/estimators/program.rs.
@group(0) @binding(4) var<storage, read> terms: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> scratch: array<f32>;

@compute @workgroup_size(64)
fn subset_coefficients(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
// #if subgroups
    @builtin(subgroup_invocation_id) sgl: u32,
    @builtin(subgroup_id) sgi: u32,
    @builtin(num_subgroups) sgn: u32,
// #endif
) {
// #if subgroups
    set_lanes(sgl, sgi, sgn);
// #endif
    let b = wg.x;
    let n_all = prog.n;
    // The terms cover the first n samples; the last extra.w are the encoder's own (IWAE).
    let n = n_all - prog.extra.w;
    let rows = prog.batch * n_all;
    let base = b * n_all;
    let sbase = b * prog.extra.z;
    var slot = 0u;
    var obj_part = 0.0;
    // Prefix terms share one running log-sum-exp over [0, run_n) in thread 0, extended
    // from one prefix to the next: SUMO's m, m+1, ..., N prefixes cost O(N), not O(N K).
    var run_m = NEG_HUGE;
    var run_s = 0.0;
    var run_n = 0u;
    for (var t = 0u; t < prog.n_terms; t++) {
        let term = terms[t];
        let size = u32(term.y);
        if (term.x > 0.5) {
            let count = n / size;
            for (var bi = lid; bi < count; bi += WG) {
                let start = bi * size;
                var m = NEG_HUGE;
                for (var i = start; i < start + size; i++) {
                    m = max(m, lw[base + i]);
                }
                var total = 0.0;
                for (var i = start; i < start + size; i++) {
                    total += exp(lw[base + i] - m);
                }
                let lse = m + log(total);
                scratch[sbase + slot + bi] = lse;
                obj_part += term.z * (lse - log(f32(size)));
            }
            slot += count;
        } else {
            if (lid == 0u) {
                if (size < run_n) {
                    run_m = NEG_HUGE;
                    run_s = 0.0;
                    run_n = 0u;
                }
                for (var i = run_n; i < size; i++) {
                    let v = lw[base + i];
                    if (v > run_m) {
                        run_s = run_s * exp(run_m - v) + 1.0;
                        run_m = v;
                    } else {
                        run_s += exp(v - run_m);
                    }
                }
                run_n = size;
                let lse = run_m + log(run_s);
                scratch[sbase + slot] = lse;
                obj_part += term.z * (lse - log(f32(size)));
            }
            slot += 1u;
        }
    }
    storageBarrier();
    let obj = reduce_sum(lid, obj_part);
    for (var i = lid; i < n; i += WG) {
        let l = lw[base + i];
        var a = 0.0;
        var at = 0u;
        var last_lse = 0.0;
        for (var t = 0u; t < prog.n_terms; t++) {
            let term = terms[t];
            let size = u32(term.y);
            if (term.x > 0.5) {
                last_lse = scratch[sbase + at + i / size];
                a += term.z * exp(l - last_lse);
                at += n / size;
            } else {
                if (i < size) {
                    a += term.z * exp(l - scratch[sbase + at]);
                }
                at += 1u;
            }
        }
        coef[base + i] = a;
        if (prog.extra.x == RULE_DREG_BLOCKS) {
            let w = exp(l - last_lse);
            coef[rows + base + i] = w * w / f32(n / prog.extra.y);
            coef[2u * rows + base + i] = 0.0;
        } else if (prog.extra.x == RULE_UNBIASED_RWS) {
            coef[rows + base + i] = 0.0;
            coef[2u * rows + base + i] = -a;
        } else if (prog.extra.x == RULE_VARIANCE) {
            coef[rows + base + i] = -2.0 * obj * a;
            coef[2u * rows + base + i] = -2.0 * obj * a;
        } else { // RULE_IWAE_TAIL: the terms' samples train the decoder only
            coef[rows + base + i] = 0.0;
            coef[2u * rows + base + i] = 0.0;
        }
    }
    // The encoder's own samples (none unless RULE_IWAE_TAIL): a = 0, b = c = their softmax.
    var tm = NEG_HUGE;
    for (var i = n + lid; i < n_all; i += WG) {
        tm = max(tm, lw[base + i]);
    }
    let t_max = reduce_max(lid, tm);
    var ts = 0.0;
    for (var i = n + lid; i < n_all; i += WG) {
        ts += exp(lw[base + i] - t_max);
    }
    let t_sum = reduce_sum(lid, ts);
    for (var i = n + lid; i < n_all; i += WG) {
        let w = exp(lw[base + i] - t_max) / t_sum;
        coef[base + i] = 0.0;
        coef[rows + base + i] = w;
        coef[2u * rows + base + i] = w;
    }
    if (lid == 0u) {
        objective[b] = obj;
    }
}

// ---- copy_columns: the chunked step's gather, a strided copy of planes x rows x len words ----
// Word (p, r, j) goes from src[src_off + p src_plane + r src_row + j] to dst[dst_off + p
// dst_plane + r dst_row + j]: one chunk's log-weights [batch, len] into the whole step's
// [batch, N] at column s0, and the whole step's coefficients' columns [s0, s0 + len) of a, b
// and c back into the chunk's [3, batch, len]. Words, not floats, so the copy is bitwise.
struct Columns {
    rows: u32, len: u32, planes: u32, _p0: u32,
    src_off: u32, src_row: u32, src_plane: u32, _p1: u32,
    dst_off: u32, dst_row: u32, dst_plane: u32, _p2: u32,
}

@group(0) @binding(0) var<uniform> cols: Columns;
@group(0) @binding(1) var<storage, read> cols_src: array<u32>;
@group(0) @binding(2) var<storage, read_write> cols_dst: array<u32>;

@compute @workgroup_size(256)
fn copy_columns(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let id = gid.x + gid.y * groups.x * 256u;
    let plane = cols.rows * cols.len;
    if (id >= cols.planes * plane) {
        return;
    }
    let p = id / plane;
    let r = (id % plane) / cols.len;
    let j = id % cols.len;
    cols_dst[cols.dst_off + p * cols.dst_plane + r * cols.dst_row + j] =
        cols_src[cols.src_off + p * cols.src_plane + r * cols.src_row + j];
}
