//! Flush-to-zero on the threads that compute. Once a model trains, the self-normalised weights
//! of its worst samples fall below the smallest normal f32 (log-weight spreads over 87 nats),
//! and every product with them is a subnormal, which x86 cores compute at a fraction of their
//! speed (a K = 50 step ran 1.3x to 1.7x slower after a few hundred steps). Such values carry
//! no weight in any sum the estimators form, so they are flushed: FTZ (subnormal results become
//! 0) and DAZ (subnormal inputs read as 0) on x86-64, FZ on aarch64 (which does both).
//!
//! The modes are per thread and apply to f64 as well: in grad-stats' f64 statistics a value
//! below 2.2e-308 reads as 0, far under any standard error they report.

/// Sets flush-to-zero for this thread (a no-op on other architectures).
pub fn flush_on_this_thread() {
    #[cfg(target_arch = "x86_64")]
    {
        /// MXCSR's flush-to-zero (bit 15) and denormals-are-zero (bit 6).
        const FTZ_DAZ: u32 = (1 << 15) | (1 << 6);
        let csr = read_mxcsr() | FTZ_DAZ;
        // SAFETY: ldmxcsr loads a 32-bit value from a valid address; only the two flush bits
        // change, so no exception is unmasked and rounding stays to nearest.
        unsafe {
            core::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, readonly));
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        /// FPCR's flush-to-zero bit.
        const FZ: u64 = 1 << 24;
        let fpcr = read_fpcr() | FZ;
        // SAFETY: writes FPCR with only FZ changed.
        unsafe {
            core::arch::asm!("msr fpcr, {}", in(reg) fpcr, options(nomem, nostack));
        }
    }
}

/// Whether this thread flushes subnormals (results and inputs where the CPU tells them apart).
pub fn flushed_on_this_thread() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        read_mxcsr() & ((1 << 15) | (1 << 6)) == (1 << 15) | (1 << 6)
    }
    #[cfg(target_arch = "aarch64")]
    {
        read_fpcr() & (1 << 24) != 0
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// Flushes this thread and builds rayon's global pool with every worker flushed. Called by the
/// binary first thing; rayon's pool is built once per process, so a second call (or a pool
/// built before it) leaves the global workers as they are.
pub fn flush_process() {
    flush_on_this_thread();
    let _ = rayon::ThreadPoolBuilder::new()
        .start_handler(|_| flush_on_this_thread())
        .build_global();
}

#[cfg(target_arch = "x86_64")]
fn read_mxcsr() -> u32 {
    let mut csr = 0u32;
    // SAFETY: stmxcsr stores 32 bits to a valid, writable address.
    unsafe {
        core::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack));
    }
    csr
}

#[cfg(target_arch = "aarch64")]
fn read_fpcr() -> u64 {
    let fpcr: u64;
    // SAFETY: reading FPCR has no side effect.
    unsafe {
        core::arch::asm!("mrs {}, fpcr", out(reg) fpcr, options(nomem, nostack));
    }
    fpcr
}
