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
}

impl Family {
    pub const ALL: [Family; 5] = [
        Family::Rng,
        Family::Matmul,
        Family::Vae,
        Family::Weights,
        Family::Optim,
    ];

    pub fn file(self) -> &'static str {
        match self {
            Family::Rng => "rng.wgsl",
            Family::Matmul => "matmul.wgsl",
            Family::Vae => "vae.wgsl",
            Family::Weights => "weights.wgsl",
            Family::Optim => "optim.wgsl",
        }
    }

    fn own_source(self) -> &'static str {
        match self {
            Family::Rng => include_str!("../../../shaders/rng.wgsl"),
            Family::Matmul => include_str!("../../../shaders/matmul.wgsl"),
            Family::Vae => include_str!("../../../shaders/vae.wgsl"),
            Family::Weights => include_str!("../../../shaders/weights.wgsl"),
            Family::Optim => include_str!("../../../shaders/optim.wgsl"),
        }
    }

    /// The complete module source as compiled.
    pub fn source(self) -> String {
        match self {
            Family::Vae => format!("{}\n{}", Family::Rng.own_source(), self.own_source()),
            _ => self.own_source().to_string(),
        }
    }
}
