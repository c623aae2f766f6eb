//! The one error type of configuration and validation: every message names the option
//! (the CLI flag a user typed) and what it accepts, so the CLI prints it as it is.

/// A run configuration, estimator setting or option value that cannot be used.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A value outside the range the option accepts.
    #[error("{flag} {value} is out of range: {accepted}")]
    OutOfRange {
        flag: &'static str,
        value: String,
        accepted: String,
    },
    /// A name that is none of the option's accepted names.
    #[error("{flag}: unknown value '{given}'; valid values: {accepted}")]
    UnknownName {
        flag: &'static str,
        given: String,
        accepted: String,
    },
    /// An option given where it has no meaning.
    #[error("{flag} does not apply {context}; {fix}")]
    NotApplicable {
        flag: &'static str,
        context: String,
        fix: String,
    },
    /// Options that are each valid but contradict each other.
    #[error("{flag}: {reason}")]
    Conflict { flag: &'static str, reason: String },
}

impl ConfigError {
    /// `flag value` out of range; `accepted` says what would do.
    pub fn range(
        flag: &'static str,
        value: impl std::fmt::Display,
        accepted: impl Into<String>,
    ) -> Self {
        ConfigError::OutOfRange {
            flag,
            value: value.to_string(),
            accepted: accepted.into(),
        }
    }

    /// The option the error is about.
    pub fn flag(&self) -> &'static str {
        match self {
            ConfigError::OutOfRange { flag, .. }
            | ConfigError::UnknownName { flag, .. }
            | ConfigError::NotApplicable { flag, .. }
            | ConfigError::Conflict { flag, .. } => flag,
        }
    }
}

/// `Ok(())` when `value >= min`, else the range error of `flag`.
pub fn at_least(
    flag: &'static str,
    value: usize,
    min: usize,
    what: &str,
) -> Result<(), ConfigError> {
    if value >= min {
        Ok(())
    } else {
        Err(ConfigError::range(
            flag,
            value,
            format!("{what} needs at least {min}"),
        ))
    }
}

/// `Ok(())` when `value` is finite and positive, else the range error of `flag`.
pub fn positive(flag: &'static str, value: f64) -> Result<(), ConfigError> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(ConfigError::range(
            flag,
            value,
            "it must be a positive number",
        ))
    }
}

/// `Ok(())` when `value <= max`, else the range error of `flag`.
pub fn at_most(
    flag: &'static str,
    value: usize,
    max: usize,
    what: &str,
) -> Result<(), ConfigError> {
    if value <= max {
        Ok(())
    } else {
        Err(ConfigError::range(
            flag,
            value,
            format!("{what} takes at most {max}"),
        ))
    }
}

/// The most CPU worker threads `--threads` accepts (0 means all cores).
pub const MAX_THREADS: usize = 1024;

/// The most samples per datapoint any `--k`-like flag accepts: 2^24. Sample indices are
/// 32-bit on the device, and a larger K would run for days per datapoint.
pub const MAX_SAMPLES: usize = 1 << 24;

/// `--threads`: 0 (all cores) up to [`MAX_THREADS`].
pub fn threads(threads: usize) -> Result<(), ConfigError> {
    if threads <= MAX_THREADS {
        Ok(())
    } else {
        Err(ConfigError::range(
            "--threads",
            threads,
            format!(
                "at most {MAX_THREADS} worker threads (0 uses all {} cores)",
                std::thread::available_parallelism().map_or(1, |n| n.get())
            ),
        ))
    }
}
