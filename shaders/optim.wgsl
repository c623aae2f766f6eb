// Gradient norms, clipping and Adam/AMSGrad (src/optim.rs), plus the running training
// statistics the host reads once in a while instead of every step (adam_step).

struct Adam {
    total: u32, encoder_len: u32, amsgrad: u32, batch: u32,
    beta1: f32, beta2: f32, eps: f32, step_size: f32,
    inv_sqrt_bc2: f32, clip_encoder: f32, clip_decoder: f32, _p0: f32,
}

@group(0) @binding(0) var<uniform> cfg: Adam;
@group(0) @binding(1) var<storage, read_write> params: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> moments: array<f32>; // [3, total]: m, v, v_max
@group(0) @binding(4) var<storage, read_write> norms: array<f32>;   // [2]: encoder, decoder
// [8]: objective, |g_enc|, |g_dec|, steps, non-finite steps, the first one's index among the
// steps (1-based, 0: none) and its mask (1 objective, 2 encoder, 4 decoder), spare.
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;
@group(0) @binding(6) var<storage, read> objective: array<f32>;     // [batch]

var<workgroup> red: array<f32, 256>;

// The gradient norms in two levels, so that many workgroups share the pass over the
// parameters: grad_norm_partials writes one sum of squares per chunk of `chunk` parameters
// (the encoder's chunks first, then the decoder's from encoder_len on), grad_norms adds each
// part's partials in a fixed order. Deterministic: no atomics.
struct NormLayout {
    chunk: u32, enc_groups: u32, groups: u32, _p0: u32,
}

@group(0) @binding(7) var<uniform> nl: NormLayout;
@group(0) @binding(8) var<storage, read_write> partials: array<f32>; // [groups]

// Workgroup tree over red[0..256]; the sum ends in red[0].
fn tree_sum(lid: u32) {
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(256)
fn grad_norm_partials(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32, @builtin(num_workgroups) groups: vec3<u32>) {
    let w = wg.x + wg.y * groups.x;
    if (w >= nl.groups) {
        return;
    }
    var lo = w * nl.chunk;
    var hi = min(cfg.encoder_len, lo + nl.chunk);
    if (w >= nl.enc_groups) {
        lo = cfg.encoder_len + (w - nl.enc_groups) * nl.chunk;
        hi = min(cfg.total, lo + nl.chunk);
    }
    var part = 0.0;
    for (var i = lo + lid; i < hi; i += 256u) {
        part += grad[i] * grad[i];
    }
    red[lid] = part;
    tree_sum(lid);
    if (lid == 0u) {
        partials[w] = red[0];
    }
}

// Workgroup 0: the encoder's norm from its partials, workgroup 1: the decoder's.
@compute @workgroup_size(256)
fn grad_norms(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    var lo = 0u;
    var hi = nl.enc_groups;
    if (wg.x == 1u) {
        lo = nl.enc_groups;
        hi = nl.groups;
    }
    var part = 0.0;
    for (var i = lo + lid; i < hi; i += 256u) {
        part += partials[i];
    }
    red[lid] = part;
    tree_sum(lid);
    if (lid == 0u) {
        norms[wg.x] = sqrt(red[0]);
    }
}

// WGSL lets a compiler assume floats are finite, so the test is on the bits.
fn is_finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

fn clip_factor(norm: f32, limit: f32) -> f32 {
    if (limit > 0.0 && norm > limit) {
        return limit / norm;
    }
    return 1.0;
}

@compute @workgroup_size(256)
fn adam(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * 256u;
    // A non-finite gradient leaves parameters and moments alone (src/backend/cpu/adam.rs).
    if (i >= cfg.total || !is_finite(norms[0]) || !is_finite(norms[1])) {
        return;
    }
    var scale = clip_factor(norms[0], cfg.clip_encoder);
    if (i >= cfg.encoder_len) {
        scale = clip_factor(norms[1], cfg.clip_decoder);
    }
    adam_update(i, grad[i] * scale);
}

// Adam (AMSGrad when asked) on parameter i with its clipped gradient g.
fn adam_update(i: u32, g: f32) {
    let t = cfg.total;
    let m = cfg.beta1 * moments[i] + (1.0 - cfg.beta1) * g;
    let v = cfg.beta2 * moments[t + i] + (1.0 - cfg.beta2) * g * g;
    moments[i] = m;
    moments[t + i] = v;
    var v_used = v;
    if (cfg.amsgrad != 0u) {
        v_used = max(moments[2u * t + i], v);
        moments[2u * t + i] = v_used;
    }
    params[i] += cfg.step_size * m / (sqrt(v_used) * cfg.inv_sqrt_bc2 + cfg.eps);
}

// The step's end in one dispatch (a training step's last): every workgroup adds the norms'
// partials as grad_norms does (same order, so the same bits) and the objective over the
// batch, then clips and takes its share of the Adam step; workgroup 0 also stores the norms
// and adds the step to the running statistics (objective, norms, non-finite steps). Two
// dispatches fewer than grad_norms, adam and a statistics kernel in turn; the redundant sums
// are a few hundred cached loads per workgroup.

// The workgroup's sum of v over its threads, ending in the return value (red is reused).
fn workgroup_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    tree_sum(lid);
    let total = red[0];
    workgroupBarrier();
    return total;
}

fn partials_sum(lid: u32, lo: u32, hi: u32) -> f32 {
    var part = 0.0;
    for (var i = lo + lid; i < hi; i += 256u) {
        part += partials[i];
    }
    return workgroup_sum(lid, part);
}

@compute @workgroup_size(256)
fn adam_step(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32, @builtin(num_workgroups) groups: vec3<u32>) {
    let enc_norm = sqrt(partials_sum(lid, 0u, nl.enc_groups));
    let dec_norm = sqrt(partials_sum(lid, nl.enc_groups, nl.groups));
    var part = 0.0;
    for (var i = lid; i < cfg.batch; i += 256u) {
        part += objective[i];
    }
    let obj = workgroup_sum(lid, part) / f32(cfg.batch);
    let w = wg.x + wg.y * groups.x;
    if (w == 0u && lid == 0u) {
        norms[0] = enc_norm;
        norms[1] = dec_norm;
        var mask = 0u;
        if (!is_finite(obj)) { mask |= 1u; }
        if (!is_finite(enc_norm)) { mask |= 2u; }
        if (!is_finite(dec_norm)) { mask |= 4u; }
        stats[3] += 1.0;
        if (mask == 0u) {
            stats[0] += obj;
            stats[1] += enc_norm;
            stats[2] += dec_norm;
        } else {
            stats[4] += 1.0;
            if (stats[5] == 0.0) {
                stats[5] = stats[3];
                stats[6] = f32(mask);
            }
        }
    }
    let i = w * 256u + lid;
    if (i >= cfg.total || !is_finite(enc_norm) || !is_finite(dec_norm)) {
        return;
    }
    var scale = clip_factor(enc_norm, cfg.clip_encoder);
    if (i >= cfg.encoder_len) {
        scale = clip_factor(dec_norm, cfg.clip_decoder);
    }
    adam_update(i, grad[i] * scale);
}
