//! The WGSL sources, one file per kernel family (matmul.wgsl in several variants), with
//! rng.wgsl prepended to the families that draw random numbers (WGSL has no includes), and
//! before everything the family's constants generated from Rust (`wgsl_consts!`), so flags
//! and modes have one definition.

/// Declares `u32` constants shared by name with the WGSL, and a table of them that
/// [`Family::prelude`] prepends to the family's source as `const NAME: u32 = VALUEu;`: Rust
/// holds the one definition, here beside the sources, and the host files import it.
macro_rules! wgsl_consts {
    (
        $(#[$tm:meta])* $vis:vis const $table:ident = {
            $($(#[$m:meta])* $name:ident = $value:expr,)*
        }
    ) => {
        $($(#[$m])* $vis const $name: u32 = $value;)*
        $(#[$tm])*
        $vis const $table: &[(&str, u32)] = &[$((stringify!($name), $name)),*];
    };
}

wgsl_consts! {
    /// The matmul prelude: epilogue and operand-layout flags of `GemmU::flags`.
    pub(super) const MATMUL_CONSTS = {
        /// C = acc + E[bias_off + column] (forward: x W^T + b).
        FLAG_BIAS = 1,
        /// Then tanh (hidden layers).
        FLAG_TANH = 2,
        /// Weight gradient scaled per sample by E along k.
        FLAG_SCALE_K = 4,
        /// C = acc * (1 - E^2) (back through tanh).
        FLAG_TANH_GRAD = 8,
        /// gemm_vec4: A contiguous along k (else along m).
        FLAG_A_KCONTIG = 16,
        /// gemm_vec4: B contiguous along k (else along n).
        FLAG_B_KCONTIG = 32,
        /// Split-K: also the row sums of (scaled) A, the bias gradient of a weight gradient.
        FLAG_ROW_SUMS = 64,
        /// The decoder's last layer: C = x - sigmoid(logits), and per row and column tile the
        /// sum of x l - softplus(l) (the Bernoulli log-likelihood, fused into the GEMM).
        FLAG_LIK_BERNOULLI = 128,
        /// gemm_vec4: A loaded with gemm's scalar loads (its layout allows no vec4).
        FLAG_A_SCALAR = 256,
        /// gemm_vec4: B loaded with gemm's scalar loads.
        FLAG_B_SCALAR = 512,
    }
}

wgsl_consts! {
    /// The vae prelude: the likelihood codes of `ShapeU::lik`.
    pub(super) const VAE_CONSTS = {
        LIK_BERNOULLI = 0,
        LIK_GAUSSIAN = 1,
    }
}

wgsl_consts! {
    /// The weights prelude: `ProgramU::mode` and a subset program's encoder rule (`extra.x`).
    pub(super) const WEIGHTS_CONSTS = {
        /// Softmax coefficients, objective L_N.
        MODE_SOFTMAX = 0,
        /// Softmax coefficients, objective mean(l).
        MODE_SOFTMAX_MEAN = 1,
        MODE_JACKKNIFE = 2,
        MODE_JACKKNIFE_DREG = 3,
        /// Subset programs run `subset_coefficients`, not `coefficients`.
        MODE_SUBSETS = 4,
        RULE_DREG_BLOCKS = 0,
        RULE_UNBIASED_RWS = 1,
        RULE_VARIANCE = 2,
        /// IWAE on the last `extra.w` samples (the encoder's own); terms cover the rest.
        RULE_IWAE_TAIL = 3,
    }
}

wgsl_consts! {
    /// The coupling prelude: the state layout, the chain kernels of `ChainU::kernel`, and
    /// the Philox stream of the chains' uniforms.
    pub(super) const COUPLING_CONSTS = {
        /// State words per datapoint; the layout is documented in shaders/coupling.wgsl.
        STATE_WORDS = 8,
        FLAG_DONE = 1,
        FLAG_CAPPED = 2,
        KERNEL_PIMH = 0,
        KERNEL_ISIR = 1,
        KERNEL_DISIR = 2,
        STREAM_COUPLING = crate::rng::Stream::Coupling as u32,
    }
}

wgsl_consts! {
    /// The input prelude: the Philox stream of the training binarization.
    pub(super) const INPUT_CONSTS = {
        STREAM_BINARIZE = crate::rng::Stream::Binarize as u32,
    }
}

/// The pattern of every variant of matmul.wgsl.
macro_rules! matmul_variants {
    () => {
        Family::Matmul
            | Family::MatmulHalf
            | Family::MatmulBig
            | Family::MatmulSampled
            | Family::MatmulSampledHalf
            | Family::MatmulSampledBig
    };
}

/// A kernel family: one WGSL file under shaders/.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Rng,
    Matmul,
    /// shaders/matmul.wgsl again, with 32-row tiles (`TILE_M`, the `half_tiles` sections).
    MatmulHalf,
    /// And with 128-row tiles (the `big_tiles` sections).
    MatmulBig,
    /// The three tiles again with A drawn in the loads (the `sampled_a` sections: the latent
    /// z that the GEMM multiplies, sampled there), rng.wgsl prepended.
    MatmulSampled,
    MatmulSampledHalf,
    MatmulSampledBig,
    Vae,
    Weights,
    Optim,
    Coupling,
    Input,
}

impl Family {
    pub const ALL: [Family; 12] = [
        Family::Rng,
        Family::Matmul,
        Family::MatmulHalf,
        Family::MatmulBig,
        Family::MatmulSampled,
        Family::MatmulSampledHalf,
        Family::MatmulSampledBig,
        Family::Vae,
        Family::Weights,
        Family::Optim,
        Family::Coupling,
        Family::Input,
    ];

    pub fn file(self) -> &'static str {
        match self {
            Family::Rng => "rng.wgsl",
            matmul_variants!() => "matmul.wgsl",
            Family::Vae => "vae.wgsl",
            Family::Weights => "weights.wgsl",
            Family::Optim => "optim.wgsl",
            Family::Coupling => "coupling.wgsl",
            Family::Input => "input.wgsl",
        }
    }

    fn own_source(self) -> &'static str {
        match self {
            Family::Rng => include_str!("../../../shaders/rng.wgsl"),
            matmul_variants!() => include_str!("../../../shaders/matmul.wgsl"),
            Family::Vae => include_str!("../../../shaders/vae.wgsl"),
            Family::Weights => include_str!("../../../shaders/weights.wgsl"),
            Family::Optim => include_str!("../../../shaders/optim.wgsl"),
            Family::Coupling => include_str!("../../../shaders/coupling.wgsl"),
            Family::Input => include_str!("../../../shaders/input.wgsl"),
        }
    }

    /// The constants Rust shares with this family, by name.
    pub fn constants(self) -> &'static [(&'static str, u32)] {
        match self {
            matmul_variants!() => MATMUL_CONSTS,
            Family::Vae => VAE_CONSTS,
            Family::Weights => WEIGHTS_CONSTS,
            Family::Coupling => COUPLING_CONSTS,
            Family::Input => INPUT_CONSTS,
            Family::Rng | Family::Optim => &[],
        }
    }

    /// The constants that tell the variants of one file apart: the GEMM tile's rows.
    pub fn variant_constants(self) -> &'static [(&'static str, u32)] {
        match self {
            Family::Matmul | Family::MatmulSampled => &[("TILE_M", 64)],
            Family::MatmulHalf | Family::MatmulSampledHalf => &[("TILE_M", 32)],
            Family::MatmulBig | Family::MatmulSampledBig => &[("TILE_M", 128)],
            _ => &[],
        }
    }

    /// The `// #if` sections this variant keeps besides `subgroups`.
    fn sections(self) -> &'static [&'static str] {
        match self {
            Family::Matmul => &["full_tiles"],
            Family::MatmulHalf => &["half_tiles"],
            Family::MatmulBig => &["big_tiles"],
            Family::MatmulSampled => &["full_tiles", "sampled_a"],
            Family::MatmulSampledHalf => &["half_tiles", "sampled_a"],
            Family::MatmulSampledBig => &["big_tiles", "sampled_a"],
            _ => &[],
        }
    }

    /// The generated `const` declarations of [`Family::constants`] and
    /// [`Family::variant_constants`].
    pub fn prelude(self) -> String {
        let consts: Vec<_> = self
            .constants()
            .iter()
            .chain(self.variant_constants())
            .collect();
        if consts.is_empty() {
            return String::new();
        }
        let mut out = String::from("// Generated from the Rust host code (src/backend/gpu/).\n");
        for (name, value) in consts {
            out.push_str(&format!("const {name}: u32 = {value}u;\n"));
        }
        out.push('\n');
        out
    }

    /// The complete module source as compiled, with the subgroup path when `subgroups`.
    pub fn source(self, subgroups: bool) -> String {
        let mut on = self.sections().to_vec();
        if subgroups {
            on.push("subgroups");
        }
        let own = preprocess(self.own_source(), &on);
        let prelude = self.prelude();
        match self {
            Family::MatmulSampled
            | Family::MatmulSampledHalf
            | Family::MatmulSampledBig
            | Family::Coupling
            | Family::Input => {
                format!("{prelude}{}\n{own}", Family::Rng.own_source())
            }
            _ => format!("{prelude}{own}"),
        }
    }

    /// Whether the family guards every buffer access itself, so it may be compiled without
    /// wgpu's runtime checks: the GEMMs, whose inner loops those checks slow most.
    pub fn trusted(self) -> bool {
        matches!(self, matmul_variants!())
    }

    /// The module's label: its file, and the variant when the file has several.
    pub fn label(self) -> &'static str {
        match self {
            Family::MatmulHalf => "matmul.wgsl (32-row tiles)",
            Family::MatmulBig => "matmul.wgsl (128-row tiles)",
            Family::MatmulSampled => "matmul.wgsl (sampled A)",
            Family::MatmulSampledHalf => "matmul.wgsl (sampled A, 32-row tiles)",
            Family::MatmulSampledBig => "matmul.wgsl (sampled A, 128-row tiles)",
            _ => self.file(),
        }
    }

    /// Whether the family has a subgroup variant.
    pub fn has_subgroup_variant(self) -> bool {
        self.own_source().contains("// #if subgroups")
    }
}

