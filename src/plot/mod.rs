//! A small line-chart renderer for the figures and `uvae plot`: a title, axis labels, linear
//! or log10 axes, named series with optional y error bars, a legend, on a white background,
//! rendered to PNG without system fonts (the bundled DejaVu Sans) so a headless machine
//! draws the same picture.
//!
//! Log axes are drawn in log10 coordinates on a linear plotters axis with tick positions and
//! labels chosen here ([`ticks`]): one coordinate type serves every axis combination, and
//! ticks sit at powers of ten rather than wherever plotters' linear key points fall.

pub mod runs;
pub mod ticks;

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

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
        }
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

const FONT: &str = "sans-serif";

/// Registers the bundled font under plotters' "sans-serif" once per process.
fn register_font() -> Result<()> {
    static OK: OnceLock<bool> = OnceLock::new();
    let ok = *OK.get_or_init(|| {
        plotters::style::register_font(
            FONT,
            FontStyle::Normal,
            include_bytes!("../../assets/fonts/DejaVuSans.ttf"),
        )
        .is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(anyhow!(
            "the bundled font assets/fonts/DejaVuSans.ttf did not load"
        ))
    }
}

fn pe<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing the chart failed: {e:?}")
}

impl Chart {
    /// An empty chart of the default size, 1000 x 640.
    pub fn new(title: impl Into<String>, x: Axis, y: Axis) -> Chart {
        Chart {
            title: title.into(),
            x,
            y,
            series: Vec::new(),
            legend: LegendPos::UpperRight,
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
    fn transformed(&self, s: &Series) -> Vec<((f64, f64), Option<(Option<f64>, f64)>)> {
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

    fn axis_range(
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

    /// The chart as RGB pixels, `width * height * 3` bytes.
    pub fn render_rgb(&self) -> Result<Vec<u8>> {
        register_font()?;
        let (w, h) = (self.width, self.height);
        let mut buf = vec![255u8; w as usize * h as usize * 3];
        let (x0, x1) = self.axis_range(&self.x, |p, _| vec![p.0]);
        let (y0, y1) = self.axis_range(&self.y, |p, bar| {
            let mut v = vec![p.1];
            if let Some((lo, hi)) = bar {
                v.extend(lo);
                v.push(hi);
            }
            v
        });
        let axis_ticks = |scale: Scale, lo: f64, hi: f64| match scale {
            Scale::Linear => (ticks::linear_ticks(lo, hi, 8), Vec::new()),
            Scale::Log10 => ticks::log_ticks(lo, hi),
        };
        let (xmaj, xmin) = axis_ticks(self.x.scale, x0, x1);
        let (ymaj, ymin) = axis_ticks(self.y.scale, y0, y1);
        {
            let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
            root.fill(&WHITE).map_err(pe)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(&self.title, (FONT, 24))
                .margin(18)
                .x_label_area_size(58)
                .y_label_area_size(90)
                .build_cartesian_2d(
                    Ticked {
                        lo: x0,
                        hi: x1,
                        major: xmaj,
                        minor: xmin,
                    },
                    Ticked {
                        lo: y0,
                        hi: y1,
                        major: ymaj,
                        minor: ymin,
                    },
                )
                .map_err(pe)?;
            let (xs, ys) = (self.x.scale, self.y.scale);
            let label = |scale: Scale, v: f64| {
                ticks::format_tick(match scale {
                    Scale::Linear => v,
                    Scale::Log10 => 10f64.powf(v),
                })
            };
            chart
                .configure_mesh()
                .x_desc(self.x.label.as_str())
                .y_desc(self.y.label.as_str())
                .x_label_formatter(&|v| label(xs, *v))
                .y_label_formatter(&|v| label(ys, *v))
                .label_style((FONT, 15))
                .axis_desc_style((FONT, 18))
                .bold_line_style(RGBColor(210, 210, 210))
                .light_line_style(RGBColor(238, 238, 238))
                .draw()
                .map_err(pe)?;
            for (i, s) in self.series.iter().enumerate() {
                let (r, g, b) = PALETTE[s.color.unwrap_or(i) % PALETTE.len()];
                let color = RGBColor(r, g, b);
                let style = ShapeStyle::from(&color).stroke_width(2);
                let pts = self.transformed(s);
                let xy: Vec<(f64, f64)> = pts.iter().map(|p| p.0).collect();
                match s.line {
                    Line::Solid => {
                        chart
                            .draw_series(LineSeries::new(xy.clone(), style))
                            .map_err(pe)?;
                    }
                    Line::Dashed => {
                        chart
                            .draw_series(DashedLineSeries::new(xy.clone(), 9, 6, style))
                            .map_err(pe)?;
                    }
                    Line::None => {}
                }
                chart
                    .draw_series(pts.iter().filter_map(|&(p, bar)| {
                        let (lo, hi) = bar?;
                        Some(ErrorBar::new_vertical(
                            p.0,
                            lo.unwrap_or(y0),
                            p.1,
                            hi,
                            style,
                            8,
                        ))
                    }))
                    .map_err(pe)?;
                // The legend key: a short line (where the series has one) and the marker.
                let seg: Vec<(i32, i32)> = match s.line {
                    Line::None => Vec::new(),
                    _ => vec![(-12, 0), (12, 0)],
                };
                let name = s.name.as_str();
                let filled = style.filled();
                macro_rules! markers {
                    ($elem:expr, $key:expr) => {
                        chart
                            .draw_series(xy.iter().map($elem))
                            .map_err(pe)?
                            .label(name)
                            .legend(move |at| {
                                EmptyElement::at(at) + PathElement::new(seg.clone(), style) + $key
                            })
                    };
                }
                match s.marker {
                    Marker::None => markers!(
                        |&c| Pixel::new(c, WHITE.mix(0.0)),
                        Pixel::new((0, 0), WHITE.mix(0.0))
                    ),
                    Marker::Circle => markers!(
                        |&c| Circle::new(c, 4, filled),
                        Circle::new((0, 0), 4, filled)
                    ),
                    Marker::Triangle => markers!(
                        |&c| TriangleMarker::new(c, 6, filled),
                        TriangleMarker::new((0, 0), 6, filled)
                    ),
                    Marker::Square => markers!(
                        |&c| EmptyElement::at(c) + Rectangle::new([(-4, -4), (4, 4)], filled),
                        Rectangle::new([(-4, -4), (4, 4)], filled)
                    ),
                    Marker::Cross => {
                        markers!(|&c| Cross::new(c, 5, style), Cross::new((0, 0), 5, style))
                    }
                };
            }
            if self.series.iter().any(|s| !s.name.is_empty()) {
                chart
                    .configure_series_labels()
                    .position(match self.legend {
                        LegendPos::UpperRight => SeriesLabelPosition::UpperRight,
                        LegendPos::UpperLeft => SeriesLabelPosition::UpperLeft,
                        LegendPos::LowerRight => SeriesLabelPosition::LowerRight,
                        LegendPos::LowerLeft => SeriesLabelPosition::LowerLeft,
                    })
                    .margin(12)
                    .legend_area_size(34)
                    .label_font((FONT, 15))
                    .background_style(WHITE.mix(0.88))
                    .border_style(RGBColor(160, 160, 160))
                    .draw()
                    .map_err(pe)?;
            }
            root.present().map_err(pe)?;
        }
        Ok(buf)
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

/// A linear axis over [lo, hi] with the tick positions given: plotters' own f64 axis picks
/// its key points itself and cannot take a label formatter with custom points.
struct Ticked {
    lo: f64,
    hi: f64,
    major: Vec<f64>,
    minor: Vec<f64>,
}

impl Ranged for Ticked {
    type FormatOption = plotters::coord::ranged1d::DefaultFormatting;
    type ValueType = f64;
    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let t = (v - self.lo) / (self.hi - self.lo);
        limit.0 + (t * (limit.1 - limit.0) as f64).round() as i32
    }
    fn key_points<H: plotters::coord::ranged1d::KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            self.minor.clone()
        } else {
            self.major.clone()
        }
    }
    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
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
