//! A small line-chart renderer for the figures and `uvae plot`: a title, axis labels, linear
//! or log10 axes, named series with optional y error bars, a legend, on a white background,
//! rendered to PNG without system fonts (the bundled DejaVu Sans) so a headless machine
//! draws the same picture.
//!
//! Log axes are drawn in log10 coordinates on a linear plotters axis with tick positions and
//! labels chosen here ([`ticks`]): one coordinate type serves every axis combination, and
//! ticks sit at powers of ten rather than wherever plotters' linear key points fall.

mod layout;
mod render;
pub mod runs;
pub mod ticks;

use anyhow::{anyhow, Result};
use std::path::Path;

/// How an axis maps data values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    Linear,
    /// log10; values <= 0 cannot be shown and are left out.
    Log10,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Axis {
    /// The label, units included, e.g. "training time (s)".
    pub label: String,
    pub scale: Scale,
    /// Data-value range; None fits the data (and error bars) with a margin.
    pub range: Option<(f64, f64)>,
}

impl Axis {
    pub fn linear(label: impl Into<String>) -> Axis {
        Axis {
            label: label.into(),
            scale: Scale::Linear,
            range: None,
        }
    }
    pub fn log(label: impl Into<String>) -> Axis {
        Axis {
            label: label.into(),
            scale: Scale::Log10,
            range: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marker {
    None,
    Circle,
    Triangle,
    Square,
    Cross,
}

/// How strongly a series is drawn: a mean over seeds bold, each seed faint (as the DReG
/// paper draws its trials). A faint series has no legend entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Emphasis {
    #[default]
    Normal,
    Bold,
    Faint,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line {
    Solid,
    Dashed,
    None,
}

/// One named curve. Points whose value a log axis cannot show are left out.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Half-widths of vertical error bars, one per point.
    pub y_err: Option<Vec<f64>>,
    /// Index into [`PALETTE`] (default: the series' position).
    pub color: Option<usize>,
    pub marker: Marker,
    pub line: Line,
    pub emphasis: Emphasis,
}

impl Series {
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Series {
        Series {
            name: name.into(),
            points,
            y_err: None,
            color: None,
            marker: Marker::Circle,
            line: Line::Solid,
            emphasis: Emphasis::Normal,
        }
    }
    pub fn emphasis(mut self, e: Emphasis) -> Series {
        self.emphasis = e;
        self
    }
    pub fn with_err(mut self, err: Vec<f64>) -> Series {
        self.y_err = Some(err);
        self
    }
    pub fn color(mut self, index: usize) -> Series {
        self.color = Some(index);
        self
    }
    pub fn marker(mut self, m: Marker) -> Series {
        self.marker = m;
        self
    }
    pub fn line(mut self, l: Line) -> Series {
        self.line = l;
        self
    }
}

/// Where the legend box sits inside the plotting area.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LegendPos {
    /// The corner whose box covers the fewest points and line segments (the default).
    Best,
    UpperRight,
    UpperLeft,
    LowerRight,
    LowerLeft,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Chart {
    pub title: String,
    pub x: Axis,
    pub y: Axis,
    pub series: Vec<Series>,
    pub legend: LegendPos,
    pub width: u32,
    pub height: u32,
}

/// Tableau's ten colours: distinct, and readable on white.
pub const PALETTE: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

impl Chart {
    /// An empty chart of the default size, 1000 x 640.
    pub fn new(title: impl Into<String>, x: Axis, y: Axis) -> Chart {
        Chart {
            title: title.into(),
            x,
            y,
            series: Vec::new(),
            legend: LegendPos::Best,
            width: 1000,
            height: 640,
        }
    }

    pub fn push(&mut self, s: Series) {
        self.series.push(s);
    }

    /// Each series' points in axis coordinates, with (low, high) error-bar ends where
    /// given (a low end a log axis cannot show is None: the bar runs to the frame).
    #[allow(clippy::type_complexity)]
    pub(crate) fn transformed(&self, s: &Series) -> Vec<((f64, f64), Option<(Option<f64>, f64)>)> {
        let (xs, ys) = (self.x.scale, self.y.scale);
        s.points
            .iter()
            .enumerate()
            .filter_map(|(i, &(x, y))| {
                let p = (ticks::to_axis(xs, x)?, ticks::to_axis(ys, y)?);
                let bar = s
                    .y_err
                    .as_ref()
                    .and_then(|e| e.get(i))
                    .filter(|e| e.is_finite() && **e > 0.0)
                    .and_then(|&e| Some((ticks::to_axis(ys, y - e), ticks::to_axis(ys, y + e)?)));
                Some((p, bar))
            })
            .collect()
    }

    pub(crate) fn axis_range(
        &self,
        axis: &Axis,
        pick: impl Fn(&(f64, f64), Option<(Option<f64>, f64)>) -> Vec<f64>,
    ) -> (f64, f64) {
        if let Some((lo, hi)) = axis.range {
            if let (Some(a), Some(b)) = (
                ticks::to_axis(axis.scale, lo),
                ticks::to_axis(axis.scale, hi),
            ) {
                if b > a {
                    return (a, b);
                }
            }
        }
        let vals: Vec<f64> = self
            .series
            .iter()
            .flat_map(|s| self.transformed(s))
            .flat_map(|(p, bar)| pick(&p, bar))
            .collect();
        ticks::padded_range(&vals)
    }

    /// The chart as a PNG file's bytes.
    pub fn to_png(&self) -> Result<Vec<u8>> {
        let rgb = self.render_rgb()?;
        let img = image::RgbImage::from_raw(self.width, self.height, rgb)
            .ok_or_else(|| anyhow!("the chart buffer has the wrong size"))?;
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png)?;
        Ok(out.into_inner())
    }

    /// Renders and writes the PNG atomically (temporary file, fsync, rename).
    pub fn save_png(&self, path: &Path) -> Result<()> {
        crate::files::write_atomic(path, &self.to_png()?)
    }
}

/// Charts of the same height rendered side by side into one PNG.
pub fn side_by_side_png(charts: &[&Chart]) -> Result<Vec<u8>> {
    let height = charts.iter().map(|c| c.height).max().unwrap_or(0);
    let width: u32 = charts.iter().map(|c| c.width).sum();
    let mut img = image::RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
    let mut x0 = 0;
    for c in charts {
        let part = image::RgbImage::from_raw(c.width, c.height, c.render_rgb()?)
            .ok_or_else(|| anyhow!("the chart buffer has the wrong size"))?;
        image::imageops::replace(&mut img, &part, x0 as i64, 0);
        x0 += c.width;
    }
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variance(rgb: &[u8]) -> f64 {
        let n = rgb.len() as f64;
        let mean = rgb.iter().map(|&v| v as f64).sum::<f64>() / n;
        rgb.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n
    }

    #[test]
    fn renders_log_and_linear_charts_with_content() {
        let mut c = Chart::new("test", Axis::log("K"), Axis::log("SNR"));
        c.push(Series::new(
            "a",
            vec![(1.0, 0.1), (10.0, 0.3), (100.0, 1.0)],
        ));
        c.push(
            Series::new("b", vec![(1.0, 1.0), (10.0, 0.0), (100.0, 0.01)])
                .with_err(vec![0.5, 0.1, 0.02])
                .line(Line::Dashed)
                .marker(Marker::Square),
        );
        let rgb = c.render_rgb().unwrap();
        assert_eq!(rgb.len(), 1000 * 640 * 3);
        // White background with lines and text: mostly 255, clearly not uniform.
        assert!(variance(&rgb) > 100.0, "{}", variance(&rgb));
        let png = c.to_png().unwrap();
        let img = image::load_from_memory(&png).unwrap();
        assert_eq!((img.width(), img.height()), (1000, 640));

        let mut c = Chart::new("linear", Axis::linear("epoch"), Axis::linear("nats"));
        c.push(Series::new("only", vec![(1.0, -190.0)]));
        assert!(variance(&c.render_rgb().unwrap()) > 50.0);
    }

    #[test]
    fn an_empty_chart_still_renders() {
        let c = Chart::new("empty", Axis::linear("x"), Axis::log("y"));
        assert!(c.to_png().is_ok());
    }
}
