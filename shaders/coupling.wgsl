// Coupled Markov chains on the IWAE-extended space, one thread per datapoint: the WGSL twin
// of src/coupling/chain.rs (`step`), in f32, on the same Philox uniforms (stream Coupling,
// counter (step, datapoint, time index)). Particle ids follow chain.rs's layout; `hist` holds
// every log-weight drawn so far and `coef` the decoder coefficients, both [batch, cap].
// Needs rng.wgsl.

struct Chain {
    batch: u32, cap: u32, kernel: u32, kk: u32,      // kernel: KERNEL_PIMH, KERNEL_ISIR, KERNEL_DISIR
    burn_in: u32, horizon: u32, lag: u32, max_iters: u32,
    t: u32, start: u32, len: u32, step: u32,         // this time index; its log-weights' ids
    seed_lo: u32, seed_hi: u32, first_datapoint: u32, _p0: u32,
    row0: u32, rows: u32, scale: f32, _p1: u32,      // chain_gather: a group of rows
}

// State words per datapoint (chain.rs ChainState): t, tau (0: not met), flags, x, y, particles.
// STATE_WORDS, the flags FLAG_DONE and FLAG_CAPPED, the kernels KERNEL_* and the Philox
// stream STREAM_COUPLING come from the prelude generated from src/backend/gpu/chains.rs.

@group(0) @binding(0) var<uniform> ch: Chain;
@group(0) @binding(1) var<storage, read> lw: array<f32>;            // [batch, len]: this pass
@group(0) @binding(2) var<storage, read_write> hist: array<f32>;    // [batch, cap]
@group(0) @binding(3) var<storage, read_write> state: array<u32>;   // [batch, STATE_WORDS]
@group(0) @binding(4) var<storage, read_write> coef: array<f32>;    // [3, batch, cap]: a, b, c
@group(0) @binding(5) var<storage, read_write> running: array<atomic<u32>>;
@group(0) @binding(6) var<storage, read_write> objective: array<f32>; // [batch]

// Number of l in [k, m] with l <= t - L and L | t - l, over m - k + 1 (chain.rs bc_weight).
fn bc_weight(t: u32, k: u32, m: u32, lag: u32) -> f32 {
    if (t < k + lag) {
        return 0.0;
    }
    let hi = min(t - lag, m);
    let off = (hi % lag + lag - t % lag) % lag;
    if (hi < k + off) {
        return 0.0;
    }
    let top = hi - off;
    return f32((top - k) / lag + 1u) / f32(m - k + 1u);
}

// ---- ISIR/DISIR sets: slot 0 the conditioning particle `cond`, slots 1..K the block ----
fn slot_id(cond: u32, block: u32, j: u32) -> u32 {
    return select(block + j - 1u, cond, j == 0u);
}

fn set_max(base: u32, cond: u32, block: u32) -> f32 {
    var c = hist[base + cond];
    for (var j = 1u; j < ch.kk; j++) {
        c = max(c, hist[base + block + j - 1u]);
    }
    return c;
}

// sum_j exp(l_j - c) over the set.
fn set_sum(base: u32, cond: u32, block: u32, c: f32) -> f32 {
    var s = 0.0;
    for (var j = 0u; j < ch.kk; j++) {
        s += exp(hist[base + slot_id(cond, block, j)] - c);
    }
    return s;
}

// Normalised weight of slot j.
fn set_w(base: u32, cond: u32, block: u32, j: u32, c: f32, s: f32) -> f32 {
    return exp(hist[base + slot_id(cond, block, j)] - c) / s;
}

// coef += scale * softmax over the set.
fn set_add_rb(b: u32, cond: u32, block: u32, scale: f32) {
    if (scale == 0.0) {
        return;
    }
    let base = b * ch.cap;
    let c = set_max(base, cond, block);
    let s = set_sum(base, cond, block, c);
    for (var j = 0u; j < ch.kk; j++) {
        let id = slot_id(cond, block, j);
        coef[base + id] += scale * exp(hist[base + id] - c) / s;
    }
}

// ---- PIMH sets: K consecutive ids from `first` ----
fn run_max(base: u32, first: u32) -> f32 {
    var c = hist[base + first];
    for (var j = 1u; j < ch.kk; j++) {
        c = max(c, hist[base + first + j]);
    }
    return c;
}

fn run_log_sum(base: u32, first: u32) -> f32 {
    let c = run_max(base, first);
    var s = 0.0;
    for (var j = 0u; j < ch.kk; j++) {
        s += exp(hist[base + first + j] - c);
    }
    return c + log(s);
}

fn run_add_rb(b: u32, first: u32, scale: f32) {
    if (scale == 0.0) {
        return;
    }
    let base = b * ch.cap;
    let c = run_max(base, first);
    var s = 0.0;
    for (var j = 0u; j < ch.kk; j++) {
        s += exp(hist[base + first + j] - c);
    }
    for (var j = 0u; j < ch.kk; j++) {
        coef[base + first + j] += scale * exp(hist[base + first + j] - c) / s;
    }
}

