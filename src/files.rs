//! Output files: atomic writes, JSON lines, CSV records, and f64s that round-trip exactly.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`, so a
/// reader never sees a half-written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path)?;
    let result = (|| -> Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

/// The temporary name [`write_atomic`] and [`write_all_atomic`] use beside `path`.
fn temp_path(path: &Path) -> Result<std::path::PathBuf> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .context("output path has no file name")?
        .to_string_lossy();
    Ok(dir.join(format!(".{name}.tmp{}", std::process::id())))
}

/// Writes several files so that each is replaced whole: every one to its temporary file
/// (written and fsynced) first, then the renames in the order given, then an fsync of the
/// folders. A kill at any instant leaves each path either old or new, and a later file in
/// `files` is never newer than an earlier one.
pub fn write_all_atomic(files: &[(&Path, &[u8])]) -> Result<()> {
    let mut temps = Vec::new();
    let result = (|| -> Result<()> {
        for (path, bytes) in files {
            let tmp = temp_path(path)?;
            temps.push(tmp.clone());
            let mut f = std::fs::File::create(&tmp)
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            f.write_all(bytes)
                .and_then(|_| f.sync_all())
                .with_context(|| format!("cannot write {}", tmp.display()))?;
        }
        for ((path, _), tmp) in files.iter().zip(&temps) {
            std::fs::rename(tmp, path)
                .with_context(|| format!("cannot replace {}", path.display()))?;
        }
        for (path, _) in files {
            if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                // Makes the renames durable; not every platform can open a folder.
                if let Ok(d) = std::fs::File::open(dir) {
                    let _ = d.sync_all();
                }
            }
        }
        Ok(())
    })();
    if result.is_err() {
        for tmp in &temps {
            let _ = std::fs::remove_file(tmp);
        }
    }
    result
}

/// Removes the temporary files an interrupted [`write_atomic`] or [`write_all_atomic`] left
/// in `dir` (`.NAME.tmpPID`); returns how many.
pub fn remove_temps(dir: &Path) -> Result<usize> {
    let mut removed = 0;
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let is_temp = name.starts_with('.')
            && name
                .rsplit_once(".tmp")
                .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
        if is_temp && e.file_type().is_ok_and(|t| t.is_file()) {
            std::fs::remove_file(e.path())
                .with_context(|| format!("cannot remove {}", e.path().display()))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Keeps the first `lines` complete lines of a JSON-lines file and drops the rest (a line
/// appended after the state a run resumes from, or a torn last line).
pub fn truncate_lines(path: &Path, lines: usize) -> Result<()> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && lines == 0 => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut end = 0;
    for _ in 0..lines {
        match text[end..].iter().position(|&b| b == b'\n') {
            Some(i) => end += i + 1,
            None => anyhow::bail!(
                "{} has fewer than the {lines} complete lines the training state expects",
                path.display()
            ),
        }
    }
    if end < text.len() {
        write_atomic(path, &text[..end])?;
    }
    Ok(())
}

/// Appends one JSON value as a line. Each line is written whole with one write call, so a
/// crash leaves at worst a missing last line, never a truncated one in the middle.
pub fn append_jsonl(path: &Path, value: &serde_json::Value) -> Result<()> {
    let mut line = serde_json::to_string(value)?;
    line.push('\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    f.write_all(line.as_bytes())
        .with_context(|| format!("cannot append to {}", path.display()))
}

/// One CSV record and its newline, by RFC 4180: a field is quoted only when it holds a comma,
/// a quote or a line break, and a quote inside is doubled. Every table the crate writes (the
/// figures', reproduce's results.csv) goes through here, so they parse with one rule.
pub fn csv_record<S: AsRef<str>>(fields: &[S]) -> String {
    let mut line = String::new();
    for (i, f) in fields.iter().enumerate() {
        let f = f.as_ref();
        if i > 0 {
            line.push(',');
        }
        if f.contains([',', '"', '\n', '\r']) {
            line.push('"');
            line.push_str(&f.replace('"', "\"\""));
            line.push('"');
        } else {
            line.push_str(f);
        }
    }
    line.push('\n');
    line
}

/// f64 fields as their IEEE bit patterns (u64), so a file round-trips them exactly.
pub mod f64_bits {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(v.to_bits())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(f64::from_bits(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::csv_record;

    #[test]
    fn csv_quotes_only_what_needs_it() {
        assert_eq!(csv_record(&["a", "1e0", ""]), "a,1e0,\n");
        assert_eq!(
            csv_record(&["I0 = 2, p = 0.6", "say \"hi\"", "two\nlines"]),
            "\"I0 = 2, p = 0.6\",\"say \"\"hi\"\"\",\"two\nlines\"\n"
        );
    }
}
