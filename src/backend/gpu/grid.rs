//! Grids sized for a GPU's compute units (SMs, CUs; adapters do not report them): how many
//! slices of k a GEMM is split into (split-K, shaders/matmul.wgsl) and how many partial sums
//! the gradient norms take (shaders/optim.wgsl). Both reductions finish in a second dispatch
//! that adds the partials in a fixed order, so results do not depend on scheduling.

use crate::backend::DEFAULT_COMPUTE_UNITS;

/// Workgroups per compute unit a split grid aims for.
pub(super) const WAVES: usize = 4;
/// Shortest slice of k the automatic choice makes (6 k-steps of the 16-deep GEMM tile), on
/// average: splits `k = 200` in two, leaves `k < 192` whole.
pub const MIN_SLICE: usize = 96;
/// Shortest k the automatic choice splits at all. A split costs a second dispatch (its
/// launch and the drain before it, microseconds on any GPU); below 1,024 (64 k-steps) a
/// tile's whole walk over k costs about as much, so the encoder's GEMMs over 100 rows and
/// widths up to 784 stay whole and the weight gradients over thousands of rows split.
pub const MIN_SPLIT_K: usize = 1024;

/// How the backend sizes its grids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GridConfig {
    /// Compute units of the GPU aimed at.
    pub compute_units: usize,
    /// Shortest slice of k the automatic split-K choice makes.
    pub min_slice: usize,
    /// Shortest k the automatic split-K choice splits.
    pub min_split_k: usize,
    /// Split every GEMM into this many slices of k (rounded: slices are multiples of 4
    /// long, so a few fewer may result), 1 included (the split path with one slice);
    /// None: the automatic choice. For parity checks.
    pub force_slices: Option<usize>,
    /// Elements per norm partial (a multiple of 256); None: from `compute_units`.
    pub norm_chunk: Option<usize>,
    /// Rows of every GEMM tile, 64 or 32; None: the automatic choice ([`Self::tile_rows`]).
    /// For parity checks.
    pub force_tile_rows: Option<usize>,
}

/// The GEMM tiles' rows: 64 (4 x 4 outputs a thread), 32 (2 x 4) for short grids, 128
/// (8 x 4) for grids that fill the GPU twice over even so.
pub const TILE_ROWS: [usize; 3] = [64, 32, 128];

impl Default for GridConfig {
    fn default() -> Self {
        GridConfig {
            compute_units: DEFAULT_COMPUTE_UNITS,
            min_slice: MIN_SLICE,
            min_split_k: MIN_SPLIT_K,
            force_slices: None,
            norm_chunk: None,
            force_tile_rows: None,
        }
    }
}