// ISIR selection (kernels.rs isir_select): the slot whose cumulative weight passes u * total,
// skipping zero weights; rounding at the top falls back to the last positive slot.
fn isir_select(base: u32, cond: u32, block: u32, u: f32) -> u32 {
    let c = set_max(base, cond, block);
    let s = set_sum(base, cond, block, c);
    var total = 0.0;
    for (var j = 0u; j < ch.kk; j++) {
        total += set_w(base, cond, block, j, c, s);
    }
    let goal = u * total;
    var acc = 0.0;
    var last = 0u;
    for (var j = 0u; j < ch.kk; j++) {
        let w = set_w(base, cond, block, j, c, s);
        if (w > 0.0) {
            acc += w;
            last = j;
            if (goal < acc) {
                return j;
            }
        }
    }
    return last;
}

// Coupled ISIR (kernels.rs isir_select_coupled): maximal coupling of the selected particles.
fn isir_select_coupled(b: u32, block: u32, u: vec4<f32>) -> vec2<u32> {
    let base = b * ch.cap;
    let x = state[b * STATE_WORDS + 3u];
    let y = state[b * STATE_WORDS + 4u];
    let cx = set_max(base, x, block);
    let sx = set_sum(base, x, block, cx);
    let cy = set_max(base, y, block);
    let sy = set_sum(base, y, block, cy);
    var a = 0.0;
    for (var j = 1u; j < ch.kk; j++) {
        a += min(set_w(base, x, block, j, cx, sx), set_w(base, y, block, j, cy, sy));
    }
    if (u.x < a) {
        var acc = 0.0;
        var last = 0u;
        for (var j = 1u; j < ch.kk; j++) {
            let m = min(set_w(base, x, block, j, cx, sx), set_w(base, y, block, j, cy, sy));
            if (m > 0.0) {
                acc += m;
                last = j;
                if (u.x < acc) {
                    return vec2<u32>(j, j);
                }
            }
        }
        return vec2<u32>(last, last);
    }
    // Residuals (w - min)^+, slot 0 keeping its whole weight; each drawn with its own uniform.
    var tot_x = 0.0;
    var tot_y = 0.0;
    for (var j = 0u; j < ch.kk; j++) {
        let wx = set_w(base, x, block, j, cx, sx);
        let wy = set_w(base, y, block, j, cy, sy);
        let m = select(min(wx, wy), 0.0, j == 0u);
        tot_x += max(wx - m, 0.0);
        tot_y += max(wy - m, 0.0);
    }
    var pick = vec2<u32>(0u, 0u);
    var found = vec2<bool>(false, false);
    var acc = vec2<f32>(0.0, 0.0);
    let goal = vec2<f32>(u.y * tot_x, u.z * tot_y);
    for (var j = 0u; j < ch.kk; j++) {
        let wx = set_w(base, x, block, j, cx, sx);
        let wy = set_w(base, y, block, j, cy, sy);
        let m = select(min(wx, wy), 0.0, j == 0u);
        let r = vec2<f32>(max(wx - m, 0.0), max(wy - m, 0.0));
        for (var i = 0u; i < 2u; i++) {
            if (!found[i] && r[i] > 0.0) {
                acc[i] += r[i];
                pick[i] = j;
                if (goal[i] < acc[i]) {
                    found[i] = true;
                }
            }
        }
    }
    return pick;
}

// DISIR (kernels.rs disir_select_coupled; the single chain is the case x = y): propose fresh
// slot j with probability w_j / W_f, accept with min(1, W_f / (W_f - w_j + w_0)) on a common
// uniform. Weights on one common scale.
fn disir_select(b: u32, block: u32, x: u32, y: u32, u: vec4<f32>) -> vec2<u32> {
    let base = b * ch.cap;
    var c = max(set_max(base, x, block), hist[base + y]);
    var sf = 0.0;
    for (var j = 1u; j < ch.kk; j++) {
        sf += exp(hist[base + block + j - 1u] - c);
    }
    if (sf <= 0.0) {
        return vec2<u32>(0u, 0u);
    }
    let goal = u.x * sf;
    var acc = 0.0;
    var pick = 0u;
    for (var j = 1u; j < ch.kk; j++) {
        let w = exp(hist[base + block + j - 1u] - c);
        if (w > 0.0) {
            acc += w;
            pick = j;
            if (goal < acc) {
                break;
            }
        }
    }
    let wj = exp(hist[base + block + pick - 1u] - c);
    let w0x = exp(hist[base + x] - c);
    let w0y = exp(hist[base + y] - c);
    let ix = select(0u, pick, u.y * (sf - wj + w0x) < sf);
    let iy = select(0u, pick, u.y * (sf - wj + w0y) < sf);
    return vec2<u32>(ix, iy);
}

