//! Layout choices made from the content: the title's font size (so a long title fits the
//! width) and, for [`LegendPos::Best`], the corner whose legend box covers the least data.
//! Text widths are estimated (DejaVu Sans averages about 0.52 em per character), which is
//! all a choice between four corners needs.

use super::LegendPos;

/// Average advance of a DejaVu Sans character, in ems.
const EM_PER_CHAR: f64 = 0.52;

/// The largest font size in `min..=max` at which `text` fits in `width` pixels.
pub fn fitting_font_size(text: &str, width: u32, max: u32, min: u32) -> u32 {
    let chars = text.chars().count().max(1) as f64;
    let fit = (width as f64 / (chars * EM_PER_CHAR)).floor() as u32;
    fit.clamp(min, max)
}

/// The legend box as fractions of the plotting area: (width, height), for `names` at
/// `font` px with a key area of `key` px and `margin` px around the box.
pub fn legend_box(names: &[&str], font: u32, key: u32, area: (u32, u32)) -> (f64, f64) {
    let longest = names.iter().map(|n| n.chars().count()).max().unwrap_or(0) as f64;
    let w = key as f64 + longest * font as f64 * EM_PER_CHAR + 24.0;
    let h = names.len() as f64 * (font as f64 + 7.0) + 14.0;
    (w / area.0.max(1) as f64, h / area.1.max(1) as f64)
}

/// The corner (of the four, in the order UpperRight, UpperLeft, LowerRight, LowerLeft)
/// whose legend box of `size` (fractions, a `margin` fraction in from the frame) covers the
/// fewest of `points` (fractions of the plotting area, y up); ties keep the earlier corner.
pub fn best_corner(points: &[(f64, f64)], size: (f64, f64), margin: (f64, f64)) -> LegendPos {
    let corners = [
        LegendPos::UpperRight,
        LegendPos::UpperLeft,
        LegendPos::LowerRight,
        LegendPos::LowerLeft,
    ];
    let covered = |pos: LegendPos| {
        let (x0, x1) = match pos {
            LegendPos::UpperLeft | LegendPos::LowerLeft => (margin.0, margin.0 + size.0),
            _ => (1.0 - margin.0 - size.0, 1.0 - margin.0),
        };
        let (y0, y1) = match pos {
            LegendPos::LowerLeft | LegendPos::LowerRight => (margin.1, margin.1 + size.1),
            _ => (1.0 - margin.1 - size.1, 1.0 - margin.1),
        };
        points
            .iter()
            .filter(|p| p.0 >= x0 && p.0 <= x1 && p.1 >= y0 && p.1 <= y1)
            .count()
    };
    corners
        .into_iter()
        .min_by_key(|&c| covered(c))
        .unwrap_or(LegendPos::UpperRight)
}

/// `pts` with `per` extra points along each segment, so that lines count, not only markers.
pub fn densify(pts: &[(f64, f64)], per: usize) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(pts.len() * (per + 1));
    for w in pts.windows(2) {
        for i in 0..=per {
            let t = i as f64 / (per + 1) as f64;
            out.push((
                w[0].0 + t * (w[1].0 - w[0].0),
                w[0].1 + t * (w[1].1 - w[0].1),
            ));
        }
    }
    out.extend(pts.last());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_titles_shrink_and_short_ones_do_not() {
        assert_eq!(fitting_font_size("short", 1000, 24, 14), 24);
        let long = "x".repeat(120);
        let s = fitting_font_size(&long, 1000, 24, 12);
        assert!((12..24).contains(&s), "{s}");
    }

    #[test]
    fn the_legend_avoids_the_data() {
        // Data along the top and the lower right: the lower left is free.
        let pts = vec![(0.1, 0.9), (0.5, 0.95), (0.9, 0.9), (0.9, 0.1)];
        assert_eq!(
            best_corner(&pts, (0.3, 0.3), (0.01, 0.01)),
            LegendPos::LowerLeft
        );
        assert_eq!(
            best_corner(&[], (0.3, 0.3), (0.0, 0.0)),
            LegendPos::UpperRight
        );
        assert_eq!(densify(&[(0.0, 0.0), (1.0, 1.0)], 1).len(), 3);
    }
}
