//! How long library work says how far it has got. The library only calls these hooks; the
//! CLI draws them (progress bars on a terminal, plain lines in a log) and tests ignore them.

/// A sink for the progress of one piece of work (an evaluation, a statistics run).
pub trait Progress {
    /// Work of `total` units (`unit`: "images", "estimates", ...) begins.
    fn start(&mut self, _what: &str, _total: u64, _unit: &str) {}
    /// `done` units are finished.
    fn advance(&mut self, _done: u64) {}
    /// The work is over.
    fn finish(&mut self) {}
}

/// Progress that goes nowhere.
#[derive(Clone, Copy, Debug, Default)]
pub struct Silent;

impl Progress for Silent {}
