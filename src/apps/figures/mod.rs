//! Figures as commands (`uvae figure NAME`, docs/design.md §5.4): each figure computes a
//! table, draws it with [`crate::apps::plot`], and writes `DIR/<name>.png`, `DIR/<name>.csv` and
//! `DIR/<name>.json` (the table, with the settings and notes that qualify it), or a named
//! `FILE.png` with `FILE.csv` and `FILE.json` beside it. One file per figure; defaults are
//! sized to run in seconds, flags scale them up.

pub mod bias;
pub mod dreg_curves;
pub mod meeting_times;
pub mod mlmc_decay;
pub mod snr;

use crate::apps::plot::Chart;
use crate::exact::{fill_std_normals, ExactModel};
use crate::files::{csv_record, write_atomic};
use anyhow::{bail, Result};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

/// One value of a table cell.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Text(String),
    Int(i64),
    Num(f64),
}

impl From<&str> for Cell {
    fn from(s: &str) -> Cell {
        Cell::Text(s.to_string())
    }
}
impl From<String> for Cell {
    fn from(s: String) -> Cell {
        Cell::Text(s)
    }
}
impl From<usize> for Cell {
    fn from(v: usize) -> Cell {
        Cell::Int(v as i64)
    }
}
impl From<u32> for Cell {
    fn from(v: u32) -> Cell {
        Cell::Int(v as i64)
    }
}
impl From<f64> for Cell {
    fn from(v: f64) -> Cell {
        Cell::Num(v)
    }
}

impl Cell {
    fn json(&self) -> Value {
        match self {
            Cell::Text(s) => json!(s),
            Cell::Int(v) => json!(v),
            Cell::Num(v) => json!(v),
        }
    }
    fn csv(&self) -> String {
        match self {
            Cell::Text(s) => s.clone(),
            Cell::Int(v) => v.to_string(),
            Cell::Num(v) => format!("{v:e}"),
        }
    }
}

/// The table behind a picture: named columns, one row per plotted point.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

impl Table {
    pub fn new(columns: &[&str]) -> Table {
        Table {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<Cell>) {
        assert_eq!(row.len(), self.columns.len(), "a row per column");
        self.rows.push(row);
    }

    /// Fails on a non-finite number: a figure leaves such a point out and says so in its
    /// notes, it never writes NaN.
    fn check(&self, name: &str) -> Result<()> {
        for row in &self.rows {
            for (c, v) in self.columns.iter().zip(row) {
                if let Cell::Num(x) = v {
                    if !x.is_finite() {
                        bail!("figure {name}: column {c} holds {x} (a bug: it should have been left out)");
                    }
                }
            }
        }
        Ok(())
    }

    pub fn to_csv(&self) -> String {
        let mut s = csv_record(&self.columns);
        for row in &self.rows {
            s += &csv_record(&row.iter().map(Cell::csv).collect::<Vec<_>>());
        }
        s
    }

    fn rows_json(&self) -> Value {
        Value::Array(
            self.rows
                .iter()
                .map(|row| {
                    let m: Map<String, Value> = self
                        .columns
                        .iter()
                        .cloned()
                        .zip(row.iter().map(Cell::json))
                        .collect();
                    Value::Object(m)
                })
                .collect(),
        )
    }
}

/// A computed figure: its picture, its table, and what qualifies them.
#[derive(Clone, Debug)]
pub struct Figure {
    pub name: &'static str,
    pub chart: Chart,
    /// Further panels drawn to the right of `chart` in the same PNG (empty: one panel).
    pub panels: Vec<Chart>,
    pub table: Table,
    /// The settings that produced it (seed, reps, sizes).
    pub settings: Value,
    /// Caveats a reader needs: omitted points, labelled reconstructions, noise floors.
    pub notes: Vec<String>,
    /// Figure-specific results beyond the table (fitted rates, summaries).
    pub summary: Value,
}

/// Where a figure's three files went.
#[derive(Clone, Debug)]
pub struct Written {
    pub png: PathBuf,
    pub csv: PathBuf,
    pub json: PathBuf,
}

impl Figure {
    /// The JSON document: name, title, settings, notes, summary, columns and rows.
    pub fn to_json(&self) -> Value {
        json!({
            "figure": self.name,
            "title": self.chart.title,
            "settings": self.settings,
            "notes": self.notes,
            "summary": self.summary,
            "columns": self.table.columns,
            "rows": self.table.rows_json(),
        })
    }

