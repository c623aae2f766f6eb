// The VAE's stochastic layer and likelihood: sampling z = mu + sigma * eps, the
// log-weights l = log p(x|z) + log p(z) - log q(z|x), and the encoder's upstream gradient
// sum_n (b_n P_n + c_n S_n) (the closed forms of P and S: docs/design.md §1). Needs rng.wgsl.

// lik: LIK_BERNOULLI (logits) or LIK_GAUSSIAN (means) with inv_var = 1 / s^2 and log_norm =
// -0.5 ln(2 pi s^2) per dimension (src/model/mod.rs, Likelihood). LIK_* come from the
// prelude generated from src/backend/gpu/vae.rs.
struct Shape {
    batch: u32, n: u32, rows: u32, x_dim: u32,
    z_dim: u32, lik: u32, inv_var: f32, log_norm: f32,
}

// Where this pass's noise comes from (src/backend/mod.rs, Noise).
struct NoiseAt {
    seed_lo: u32, seed_hi: u32, stream: u32, step: u32,
    first_datapoint: u32, first_sample: u32, _p0: u32, _p1: u32,
}

@group(0) @binding(0) var<uniform> shape: Shape;

fn linear_id(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return gid.x + gid.y * groups.x * 256u;
}

// ---- sample_z: one thread per (row, latent dimension) ----
@group(0) @binding(1) var<uniform> noise: NoiseAt;
@group(0) @binding(2) var<storage, read> s_enc_out: array<f32>;   // [batch, 2 z]: mu, log sigma
@group(0) @binding(3) var<storage, read_write> s_eps: array<f32>; // [rows, z]
@group(0) @binding(4) var<storage, read_write> s_z: array<f32>;   // [rows, z]

@compute @workgroup_size(256)
fn sample_z(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let id = linear_id(gid, groups);
    let zd = shape.z_dim;
    if (id >= shape.rows * zd) {
        return;
    }
    let r = id / zd;
    let d = id % zd;
    let b = r / shape.n;
    let s = r % shape.n;
    let key = vec2<u32>(noise.seed_lo, noise.seed_hi);
    let e = normal_at(key, noise.stream, noise.step, noise.first_datapoint + b, (noise.first_sample + s) * zd + d);
    let mu = s_enc_out[b * 2u * zd + d];
    let ls = s_enc_out[b * 2u * zd + zd + d];
    s_eps[id] = e;
    s_z[id] = mu + exp(ls) * e;
}

// ---- log_weights: one workgroup per row ----
@group(0) @binding(1) var<storage, read> l_x: array<f32>;             // [batch, x_dim]
@group(0) @binding(2) var<storage, read_write> l_logits: array<f32>;  // [rows, x_dim] -> d log p(x|z) / d out
@group(0) @binding(3) var<storage, read> l_eps: array<f32>;
@group(0) @binding(4) var<storage, read> l_z: array<f32>;
@group(0) @binding(5) var<storage, read> l_enc_out: array<f32>;
@group(0) @binding(6) var<storage, read_write> l_out: array<f32>;     // [rows]

var<workgroup> red: array<f32, 64>;

@compute @workgroup_size(64)
fn log_weights(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = wg.x + wg.y * groups.x;
    // Uniform per workgroup, so the barriers below stay in uniform control flow.
    let in_range = r < shape.rows;
    var part = 0.0;
    if (in_range) {
        let b = r / shape.n;
        let xd = shape.x_dim;
        if (shape.lik == LIK_GAUSSIAN) {
            for (var i = lid; i < xd; i += 64u) {
                let res = l_x[b * xd + i] - l_logits[r * xd + i];
                part += shape.log_norm - 0.5 * shape.inv_var * res * res;
                l_logits[r * xd + i] = res * shape.inv_var;
            }
        } else {
            for (var i = lid; i < xd; i += 64u) {
                let l = l_logits[r * xd + i];
                let x = l_x[b * xd + i];
                let e = exp(-abs(l));
                let inv = 1.0 / (1.0 + e);
                let sig = select(e * inv, inv, l >= 0.0);
                part += x * l - (max(l, 0.0) + log(1.0 + e));
                l_logits[r * xd + i] = x - sig;
            }
        }
        let zd = shape.z_dim;
        for (var d = lid; d < zd; d += 64u) {
            let e = l_eps[r * zd + d];
            let z = l_z[r * zd + d];
            // log p(z) - log q(z|x); the 2 pi constants cancel.
            part += 0.5 * (e * e - z * z) + l_enc_out[b * 2u * zd + zd + d];
        }
    }
    red[lid] = part;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    if (in_range && lid == 0u) {
        l_out[r] = red[0];
    }
}

// ---- encoder_upstream: one thread per (datapoint, latent dimension) ----
// up_mu = sum_n b_n (g_z + eps/sigma) - c_n eps/sigma,
// up_ls = sum_n b_n (sigma eps g_z + eps^2) + c_n (1 - eps^2), g_z = dz_lik - z.
@group(0) @binding(1) var<storage, read> u_coef: array<f32>;  // [3, rows]: a, b, c
@group(0) @binding(2) var<storage, read> u_eps: array<f32>;
@group(0) @binding(3) var<storage, read> u_z: array<f32>;
@group(0) @binding(4) var<storage, read> u_dz: array<f32>;    // [rows, z]: d log p(x|z) / dz
@group(0) @binding(5) var<storage, read> u_enc_out: array<f32>;
@group(0) @binding(6) var<storage, read_write> u_up: array<f32>; // [batch, 2 z]

@compute @workgroup_size(256)
fn encoder_upstream(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let id = linear_id(gid, groups);
    let zd = shape.z_dim;
    if (id >= shape.batch * zd) {
        return;
    }
    let b = id / zd;
    let d = id % zd;
    let sigma = exp(u_enc_out[b * 2u * zd + zd + d]);
    var up_mu = 0.0;
    var up_ls = 0.0;
    for (var s = 0u; s < shape.n; s++) {
        let r = b * shape.n + s;
        let bc = u_coef[shape.rows + r];
        let cc = u_coef[2u * shape.rows + r];
        let e = u_eps[r * zd + d];
        let e_over_s = e / sigma;
        let gz = u_dz[r * zd + d] - u_z[r * zd + d];
        up_mu += bc * (gz + e_over_s) - cc * e_over_s;
        up_ls += bc * (sigma * e * gz + e * e) + cc * (1.0 - e * e);
    }
    u_up[b * 2u * zd + d] = up_mu;
    u_up[b * 2u * zd + zd + d] = up_ls;
}
