// The VAE's stochastic layer and likelihood: the log-weights l = log p(x|z) + log p(z) -
// log q(z|x), and the encoder's upstream gradient sum_n (b_n P_n + c_n S_n) (the closed forms
// of P and S: docs/design.md §1); at the end the two-stochastic-layer model's kernels
// (docs/design.md §4). z = mu + sigma * eps and eps itself are drawn inside the GEMM that
// first reads z (matmul.wgsl, `sampled_a`), and read here.

// lik: LIK_BERNOULLI (logits) or LIK_GAUSSIAN (means) with inv_var = 1 / s^2 and log_norm =
// -0.5 ln(2 pi s^2) per dimension (src/model/mod.rs, Likelihood). LIK_* come from the
// prelude generated from src/backend/gpu/vae.rs.
// z2_dim and noise_dim = z_dim + z2_dim: the two-layer model (z2_dim 0 for one layer).
// z_ld: the row stride of z (z1) and of its gradient from the decoder (dz, or from q(z2 | z1)
// dzq): z_dim rounded up to whole vec4s, so the GEMMs through the latent load vec4s
// (src/backend/gpu/buffers.rs). Every other per-row buffer is dense.
// c_dim: the conditional model's context pixels (0 otherwise); its decoder models the
// x_dim - c_dim pixels after them.
struct Shape {
    batch: u32, n: u32, rows: u32, x_dim: u32,
    z_dim: u32, lik: u32, inv_var: f32, log_norm: f32,
    z2_dim: u32, noise_dim: u32, z_ld: u32, c_dim: u32,
}

@group(0) @binding(0) var<uniform> shape: Shape;

fn linear_id(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return gid.x + gid.y * groups.x * 256u;
}

// ---- log_weights: one workgroup per row ----
@group(0) @binding(1) var<storage, read> l_x: array<f32>;             // [batch, x_dim]
@group(0) @binding(2) var<storage, read_write> l_logits: array<f32>;  // [rows, x_dim] -> d log p(x|z) / d out
@group(0) @binding(3) var<storage, read> l_eps: array<f32>;
@group(0) @binding(4) var<storage, read> l_z: array<f32>;
@group(0) @binding(5) var<storage, read> l_enc_out: array<f32>;
@group(0) @binding(6) var<storage, read_write> l_out: array<f32>;     // [rows]

var<workgroup> red: array<f32, 64>;

// log p(z) - log q(z | x) of row r (datapoint b): thread lid's share of the latent terms.
fn latent_part(r: u32, b: u32, lid: u32) -> f32 {
    var part = 0.0;
    let zd = shape.z_dim;
    for (var d = lid; d < zd; d += 64u) {
        let e = l_eps[r * zd + d];
        let z = l_z[r * shape.z_ld + d];
        // log p(z) - log q(z|x); the 2 pi constants cancel.
        part += 0.5 * (e * e - z * z) + l_enc_out[b * 2u * zd + zd + d];
    }
    return part;
}

// Adds the workgroup's parts into l_out[r].
fn store_row_total(r: u32, lid: u32, part: f32, in_range: bool) {
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

// ---- log_weights_partials: the same when the decoder's last GEMM fused the Bernoulli
// likelihood (matmul.wgsl LIK_BERNOULLI): binding 2 then holds its row sums per column tile,
// [rows, ceil(x_dim / 64)], and the gradient is already in place.
@compute @workgroup_size(64)
fn log_weights_partials(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = wg.x + wg.y * groups.x;
    let in_range = r < shape.rows;
    var part = 0.0;
    if (in_range) {
        let tiles = (shape.x_dim - shape.c_dim + 63u) / 64u;
        for (var i = lid; i < tiles; i += 64u) {
            part += l_logits[r * tiles + i];
        }
        part += latent_part(r, r / shape.n, lid);
    }
    store_row_total(r, lid, part, in_range);
}

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
        part += latent_part(r, b, lid);
    }
    store_row_total(r, lid, part, in_range);
}

// ---- encoder_upstream: one thread per (datapoint, latent dimension) ----
// up_mu = sum_n b_n (g_z + eps/sigma) - c_n eps/sigma,
// up_ls = sum_n b_n (sigma eps g_z + eps^2) + c_n (1 - eps^2), g_z = dz_lik - z.
@group(0) @binding(1) var<storage, read> u_coef: array<f32>;  // [3, rows]: a, b, c
@group(0) @binding(2) var<storage, read> u_eps: array<f32>;
@group(0) @binding(3) var<storage, read> u_z: array<f32>;
@group(0) @binding(4) var<storage, read> u_dz: array<f32>;    // [rows, z_ld]: d log p(x|z) / dz
@group(0) @binding(5) var<storage, read> u_enc_out: array<f32>;
@group(0) @binding(6) var<storage, read_write> u_up: array<f32>; // [batch, 2 z]

