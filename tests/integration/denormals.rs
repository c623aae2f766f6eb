//! Subnormals are flushed in the CPU backend's worker pool (the production pool, built by
//! `backend::cpu::worker_pool`), both as results (FTZ) and as inputs (DAZ), while a thread that
//! never asked for it still computes them, so the probes can tell the two apart.

use std::hint::black_box;
use unbiased_vae::backend::cpu::worker_pool;
use unbiased_vae::denormals::flushed_on_this_thread;

/// 2^-126 (the smallest normal f32) times 1/2: the subnormal 2^-127, or 0 under FTZ.
fn subnormal_result() -> f32 {
    black_box(f32::MIN_POSITIVE) * black_box(0.5)
}

/// The smallest subnormal 2^-149 times 2^30: the normal 2^-119, or 0 when DAZ reads the
/// input as 0 (FTZ alone would keep it).
fn from_subnormal_input() -> f32 {
    black_box(f32::from_bits(1)) * black_box(2f32.powi(30))
}

#[test]
fn every_worker_of_the_cpu_backend_flushes_subnormals() {
    let pool = worker_pool(2).expect("worker pool");
    let seen = pool.broadcast(|_| {
        (
            flushed_on_this_thread(),
            subnormal_result(),
            from_subnormal_input(),
        )
    });
    assert_eq!(seen.len(), 2);
    for (i, &(flag, ftz, daz)) in seen.iter().enumerate() {
        assert_eq!(
            ftz.to_bits(),
            0,
            "worker {i}: 2^-126 / 2 = {ftz:e} (FTZ off)"
        );
        assert_eq!(
            daz.to_bits(),
            0,
            "worker {i}: 2^-149 * 2^30 = {daz:e} (DAZ off)"
        );
        assert!(flag, "worker {i}: flushes, but the mode reads as off");
    }
    let control = std::thread::spawn(|| {
        (
            flushed_on_this_thread(),
            subnormal_result(),
            from_subnormal_input(),
        )
    })
    .join()
    .expect("control thread");
    assert!(
        !control.0,
        "a fresh thread already flushes: the probes prove nothing"
    );
    assert_eq!(control.1, 2f32.powi(-127));
    assert_eq!(control.2, 2f32.powi(-119));
}
