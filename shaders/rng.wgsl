// Philox4x32-10, the bit-for-bit twin of src/rng.rs (Salmon et al. 2011).
// Counter = (stream, step, datapoint, block), key = run seed. Prepended to the kernel
// families that draw random numbers.

// Where a pass's noise comes from (src/backend/mod.rs, Noise; src/backend/gpu/vae.rs, NoiseU).
struct NoiseAt {
    seed_lo: u32, seed_hi: u32, stream: u32, step: u32,
    first_datapoint: u32, first_sample: u32, _p0: u32, _p1: u32,
}

const PHILOX_M0: u32 = 0xD2511F53u;
const PHILOX_M1: u32 = 0xCD9E8D57u;
const PHILOX_W0: u32 = 0x9E3779B9u;
const PHILOX_W1: u32 = 0xBB67AE85u;

// (high, low) 32-bit halves of the 64-bit product a * b, from 16-bit limbs (WGSL has no u64).
fn mulhilo(a: u32, b: u32) -> vec2<u32> {
    let a_lo = a & 0xFFFFu;
    let a_hi = a >> 16u;
    let b_lo = b & 0xFFFFu;
    let b_hi = b >> 16u;
    let lo_lo = a_lo * b_lo;
    let hi_lo = a_hi * b_lo;
    let lo_hi = a_lo * b_hi;
    let hi_hi = a_hi * b_hi;
    // Cannot overflow: at most (2^16 - 1) + (2^16 - 1) + (2^16 - 1)^2 < 2^32.
    let cross = (lo_lo >> 16u) + (hi_lo & 0xFFFFu) + lo_hi;
    let hi = hi_hi + (hi_lo >> 16u) + (cross >> 16u);
    let lo = (cross << 16u) | (lo_lo & 0xFFFFu);
    return vec2<u32>(hi, lo);
}

fn philox4x32_10(ctr: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var c = ctr;
    var k = key;
    for (var round = 0u; round < 10u; round++) {
        if (round > 0u) {
            k = vec2<u32>(k.x + PHILOX_W0, k.y + PHILOX_W1);
        }
        let p0 = mulhilo(PHILOX_M0, c.x);
        let p1 = mulhilo(PHILOX_M1, c.z);
        c = vec4<u32>(p1.x ^ c.y ^ k.x, p1.y, p0.x ^ c.w ^ k.y, p0.y);
    }
    return c;
}

// The top 23 bits, centred: exact in f32, strictly inside (0, 1).
fn uniform_open(x: u32) -> f32 {
    return (f32(x >> 9u) + 0.5) * (1.0 / 8388608.0);
}

fn uniforms4(key: vec2<u32>, stream: u32, step: u32, datapoint: u32, block: u32) -> vec4<f32> {
    let r = philox4x32_10(vec4<u32>(stream, step, datapoint, block), key);
    return vec4<f32>(uniform_open(r.x), uniform_open(r.y), uniform_open(r.z), uniform_open(r.w));
}

// Box-Muller on (u0, u1) and (u2, u3), as box_muller4 in src/rng.rs.
fn box_muller4(u: vec4<f32>) -> vec4<f32> {
    let two_pi = 6.2831853071795864;
    let r0 = sqrt(-2.0 * log(u.x));
    let r1 = sqrt(-2.0 * log(u.z));
    return vec4<f32>(r0 * cos(two_pi * u.y), r0 * sin(two_pi * u.y), r1 * cos(two_pi * u.w), r1 * sin(two_pi * u.w));
}