// One sample's terms (mu, log sigma) of the encoder's upstream: b P + c S with the path
// derivative gz = d log p(x, z) / dz (the encoder_upstream formulas above).
fn upstream_terms(bc: f32, cc: f32, e: f32, sigma: f32, gz: f32) -> vec2<f32> {
    let e_over_s = e / sigma;
    return vec2<f32>(
        bc * (gz + e_over_s) - cc * e_over_s,
        bc * (sigma * e * gz + e * e) + cc * (1.0 - e * e),
    );
}

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
        let gz = u_dz[r * shape.z_ld + d] - u_z[r * shape.z_ld + d];
        let t = upstream_terms(bc, cc, e, sigma, gz);
        up_mu += t.x;
        up_ls += t.y;
    }
    u_up[b * 2u * zd + d] = up_mu;
    u_up[b * 2u * zd + zd + d] = up_ls;
}

// ---- The two-stochastic-layer model (src/backend/cpu/hier.rs is the reference) ----
// latent_log_weights2: one thread per row, after log_weights wrote log p(x | z1):
// l += log p(z1 | z2) + log p(z2) - log q(z1 | x) - log q(z2 | z1) (2 pi constants cancel),
// and p(z1 | z2)'s head is overwritten with that term's gradient at the head,
// (r / sd, r^2 - 1) with r = (z1 - m) / sd (as the logits become x - sigmoid).
@group(0) @binding(1) var<storage, read> t_eps: array<f32>;          // [rows, noise_dim]
@group(0) @binding(2) var<storage, read> t_z1: array<f32>;           // [rows, z_ld]
@group(0) @binding(3) var<storage, read> t_z2: array<f32>;           // [rows, z2]
@group(0) @binding(4) var<storage, read> t_enc_out: array<f32>;      // [batch, 2 z]
@group(0) @binding(5) var<storage, read> t_qhead: array<f32>;        // [rows, 2 z2]: q(z2 | z1)
@group(0) @binding(6) var<storage, read_write> t_phead: array<f32>;  // [rows, 2 z]: p(z1 | z2)
@group(0) @binding(7) var<storage, read_write> t_lw: array<f32>;     // [rows]

@compute @workgroup_size(64)
fn latent_log_weights2(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let r = gid.x + gid.y * groups.x * 64u;
    if (r >= shape.rows) {
        return;
    }
    let b = r / shape.n;
    let d1 = shape.z_dim;
    let d2 = shape.z2_dim;
    let nd = shape.noise_dim;
    var lz = 0.0;
    for (var d = 0u; d < d1; d++) {
        let e = t_eps[r * nd + d];
        let m = t_phead[r * 2u * d1 + d];
        let pls = t_phead[r * 2u * d1 + d1 + d];
        let inv_sd = exp(-pls);
        let res = (t_z1[r * shape.z_ld + d] - m) * inv_sd;
        lz += 0.5 * (e * e - res * res) + t_enc_out[b * 2u * d1 + d1 + d] - pls;
        t_phead[r * 2u * d1 + d] = res * inv_sd;
        t_phead[r * 2u * d1 + d1 + d] = res * res - 1.0;
    }
    for (var d = 0u; d < d2; d++) {
        let e = t_eps[r * nd + d1 + d];
        let z = t_z2[r * d2 + d];
        lz += 0.5 * (e * e - z * z) + t_qhead[r * 2u * d2 + d2 + d];
    }
    t_lw[r] = t_lw[r] + lz;
}

// z1_grad_lik: one thread per (row, z1 dimension): g1 = grad_z1 [log p(x | z1) + log p(z1 | z2)]
// from the decoder's input gradient and p(z1 | z2)'s head gradient (its mean part is r / sd,
// and d/dz1 of that term is -r / sd).
@group(0) @binding(1) var<storage, read> g_dz: array<f32>;          // [rows, z_ld]
@group(0) @binding(2) var<storage, read> g_phead: array<f32>;       // [rows, 2 z], gradient
@group(0) @binding(3) var<storage, read_write> g_g1: array<f32>;    // [rows, z]

@compute @workgroup_size(256)
fn z1_grad_lik(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let id = linear_id(gid, groups);
    let d1 = shape.z_dim;
    if (id >= shape.rows * d1) {
        return;
    }
    let r = id / d1;
    let d = id % d1;
    g_g1[id] = g_dz[r * shape.z_ld + d] - g_phead[r * 2u * d1 + d];
}