impl GridConfig {
    /// The default, with `UVAE_COMPUTE_UNITS` from the environment when it is a positive
    /// integer.
    pub fn from_env() -> GridConfig {
        let units = std::env::var("UVAE_COMPUTE_UNITS")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&u| u > 0);
        GridConfig {
            compute_units: units.unwrap_or(DEFAULT_COMPUTE_UNITS),
            ..Default::default()
        }
    }

    /// Workgroups a grid should reach: 4 per compute unit.
    pub(super) fn target(&self) -> usize {
        WAVES * self.compute_units.max(1)
    }

    /// Floats of the split-K scratch: twice the target grid of 64 x 64 tiles (a split stops
    /// short of what would not fit), at most `max_floats`.
    pub(super) fn scratch_floats(&self, max_floats: usize) -> usize {
        (2 * self.target() * 64 * 64).min(max_floats)
    }

    /// Rows of the tiles of an m x n GEMM: 32 when 64-row tiles would give fewer workgroups
    /// than the target and halving them adds tiles (m > 32); 128 when even those give twice
    /// the target (an evaluation pass's 93,000-row GEMMs; never split); else 64. Twice the tiles without
    /// a split-K reduce: the decoder's 5,000-row GEMMs of n = 200 reach 628 workgroups whole,
    /// and weight gradients need half the slices.
    pub fn tile_rows(&self, m: usize, n: usize) -> usize {
        if let Some(rows) = self.force_tile_rows {
            return rows;
        }
        if m > 32 && m.div_ceil(64) * n.div_ceil(64) < self.target() {
            32
        } else if m.div_ceil(128) * n.div_ceil(64) >= 2 * self.target() {
            128
        } else {
            64
        }
    }

    /// (slice length, slices) for an m x n GEMM over k in tiles of `tile_m` x 64, or None to
    /// leave it whole. Automatic: only a grid of fewer than the target's tiles splits, into the
    /// fewest slices that reach the target, or as many as the minimum length allows (at most
    /// k / `min_slice`); slices are multiples of 4 long, the last may be shorter. `extra_rows` adds m floats per slice
    /// (the folded row sums) to what must fit in `scratch` floats.
    pub(super) fn split_k(
        &self,
        m: usize,
        n: usize,
        k: usize,
        tile_m: usize,
        extra_rows: bool,
        scratch: usize,
    ) -> Option<(usize, usize)> {
        let per_slice = m * n + if extra_rows { m } else { 0 };
        let fits = |s: usize| s * per_slice <= scratch;
        if let Some(want) = self.force_slices {
            let len = k.div_ceil(want.max(1)).next_multiple_of(4).max(4);
            let s = k.div_ceil(len);
            return fits(s).then_some((len, s));
        }
        let base = m.div_ceil(tile_m) * n.div_ceil(64);
        let target = self.target();
        let most = k / self.min_slice.max(4);
        if base >= target || most < 2 || k < self.min_split_k {
            return None;
        }
        // The shortest slice: `most` slices, each a multiple of 4 long (vec4 loads).
        let shortest = k.div_ceil(most).next_multiple_of(4);
        let mut want = target.div_ceil(base);
        let (mut len, mut s) = loop {
            let len = k.div_ceil(want).next_multiple_of(4).max(shortest);
            let s = k.div_ceil(len);
            if s * base >= target || len == shortest {
                break (len, s);
            }
            want += 1;
        };
        if !fits(s) {
            let room = scratch / per_slice.max(1);
            if room < 2 {
                return None;
            }
            len = k.div_ceil(room).next_multiple_of(4).max(shortest);
            s = k.div_ceil(len);
        }
        (s >= 2).then_some((len, s))
    }

    /// Elements per partial sum of squares of the gradient norms: enough partials over
    /// `total` parameters to reach the target grid, each a multiple of 256 (one per thread
    /// of a workgroup, or more).
    pub(super) fn norm_chunk(&self, total: usize) -> usize {
        if let Some(c) = self.norm_chunk {
            return c.next_multiple_of(256).max(256);
        }
        256 * (total / (256 * self.target())).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIG: usize = usize::MAX;

    /// The weight gradients of the default model at K = 50, batch 100 (k = 5,000 rows)
    /// reach 4 x 132 workgroups; short k is left whole.
    #[test]
    fn split_k_reaches_the_target_or_stays_whole() {
        let g = GridConfig::default();
        for (m, n) in [(784, 200), (200, 200)] {
            let tm = g.tile_rows(m, n);
            assert_eq!(tm, 32, "{m}x{n}: 52 and 16 tiles of 64 rows");
            let (len, s) = g.split_k(m, n, 5000, tm, true, BIG).expect("splits");
            let base = m.div_ceil(tm) * n.div_ceil(64);
            assert!(s * base >= 528, "{m}x{n}: {s} slices of {len}");
            assert!(len % 4 == 0 && len >= MIN_SLICE && (s - 1) * len < 5000);
        }
        // 100 and 28 tiles of 32 rows: 6 and 19 slices (11 and 33 with 64-row tiles).
        assert_eq!(g.split_k(784, 200, 5000, 32, true, BIG), Some((836, 6)));
        assert_eq!(g.split_k(200, 200, 5000, 32, true, BIG), Some((264, 19)));
        assert_eq!(g.split_k(784, 200, 5000, 64, true, BIG), Some((456, 11)));
        assert_eq!(g.split_k(200, 200, 5000, 64, true, BIG), Some((152, 33)));
        // 7 tiles: as many slices as the minimum length allows (50 x 7 = 350 workgroups).
        assert_eq!(g.split_k(200, 50, 5000, 32, true, BIG), Some((100, 50)));
        // 628 tiles of 32 rows need no split; 316 of 64 rows did.
        assert_eq!(g.tile_rows(5000, 200), 32);
        assert_eq!(g.split_k(5000, 200, 200, 32, false, BIG), None);
        // k below MIN_SPLIT_K stays whole: the encoder's GEMMs over 100 rows, and the
        // decoder's 5,000-row GEMMs of k = 200 even in 64-row tiles.
        assert_eq!(g.split_k(5000, 200, 200, 64, false, BIG), None);
        assert_eq!(g.split_k(100, 200, 784, 32, false, BIG), None);
        let short = GridConfig {
            min_split_k: 0,
            ..g
        };
        assert_eq!(
            short.split_k(5000, 200, 200, 64, false, BIG),
            Some((100, 2))
        );
        assert_eq!(short.split_k(100, 200, 784, 32, false, BIG), Some((100, 8)));
        assert_eq!(short.split_k(100, 200, 191, 32, false, BIG), None);
        assert_eq!(g.split_k(200, 784, 100, 32, false, BIG), None);
        assert_eq!(g.tile_rows(5000, 784), 64, "1027 tiles of 64 rows");
        assert_eq!(g.split_k(5000, 784, 200, 64, false, BIG), None);
        // What does not fit the scratch is not split.
        assert_eq!(short.split_k(5000, 200, 200, 64, false, 1_000_000), None);
        assert_eq!(g.split_k(784, 200, 5000, 32, true, 100_000), None);
    }

    #[test]
    fn tile_rows_halve_only_short_grids_of_more_than_32_rows() {
        let g = GridConfig::default();
        assert_eq!(g.tile_rows(32, 200), 64, "32 rows: halving adds no tile");
        assert_eq!(g.tile_rows(100, 200), 32);
        assert_eq!(
            g.tile_rows(5000, 784),
            64,
            "520 tiles of 128 rows: under 2 x 528"
        );
        assert_eq!(g.tile_rows(93_531, 200), 128, "731 x 4 tiles of 128 rows");
        assert_eq!(g.tile_rows(33_000, 784), 128);
        assert_eq!(
            g.tile_rows(8_000, 784),
            64,
            "63 x 13 = 819 tiles of 128 rows"
        );
        let forced = GridConfig {
            force_tile_rows: Some(32),
            ..g
        };
        assert_eq!(forced.tile_rows(5000, 784), 32);
    }

    #[test]
    fn forced_slices_cover_k() {
        let g = GridConfig {
            force_slices: Some(3),
            ..Default::default()
        };
        assert_eq!(g.split_k(5, 7, 201, 64, false, BIG), Some((68, 3)));
        let g = GridConfig {
            force_slices: Some(13),
            ..g
        };
        assert_eq!(g.split_k(5, 7, 201, 64, false, BIG), Some((16, 13)));
        let g = GridConfig {
            force_slices: Some(1),
            ..g
        };
        assert_eq!(g.split_k(5, 7, 201, 64, false, BIG), Some((204, 1)));
    }

    #[test]
    fn norm_partials() {
        let g = GridConfig::default();
        assert_eq!(g.norm_chunk(425_284), 768);
        assert!(425_284usize.div_ceil(768) >= 528);
        assert_eq!(g.norm_chunk(6177), 256);
    }
}