/// Keeps the `// #if NAME` ... `// #else` ... `// #endif` sections that apply: the first
/// branch when NAME is in `on` (`subgroups`, `half_tiles`), else the `#else` branch. The
/// directives are comments, so each variant is plain WGSL. (naga 30 rejects the
/// `enable subgroups;` directive; the device's SUBGROUP feature enables the builtins.)
pub fn preprocess(src: &str, on: &[&str]) -> String {
    let mut out = String::with_capacity(src.len());
    // None: outside a section; Some(true): keeping; Some(false): dropping.
    let mut keep: Option<bool> = None;
    for line in src.lines() {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix("// #if ") {
            keep = Some(on.contains(&name.trim()));
            continue;
        }
        match trimmed {
            "// #else" if keep.is_some() => keep = keep.map(|k| !k),
            "// #endif" => keep = None,
            _ if keep != Some(false) => {
                out.push_str(line);
                out.push('\n');
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preprocess_keeps_one_branch() {
        let src = "a\n// #if subgroups\nsg\n// #else\nwg\n// #endif\nb\n// #if subgroups\nonly\n// #endif\n";
        assert_eq!(preprocess(src, &["subgroups"]), "a\nsg\nb\nonly\n");
        assert_eq!(preprocess(src, &[]), "a\nwg\nb\n");
        assert_eq!(preprocess(src, &["half_tiles"]), "a\nwg\nb\n");
        let two = "// #if half_tiles\nh\n// #else\nf\n// #endif\n// #if subgroups\ns\n// #endif\n";
        assert_eq!(preprocess(two, &["half_tiles", "subgroups"]), "h\ns\n");
        assert_eq!(preprocess(two, &[]), "f\n");
        assert!(Family::Weights.has_subgroup_variant());
        assert!(!Family::Matmul.has_subgroup_variant());
    }

    /// Every shared constant is used by its shader (or named in a comment there) and no
    /// shader declares one itself: the generated prelude is the only definition.
    #[test]
    fn shared_constants_are_used_and_not_redeclared() {
        for f in Family::ALL {
            let own = f.own_source();
            for (name, _) in f.constants().iter().chain(f.variant_constants()) {
                assert!(own.contains(name), "{} never names {name}", f.file());
                assert!(
                    !own.contains(&format!("const {name}:")),
                    "{} redeclares {name}",
                    f.file()
                );
            }
        }
    }
}
