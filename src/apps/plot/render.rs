//! Drawing a [`Chart`] with plotters into an RGB buffer.

use super::{layout, ticks, Chart, Emphasis, LegendPos, Line, Marker, Scale, PALETTE};
use anyhow::{anyhow, Result};
use plotters::prelude::*;
use std::sync::OnceLock;

const FONT: &str = "sans-serif";
const MARGIN: u32 = 18;
const X_LABEL_AREA: u32 = 58;
const Y_LABEL_AREA: u32 = 90;
const LEGEND_FONT: u32 = 15;
const LEGEND_KEY: u32 = 34;
const LEGEND_MARGIN: u32 = 12;

/// Registers the bundled font under plotters' "sans-serif" once per process.
fn register_font() -> Result<()> {
    static OK: OnceLock<bool> = OnceLock::new();
    let ok = *OK.get_or_init(|| {
        plotters::style::register_font(
            FONT,
            FontStyle::Normal,
            include_bytes!("../../../assets/fonts/DejaVuSans.ttf"),
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
    /// The legend corner: the one asked for, or for `Best` the corner covering the least
    /// data, from the plotting area's approximate size in pixels.
    fn legend_corner(&self, xr: (f64, f64), yr: (f64, f64), title_size: u32) -> LegendPos {
        if self.legend != LegendPos::Best {
            return self.legend;
        }
        let area = (
            self.width.saturating_sub(2 * MARGIN + Y_LABEL_AREA),
            self.height
                .saturating_sub(2 * MARGIN + X_LABEL_AREA + title_size + 10),
        );
        let names: Vec<&str> = self
            .series
            .iter()
            .map(|s| s.name.as_str())
            .filter(|n| !n.is_empty())
            .collect();
        let size = layout::legend_box(&names, LEGEND_FONT, LEGEND_KEY, area);
        let frac = |p: (f64, f64)| ((p.0 - xr.0) / (xr.1 - xr.0), (p.1 - yr.0) / (yr.1 - yr.0));
        let mut pts = Vec::new();
        for s in &self.series {
            let t = self.transformed(s);
            let line: Vec<(f64, f64)> = t.iter().map(|p| frac(p.0)).collect();
            pts.extend(match s.line {
                Line::None => line,
                _ => layout::densify(&line, 12),
            });
            for (p, bar) in &t {
                if let Some((lo, hi)) = bar {
                    pts.push(frac((p.0, *hi)));
                    pts.extend(lo.map(|l| frac((p.0, l))));
                }
            }
        }
        let margin = (
            LEGEND_MARGIN as f64 / area.0.max(1) as f64,
            LEGEND_MARGIN as f64 / area.1.max(1) as f64,
        );
        layout::best_corner(&pts, size, margin)
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
        let title_size = layout::fitting_font_size(&self.title, w.saturating_sub(40), 24, 13);
        let legend = self.legend_corner((x0, x1), (y0, y1), title_size);
        {
            let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
            root.fill(&WHITE).map_err(pe)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(&self.title, (FONT, title_size))
                .margin(MARGIN)
                .x_label_area_size(X_LABEL_AREA)
                .y_label_area_size(Y_LABEL_AREA)
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
                // Faint: the colour a third of the way from white, thin.
                let fade = |c: u8| 255 - (255 - c) / 3;
                let (color, width) = match s.emphasis {
                    Emphasis::Normal => (RGBColor(r, g, b), 2),
                    Emphasis::Bold => (RGBColor(r, g, b), 4),
                    Emphasis::Faint => (RGBColor(fade(r), fade(g), fade(b)), 1),
                };
                let style = ShapeStyle::from(&color).stroke_width(width);
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
                // Error bars drawn by hand: plotters' ErrorBar also paints a circle at the
                // mean, which would hide the series' own marker.
                let bars: Vec<(f64, Option<f64>, f64)> = pts
                    .iter()
                    .filter_map(|&(p, bar)| bar.map(|(lo, hi)| (p.0, lo, hi)))
                    .collect();
                chart
                    .draw_series(bars.iter().map(|&(x, lo, hi)| {
                        PathElement::new(vec![(x, lo.unwrap_or(y0)), (x, hi)], style)
                    }))
                    .map_err(pe)?;
                let caps = bars
                    .iter()
                    .flat_map(|&(x, lo, hi)| lo.map(|l| (x, l)).into_iter().chain([(x, hi)]));
                chart
                    .draw_series(caps.map(|c| {
                        EmptyElement::at(c) + PathElement::new(vec![(-4, 0), (4, 0)], style)
                    }))
                    .map_err(pe)?;
                // The legend key: a short line (where the series has one) and the marker.
                type Segments = (Vec<(i32, i32)>, Vec<(i32, i32)>);
                let (seg, seg2): Segments = match s.line {
                    Line::None => (Vec::new(), Vec::new()),
                    Line::Solid => (vec![(-12, 0), (0, 0)], vec![(0, 0), (12, 0)]),
                    Line::Dashed => (vec![(-13, 0), (-3, 0)], vec![(3, 0), (13, 0)]),
                };
                let name = s.name.as_str();
                let filled = style.filled();
                macro_rules! markers {
                    ($elem:expr, $key:expr) => {{
                        let drawn = chart.draw_series(xy.iter().map($elem)).map_err(pe)?;
                        if !name.is_empty() {
                            drawn.label(name).legend(move |at| {
                                EmptyElement::at(at)
                                    + PathElement::new(seg.clone(), style)
                                    + PathElement::new(seg2.clone(), style)
                                    + $key
                            });
                        }
                    }};
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
                    .position(match legend {
                        LegendPos::UpperRight | LegendPos::Best => SeriesLabelPosition::UpperRight,
                        LegendPos::UpperLeft => SeriesLabelPosition::UpperLeft,
                        LegendPos::LowerRight => SeriesLabelPosition::LowerRight,
                        LegendPos::LowerLeft => SeriesLabelPosition::LowerLeft,
                    })
                    .margin(LEGEND_MARGIN)
                    .legend_area_size(LEGEND_KEY)
                    .label_font((FONT, LEGEND_FONT))
                    .background_style(WHITE.mix(0.88))
                    .border_style(RGBColor(160, 160, 160))
                    .draw()
                    .map_err(pe)?;
            }
            root.present().map_err(pe)?;
        }
        Ok(buf)
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
