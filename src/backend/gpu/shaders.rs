//! The WGSL sources, one file per kernel family, with rng.wgsl prepended to the families
//! that draw random numbers (WGSL has no includes).

/// A kernel family: one WGSL file under shaders/.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Rng,
    Matmul,
    Vae,
    Weights,
    Optim,
    Coupling,
}

impl Family {
    pub const ALL: [Family; 6] = [
        Family::Rng,
        Family::Matmul,
        Family::Vae,
        Family::Weights,
        Family::Optim,
        Family::Coupling,
    ];

    pub fn file(self) -> &'static str {
        match self {
            Family::Rng => "rng.wgsl",
            Family::Matmul => "matmul.wgsl",
            Family::Vae => "vae.wgsl",
            Family::Weights => "weights.wgsl",
            Family::Optim => "optim.wgsl",
            Family::Coupling => "coupling.wgsl",
        }
    }

    fn own_source(self) -> &'static str {
        match self {
            Family::Rng => include_str!("../../../shaders/rng.wgsl"),
            Family::Matmul => include_str!("../../../shaders/matmul.wgsl"),
            Family::Vae => include_str!("../../../shaders/vae.wgsl"),
            Family::Weights => include_str!("../../../shaders/weights.wgsl"),
            Family::Optim => include_str!("../../../shaders/optim.wgsl"),
            Family::Coupling => include_str!("../../../shaders/coupling.wgsl"),
        }
    }

    /// The complete module source as compiled, with the subgroup path when `subgroups`.
    pub fn source(self, subgroups: bool) -> String {
        let own = preprocess(self.own_source(), subgroups);
        match self {
            Family::Vae | Family::Coupling => format!("{}\n{}", Family::Rng.own_source(), own),
            _ => own,
        }
    }

    /// Whether the family has a subgroup variant.
    pub fn has_subgroup_variant(self) -> bool {
        self.own_source().contains("// #if subgroups")
    }
}

/// Keeps the `// #if subgroups` ... `// #else` ... `// #endif` sections that apply. The
/// directives are comments, so each variant is plain WGSL. (naga 30 rejects the
/// `enable subgroups;` directive; the device's SUBGROUP feature enables the builtins.)
pub fn preprocess(src: &str, subgroups: bool) -> String {
    let mut out = String::with_capacity(src.len());
    // None: outside a section; Some(true): keeping; Some(false): dropping.
    let mut keep: Option<bool> = None;
    for line in src.lines() {
        match line.trim() {
            "// #if subgroups" => keep = Some(subgroups),
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
        assert_eq!(preprocess(src, true), "a\nsg\nb\nonly\n");
        assert_eq!(preprocess(src, false), "a\nwg\nb\n");
        assert!(Family::Weights.has_subgroup_variant());
        assert!(!Family::Matmul.has_subgroup_variant());
    }
}
