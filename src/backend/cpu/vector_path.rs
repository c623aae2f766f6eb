//! Which vector instructions the CPU backend's elementwise kernels run: the widest the CPU
//! has, chosen once per process at run time (one binary for every x86-64 and aarch64
//! machine), and capped by the environment variable `UVAE_VECTOR_CAP` so an AVX-512 machine
//! can run the AVX2 path (to compare them, or to match an older machine's timings).
//!
//! Every path computes each output element with the same IEEE operations in the same order
//! (the kernels' reductions keep fixed partial sums whatever the register width), so results
//! are bit-identical across paths; tests/integration/vector_paths.rs checks it on checkpoints.

use crate::error::ConfigError;
use std::sync::OnceLock;

/// The environment variable that caps the path.
pub const CAP_VAR: &str = "UVAE_VECTOR_CAP";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum VectorPath {
    /// The target's baseline: SSE2 on x86-64, NEON on aarch64.
    Baseline,
    /// x86-64 with AVX2 and FMA.
    Avx2,
    /// x86-64 with AVX-512 (F, VL, BW, DQ).
    Avx512,
}

impl VectorPath {
    pub fn name(self) -> &'static str {
        match self {
            VectorPath::Baseline if cfg!(target_arch = "aarch64") => "neon",
            VectorPath::Baseline if cfg!(target_arch = "x86_64") => "sse2",
            VectorPath::Baseline => "scalar",
            VectorPath::Avx2 => "avx2",
            VectorPath::Avx512 => "avx512",
        }
    }

    /// The widest path this CPU supports.
    fn detected() -> VectorPath {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let avx2 = has!("avx2") && has!("fma");
            if avx2 && has!("avx512f") && has!("avx512vl") && has!("avx512bw") && has!("avx512dq") {
                return VectorPath::Avx512;
            }
            if avx2 {
                return VectorPath::Avx2;
            }
        }
        VectorPath::Baseline
    }

    /// Parses a cap as `UVAE_VECTOR_CAP` spells it.
    fn parse_cap(value: &str) -> Result<VectorPath, ConfigError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "avx512" => Ok(VectorPath::Avx512),
            "avx2" => Ok(VectorPath::Avx2),
            "baseline" | "sse2" | "neon" | "scalar" => Ok(VectorPath::Baseline),
            other => Err(ConfigError::UnknownName {
                flag: CAP_VAR,
                given: other.to_string(),
                accepted: "avx512, avx2, baseline (or leave the environment variable unset for the widest path this CPU has)".into(),
            }),
        }
    }

    /// The detected path, capped by `cap` (the value of `UVAE_VECTOR_CAP`, if set).
    pub fn choose(cap: Option<&str>) -> Result<VectorPath, ConfigError> {
        let detected = VectorPath::detected();
        Ok(match cap {
            None => detected,
            Some(c) => detected.min(VectorPath::parse_cap(c)?),
        })
    }
}

static ACTIVE: OnceLock<Result<VectorPath, ConfigError>> = OnceLock::new();

/// The path of this process, read from the CPU and `UVAE_VECTOR_CAP` once. A bad cap is an
/// error here (the CPU backend's constructor asks first, so a run fails before it starts).
pub fn configured() -> Result<VectorPath, ConfigError> {
    ACTIVE
        .get_or_init(|| VectorPath::choose(std::env::var(CAP_VAR).ok().as_deref()))
        .clone()
}

/// The path the kernels dispatch on: the configured one (the baseline if the cap was bad,
/// which `configured` has already reported).
#[inline]
pub fn active() -> VectorPath {
    match ACTIVE.get() {
        Some(Ok(p)) => *p,
        Some(Err(_)) => VectorPath::Baseline,
        None => configured().unwrap_or(VectorPath::Baseline),
    }
}

/// The sgemm kernel matrixmultiply picks on this CPU. It chooses for itself at run time, as
/// its own dispatch does: AVX-512F, else FMA+AVX2, else AVX, else its portable kernel (NEON
/// on aarch64). `UVAE_VECTOR_CAP` does not reach it; its build-time switch `MMTEST_FEATURE`
/// (a comma-separated list of the features it may use, read when it is compiled) does, and
/// benches/vector_paths.sh uses that to check its AVX2 kernel against its AVX-512 one.
pub fn gemm_kernel() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let allowed = |f: &str| match option_env!("MMTEST_FEATURE") {
            None | Some("") => true,
            Some(list) => list.split(',').any(|x| x.trim() == f),
        };
        if allowed("avx512f") && has!("avx512f") {
            return "avx512f";
        }
        if allowed("fma") && allowed("avx2") && has!("fma") && has!("avx2") {
            return "fma+avx2";
        }
        if allowed("avx") && has!("avx") {
            return "avx";
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        return "neon";
    }
    #[allow(unreachable_code)]
    "portable"
}

/// "avx512 elementwise, avx512f sgemm": what `describe` and the benchmarks report.
pub fn describe() -> String {
    format!("{} elementwise, {} sgemm", active().name(), gemm_kernel())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cap_never_raises_the_path_and_a_bad_one_names_the_variable() {
        let widest = VectorPath::detected();
        assert_eq!(VectorPath::choose(None).unwrap(), widest);
        assert_eq!(
            VectorPath::choose(Some("avx2")).unwrap(),
            widest.min(VectorPath::Avx2)
        );
        assert_eq!(
            VectorPath::choose(Some(" BASELINE ")).unwrap(),
            VectorPath::Baseline
        );
        assert_eq!(VectorPath::choose(Some("avx512")).unwrap(), widest);
        let e = VectorPath::choose(Some("avx1024")).unwrap_err().to_string();
        assert!(e.contains(CAP_VAR) && e.contains("avx1024"), "{e}");
    }
}