// top_upstream: one thread per (row, z2 dimension), with G2 = grad_z2 log p(z1 | z2) - z2
// + eps2 / sigma2: q(z2 | z1)'s head gradient for its parameters, b (G2, sigma2 eps2 G2) +
// c (-eps2 / sigma2, 1 - eps2^2), and for its input z1 (parameters fixed),
// (G2 - eps2 / sigma2, sigma2 eps2 G2 + 1 - eps2^2).
@group(0) @binding(1) var<storage, read> q_coef: array<f32>;        // [3, rows]: a, b, c
@group(0) @binding(2) var<storage, read> q_eps: array<f32>;         // [rows, noise_dim]
@group(0) @binding(3) var<storage, read> q_z2: array<f32>;          // [rows, z2]
@group(0) @binding(4) var<storage, read> q_dz2: array<f32>;         // [rows, z2]
@group(0) @binding(5) var<storage, read> q_qhead: array<f32>;       // [rows, 2 z2]
@group(0) @binding(6) var<storage, read_write> q_up: array<f32>;    // [rows, 2 z2]
@group(0) @binding(7) var<storage, read_write> q_up_in: array<f32>; // [rows, 2 z2]

@compute @workgroup_size(256)
fn top_upstream(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let id = linear_id(gid, groups);
    let d2 = shape.z2_dim;
    if (id >= shape.rows * d2) {
        return;
    }
    let r = id / d2;
    let d = id % d2;
    let bc = q_coef[shape.rows + r];
    let cc = q_coef[2u * shape.rows + r];
    let e = q_eps[r * shape.noise_dim + shape.z_dim + d];
    let sigma = exp(q_qhead[r * 2u * d2 + d2 + d]);
    let g = q_dz2[id] - q_z2[id] + e / sigma;
    q_up[r * 2u * d2 + d] = bc * g - cc * e / sigma;
    q_up[r * 2u * d2 + d2 + d] = bc * sigma * e * g + cc * (1.0 - e * e);
    q_up_in[r * 2u * d2 + d] = g - e / sigma;
    q_up_in[r * 2u * d2 + d2 + d] = sigma * e * g + 1.0 - e * e;
}

// encoder_upstream2: one thread per (datapoint, z1 dimension), summing its samples:
// G1 = g1 + (z1's gradient through q(z2 | z1)'s input) + eps1 / sigma1, and
// up = sum_n b_n (G1, sigma1 eps1 G1) + c_n (-eps1 / sigma1, 1 - eps1^2).
@group(0) @binding(1) var<storage, read> e_coef: array<f32>;        // [3, rows]
@group(0) @binding(2) var<storage, read> e_eps: array<f32>;         // [rows, noise_dim]
@group(0) @binding(3) var<storage, read> e_g1: array<f32>;          // [rows, z]
@group(0) @binding(4) var<storage, read> e_dzq: array<f32>;         // [rows, z_ld]
@group(0) @binding(5) var<storage, read> e_enc_out: array<f32>;     // [batch, 2 z]
@group(0) @binding(6) var<storage, read_write> e_up: array<f32>;    // [batch, 2 z]

@compute @workgroup_size(256)
fn encoder_upstream2(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let id = linear_id(gid, groups);
    let d1 = shape.z_dim;
    if (id >= shape.batch * d1) {
        return;
    }
    let b = id / d1;
    let d = id % d1;
    let sigma = exp(e_enc_out[b * 2u * d1 + d1 + d]);
    var up_mu = 0.0;
    var up_ls = 0.0;
    for (var s = 0u; s < shape.n; s++) {
        let r = b * shape.n + s;
        let bc = e_coef[shape.rows + r];
        let cc = e_coef[2u * shape.rows + r];
        let e = e_eps[r * shape.noise_dim + d];
        let e_over_s = e / sigma;
        let g = e_g1[r * d1 + d] + e_dzq[r * shape.z_ld + d] + e_over_s;
        up_mu += bc * g - cc * e_over_s;
        up_ls += bc * sigma * e * g + cc * (1.0 - e * e);
    }
    e_up[b * 2u * d1 + d] = up_mu;
    e_up[b * 2u * d1 + d1 + d] = up_ls;
}

// ---- The conditional model (src/backend/cpu/cond.rs is the reference) ----
// cond_split: one thread per element: c of each row's datapoint into the columns after z of
// the decoder's input rows [z, c] (the first decoder GEMM draws z; the backward reads the
// whole row), and each datapoint's predicted pixels, dense, for the fused likelihood.
@group(0) @binding(1) var<storage, read> s_x: array<f32>;             // [batch, x_dim]
@group(0) @binding(2) var<storage, read_write> s_zc: array<f32>;      // [rows, z_ld]
@group(0) @binding(3) var<storage, read_write> s_xb: array<f32>;      // [batch, x_dim - c_dim]