    /// Writes `dir/<name>.{png,csv,json}` atomically, creating `dir`.
    pub fn write(&self, dir: &Path) -> Result<Written> {
        self.write_to(&dir.join(format!("{}.png", self.name)))
    }

    /// Writes the picture to `png` and the table beside it, `.csv` and `.json` for its
    /// extension, atomically, creating the folder.
    pub fn write_to(&self, png: &Path) -> Result<Written> {
        self.table.check(self.name)?;
        if let Some(dir) = png.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        }
        let w = Written {
            png: png.to_path_buf(),
            csv: png.with_extension("csv"),
            json: png.with_extension("json"),
        };
        if self.panels.is_empty() {
            self.chart.save_png(&w.png)?;
        } else {
            let all: Vec<&Chart> = std::iter::once(&self.chart).chain(&self.panels).collect();
            write_atomic(&w.png, &crate::apps::plot::side_by_side_png(&all)?)?;
        }
        write_atomic(&w.csv, self.table.to_csv().as_bytes())?;
        let mut text = serde_json::to_string_pretty(&self.to_json())?;
        text.push('\n');
        write_atomic(&w.json, text.as_bytes())?;
        Ok(w)
    }
}

/// Least-squares line through `pts`: (slope, intercept); None with fewer than two distinct x.
pub fn least_squares(pts: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = pts.len() as f64;
    let (sx, sy) = pts
        .iter()
        .fold((0.0, 0.0), |(a, b), &(x, y)| (a + x, b + y));
    let sxx: f64 = pts.iter().map(|p| p.0 * p.0).sum();
    let sxy: f64 = pts.iter().map(|p| p.0 * p.1).sum();
    let den = n * sxx - sx * sx;
    if pts.len() < 2 || den.abs() < 1e-12 {
        return None;
    }
    let slope = (n * sxy - sx * sy) / den;
    Some((slope, (sy - slope * sx) / n))
}

/// `n` log-weights of datapoint `x` under an exact model (no per-sample gradients: the
/// figures that need only log p(x) estimates skip them).
pub fn exact_log_weights(
    model: &(impl ExactModel + ?Sized),
    x: &[f64],
    n: usize,
    rng: &mut impl rand::Rng,
) -> Vec<f64> {
    let mut eps = vec![0.0; model.z_dim()];
    (0..n)
        .map(|_| {
            fill_std_normals(rng, &mut eps);
            model.sample(x, &eps).1
        })
        .collect()
}

/// Parses a comma-separated list of positive integers (`--ks 1,10,100`).
pub fn parse_sizes(s: &str, flag: &str) -> Result<Vec<usize>> {
    let v: Result<Vec<usize>, _> = s.split(',').map(|t| t.trim().parse::<usize>()).collect();
    match v {
        Ok(v) if !v.is_empty() && v.iter().all(|&k| k > 0) => Ok(v),
        _ => bail!("{flag} {s:?}: expected a comma-separated list of positive integers"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_squares_recovers_a_line() {
        let pts: Vec<(f64, f64)> = (0..5).map(|i| (i as f64, 3.0 - 2.0 * i as f64)).collect();
        let (s, c) = least_squares(&pts).unwrap();
        assert!((s + 2.0).abs() < 1e-12 && (c - 3.0).abs() < 1e-12);
        assert!(least_squares(&[(1.0, 1.0)]).is_none());
    }

    #[test]
    fn tables_refuse_nan_and_write_csv() {
        let mut t = Table::new(&["name", "k", "v"]);
        t.push(vec!["a".into(), 3usize.into(), 0.5.into()]);
        assert_eq!(t.to_csv(), "name,k,v\na,3,5e-1\n");
        assert!(t.check("x").is_ok());
        t.push(vec!["b".into(), 1usize.into(), f64::NAN.into()]);
        assert!(t.check("x").is_err());
        assert!(parse_sizes("1, 10,100", "--ks").unwrap() == vec![1, 10, 100]);
        assert!(parse_sizes("1,0", "--ks").is_err());
    }
}