@compute @workgroup_size(64)
fn chain_step(@builtin(global_invocation_id) gid: vec3<u32>) {
    let b = gid.x;
    if (b >= ch.batch) {
        return;
    }
    let base = b * ch.cap;
    // This pass's log-weights join the history first.
    for (var j = 0u; j < ch.len; j++) {
        hist[base + ch.start + j] = lw[b * ch.len + j];
    }
    let sw = b * STATE_WORDS;
    var flags = state[sw + 2u];
    if ((flags & FLAG_DONE) != 0u) {
        return;
    }
    let t = ch.t;
    let kk = ch.kk;
    let k = ch.burn_in;
    let m = ch.horizon;
    let lag = ch.lag;
    let mcmc_w = 1.0 / f32(m - k + 1u);
    let pimh = ch.kernel == KERNEL_PIMH;
    let init = select(2u, 2u * kk, pimh);
    let per = select(kk - 1u, kk, pimh);
    if (t == 0u) {
        state[sw + 3u] = 0u;
        state[sw + 4u] = select(1u, kk, pimh);
        state[sw + 5u] = init;
    }
    var tau = state[sw + 1u];
    var x = state[sw + 3u];
    var y = state[sw + 4u];
    var particles = state[sw + 5u];
    let coupled = t >= lag && tau == 0u;
    let block = init + t * per;
    let u = uniforms4(vec2<u32>(ch.seed_lo, ch.seed_hi), STREAM_COUPLING, ch.step, ch.first_datapoint + b, t);
    if (pimh) {
        if (t >= k && t <= m) {
            run_add_rb(b, x, mcmc_w);
        }
        if (coupled) {
            let v = bc_weight(t, k, m, lag);
            run_add_rb(b, x, v);
            run_add_rb(b, y, -v);
        }
        if (!(tau != 0u && t + 1u > m)) {
            particles += kk;
            let lp = run_log_sum(base, block);
            let lx = run_log_sum(base, x);
            let ax = log(u.x) < lp - lx;
            if (coupled) {
                let ly = run_log_sum(base, y);
                let ay = log(u.x) < lp - ly;
                if (ax && ay) {
                    tau = t + 1u;
                }
                if (ay) {
                    y = block;
                }
            }
            if (ax) {
                x = block;
            }
        }
    } else {
        particles += kk - 1u;
        if (t >= k && t <= m) {
            set_add_rb(b, x, block, mcmc_w);
        }
        if (!coupled) {
            var slot = 0u;
            if (ch.kernel == KERNEL_ISIR) {
                slot = isir_select(base, x, block, u.x);
            } else {
                slot = disir_select(b, block, x, x, u).x;
            }
            x = slot_id(x, block, slot);
        } else {
            let v = bc_weight(t, k, m, lag);
            if (v > 0.0) {
                set_add_rb(b, x, block, v);
                set_add_rb(b, y, block, -v);
            }
            var pick = vec2<u32>(0u, 0u);
            if (ch.kernel == KERNEL_ISIR) {
                pick = isir_select_coupled(b, block, u);
            } else {
                pick = disir_select(b, block, x, y, u);
            }
            if (pick.x == pick.y && pick.x >= 1u) {
                tau = t + 1u;
            }
            x = slot_id(x, block, pick.x);
            y = slot_id(y, block, pick.y);
        }
    }
    let next = t + 1u;
    if (tau != 0u && next > m) {
        flags |= FLAG_DONE;
    } else if (next >= ch.max_iters) {
        flags |= FLAG_DONE | FLAG_CAPPED;
    }
    state[sw + 0u] = next;
    state[sw + 1u] = tau;
    state[sw + 2u] = flags;
    state[sw + 3u] = x;
    state[sw + 4u] = y;
    state[sw + 5u] = particles;
    if ((flags & FLAG_DONE) == 0u) {
        atomicAdd(&running[0], 1u);
    }
}

// The encoder's coefficients: IWAE-DReG on the first K particles (independent draws from q),
// b = softmax^2 there and 0 elsewhere, c = 0; the objective is their IWAE bound L_K.
@compute @workgroup_size(64)
fn chain_encoder(@builtin(global_invocation_id) gid: vec3<u32>) {
    let b = gid.x;
    if (b >= ch.batch) {
        return;
    }
    let base = b * ch.cap;
    let c = run_max(base, 0u);
    var s = 0.0;
    for (var j = 0u; j < ch.kk; j++) {
        s += exp(hist[base + j] - c);
    }
    let plane = ch.batch * ch.cap;
    for (var j = 0u; j < ch.kk; j++) {
        let w = exp(hist[base + j] - c) / s;
        coef[plane + base + j] = w * w;
    }
    objective[b] = c + log(s) - log(f32(ch.kk));
}

// One backward chunk's coefficients: particles [start, start + len) of the group of rows
// [row0, row0 + rows), gathered from the chains' [3, batch, cap] into the pass's
// [3, rows, len] and scaled by |group| / batch (a pass averages over its own rows).
@group(0) @binding(7) var<storage, read_write> chunk_coef: array<f32>;

@compute @workgroup_size(256)
fn chain_gather(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let id = gid.x + gid.y * groups.x * 256u;
    let n = ch.rows * ch.len;
    if (id >= n) {
        return;
    }
    let b = ch.row0 + id / ch.len;
    let j = id % ch.len;
    let plane = ch.batch * ch.cap;
    for (var part = 0u; part < 3u; part++) {
        chunk_coef[part * n + id] = ch.scale * coef[part * plane + b * ch.cap + ch.start + j];
    }
}