@compute @workgroup_size(256)
fn cond_split(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let id = linear_id(gid, groups);
    let cd = shape.c_dim;
    let xd = shape.x_dim;
    let od = xd - cd;
    if (id < shape.rows * cd) {
        let r = id / cd;
        let j = id % cd;
        s_zc[r * shape.z_ld + shape.z_dim + j] = s_x[(r / shape.n) * xd + j];
    } else if (id < shape.rows * cd + shape.batch * od) {
        let i = id - shape.rows * cd;
        let b = i / od;
        s_xb[i] = s_x[b * xd + cd + i % od];
    }
}

// cond_log_weights: one thread per row, after log_weights_partials wrote log p(x | z, c):
// l += log p(z | c) - log q(z | x, c) (the 2 pi constants cancel), p(z | c) = N(m, sd^2)
// from the prior's head (m, log sd) of the row's datapoint.
@group(0) @binding(1) var<storage, read> cl_eps: array<f32>;           // [rows, z]
@group(0) @binding(2) var<storage, read> cl_z: array<f32>;             // [rows, z_ld]
@group(0) @binding(3) var<storage, read> cl_enc_out: array<f32>;       // [batch, 2 z]
@group(0) @binding(4) var<storage, read> cl_prior: array<f32>;         // [batch, 2 z]
@group(0) @binding(5) var<storage, read_write> cl_lw: array<f32>;      // [rows]

@compute @workgroup_size(64)
fn cond_log_weights(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let r = gid.x + gid.y * groups.x * 64u;
    if (r >= shape.rows) {
        return;
    }
    let b = r / shape.n;
    let zd = shape.z_dim;
    var lz = 0.0;
    for (var d = 0u; d < zd; d++) {
        let e = cl_eps[r * zd + d];
        let pls = cl_prior[b * 2u * zd + zd + d];
        let res = (cl_z[r * shape.z_ld + d] - cl_prior[b * 2u * zd + d]) * exp(-pls);
        lz += 0.5 * (e * e - res * res) + cl_enc_out[b * 2u * zd + zd + d] - pls;
    }
    cl_lw[r] = cl_lw[r] + lz;
}

// cond_upstream: one thread per (datapoint, latent dimension): encoder_upstream with
// grad_z log p(z | c) = -r / sd in place of -z (r = (z - m) / sd), and the prior head's
// gradient summed over the datapoint's samples, sum_n a_n (r / sd, r^2 - 1).
@group(0) @binding(1) var<storage, read> cu_coef: array<f32>;          // [3, rows]: a, b, c
@group(0) @binding(2) var<storage, read> cu_eps: array<f32>;
@group(0) @binding(3) var<storage, read> cu_z: array<f32>;
@group(0) @binding(4) var<storage, read> cu_dz: array<f32>;            // [rows, z_ld]
@group(0) @binding(5) var<storage, read> cu_enc_out: array<f32>;
@group(0) @binding(6) var<storage, read> cu_prior: array<f32>;         // [batch, 2 z]
@group(0) @binding(7) var<storage, read_write> cu_up: array<f32>;      // [batch, 2 z]
@group(0) @binding(8) var<storage, read_write> cu_prior_up: array<f32>; // [batch, 2 z]

@compute @workgroup_size(256)
fn cond_upstream(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let id = linear_id(gid, groups);
    let zd = shape.z_dim;
    if (id >= shape.batch * zd) {
        return;
    }
    let b = id / zd;
    let d = id % zd;
    let sigma = exp(cu_enc_out[b * 2u * zd + zd + d]);
    let m = cu_prior[b * 2u * zd + d];
    let inv_sd = exp(-cu_prior[b * 2u * zd + zd + d]);
    var up_mu = 0.0;
    var up_ls = 0.0;
    var pu_m = 0.0;
    var pu_ls = 0.0;
    for (var s = 0u; s < shape.n; s++) {
        let r = b * shape.n + s;
        let ac = cu_coef[r];
        let bc = cu_coef[shape.rows + r];
        let cc = cu_coef[2u * shape.rows + r];
        let e = cu_eps[r * zd + d];
        let res = (cu_z[r * shape.z_ld + d] - m) * inv_sd;
        let r_over_sd = res * inv_sd;
        pu_m += ac * r_over_sd;
        pu_ls += ac * (res * res - 1.0);
        let t = upstream_terms(bc, cc, e, sigma, cu_dz[r * shape.z_ld + d] - r_over_sd);
        up_mu += t.x;
        up_ls += t.y;
    }
    cu_up[b * 2u * zd + d] = up_mu;
    cu_up[b * 2u * zd + zd + d] = up_ls;
    cu_prior_up[b * 2u * zd + d] = pu_m;
    cu_prior_up[b * 2u * zd + zd + d] = pu_ls;
}
