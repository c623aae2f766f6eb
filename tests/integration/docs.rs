//! The documents match the tree and the CLI: every repository path that README.md,
//! BENCHMARKS.md and the Markdown under docs/ and assets/ cite exists, so a moved file cannot
//! leave a stale pointer; and docs/cli.md names every command, flag and choice that `uvae
//! help` prints, so a new flag cannot go undocumented.

use crate::common::cli::run_ok;
use std::path::{Path, PathBuf};

/// Top-level folders whose paths the documents cite; a path is taken from one of these to the
/// first character that cannot be in a file name here (a backtick, space, colon, bracket).
const ROOTS: [&str; 7] = [
    "src/", "tests/", "benches/", "docs/", "shaders/", "assets/", ".ci/",
];

fn path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-')
}

/// Repository paths in `text`: those starting at a root (not inside a longer path such as
/// `../shared/src/...` or `/tmp/runs/...`), without a sentence's closing full stop.
fn root_paths(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (i, _) in text.char_indices() {
        let inside = text[..i].chars().next_back().is_some_and(path_char);
        if inside || !ROOTS.iter().any(|r| text[i..].starts_with(r)) {
            continue;
        }
        let len = text[i..].find(|c| !path_char(c)).unwrap_or(text.len() - i);
        found.push(text[i..i + len].trim_end_matches('.').to_string());
    }
    found
}

/// Targets of relative Markdown links, `[text](target)`, without an `#anchor`.
fn link_targets(text: &str) -> Vec<String> {
    text.match_indices("](")
        .filter_map(|(i, _)| {
            let rest = &text[i + 2..];
            let target = &rest[..rest.find(')')?];
            let target = target.split('#').next().unwrap_or("");
            let external = target.contains("://") || target.starts_with("mailto:");
            (!external && !target.is_empty()).then(|| target.to_string())
        })
        .collect()
}

/// `a/b/../c` as `a/c`, without touching the file system (the path may not exist).
fn normalise(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

fn markdown_in(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            markdown_in(&p, out);
        } else if p.extension().is_some_and(|x| x == "md") {
            out.push(p);
        }
    }
}

#[test]
fn every_path_the_documents_cite_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut docs = vec![root.join("README.md"), root.join("BENCHMARKS.md")];
    markdown_in(&root.join("docs"), &mut docs);
    markdown_in(&root.join("assets"), &mut docs);
    let (mut cited, mut missing) = (0, Vec::new());
    for doc in &docs {
        let text = std::fs::read_to_string(doc).unwrap();
        let name = doc.strip_prefix(root).unwrap().display().to_string();
        let from_root = root_paths(&text).into_iter().map(|p| root.join(p));
        let from_doc = link_targets(&text)
            .into_iter()
            .map(|p| normalise(&doc.parent().unwrap().join(p)));
        // A link out of the repository (`../shared/...`) is not the tree's to keep.
        for path in from_root.chain(from_doc).filter(|p| p.starts_with(root)) {
            cited += 1;
            if !path.exists() {
                let shown = path.strip_prefix(root).unwrap().display();
                missing.push(format!("{name}: {shown}"));
            }
        }
    }
    assert!(cited > 100, "only {cited} paths found: is the scan broken?");
    assert!(
        missing.is_empty(),
        "{} cited paths do not exist:\n{}",
        missing.len(),
        missing.join("\n")
    );
}

#[test]
fn the_scan_finds_paths_and_links_and_skips_outside_ones() {
    let text = "see `src/a.rs`, (tests/integration/b.rs) and src/c/. \
                Not ../shared/src/x.py nor /tmp/docs/y; [d](design.md#s) [w](https://x.org/src/z) [p](../shared/p.py)";
    assert_eq!(
        root_paths(text),
        ["src/a.rs", "tests/integration/b.rs", "src/c/"]
    );
    assert_eq!(link_targets(text), ["design.md", "../shared/p.py"]);
    let inside = normalise(Path::new("/r/docs/../shared/p.py"));
    assert_eq!(inside, Path::new("/r/shared/p.py"));
}

/// What `uvae help PATH...` lists: subcommands, long flags, and the values of its choices
/// (`Possible values:` lists and `[possible values: ...]`), clap's help layout.
#[derive(Debug, Default, PartialEq)]
struct Help {
    commands: Vec<String>,
    flags: Vec<String>,
    values: Vec<String>,
}

fn parse_help(text: &str) -> Help {
    let mut h = Help::default();
    let (mut section, mut in_values) = ("", false);
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let t = line.trim();
        if indent == 0 && t.ends_with(':') {
            section = t;
            continue;
        }
        if t == "Possible values:" {
            in_values = true;
            continue;
        }
        if in_values {
            if let Some(v) = t.strip_prefix("- ") {
                h.values
                    .push(v.split(':').next().unwrap().trim().to_string());
                continue;
            }
            in_values = false;
        }
        if let Some((_, list)) = t.split_once("[possible values: ") {
            let list = list.split(']').next().unwrap();
            h.values.extend(list.split(", ").map(str::to_string));
        }
        // Names sit at an indent of 2 to 6; their descriptions at 10 or more.
        if !(2..=6).contains(&indent) {
            continue;
        }
        let first = t.split_whitespace().next().unwrap_or("");
        if section == "Commands:" && first != "help" {
            h.commands.push(first.to_string());
        } else if section == "Options:" {
            if let Some(i) = t.find("--") {
                let name: String = t[i..]
                    .chars()
                    .take_while(|&c| c == '-' || c.is_ascii_alphanumeric())
                    .collect();
                if name != "--help" && name != "--version" {
                    h.flags.push(name);
                }
            }
        }
    }
    h
}

/// Whether `word` stands in `text` on its own: not inside a longer flag or name.
fn mentions(text: &str, word: &str) -> bool {
    let name_char = |c: char| c == '-' || c == '_' || c.is_ascii_alphanumeric();
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back().is_none_or(|c| !name_char(c));
        let after = text[i + word.len()..]
            .chars()
            .next()
            .is_none_or(|c| !name_char(c));
        before && after
    })
}

/// The `## ` sections of docs/cli.md whose heading names `uvae COMMAND`, joined.
fn sections_of(doc: &str, command: &str) -> String {
    let mut out = String::new();
    let mut keep = false;
    for line in doc.lines() {
        if line.starts_with("## ") {
            keep = line.contains(&format!("`uvae {command}`"));
        }
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[test]
fn cli_md_names_every_command_flag_and_choice() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/cli.md")).unwrap();
    let intro = doc.split("\n## ").next().unwrap();
    let mut missing = Vec::new();
    let top = parse_help(&run_ok(&["help"]));
    assert!(top.commands.len() > 10, "{top:?}");
    for command in &top.commands {
        if !mentions(intro, &format!("`{command}`")) {
            missing.push(format!("the list at the top: `{command}`"));
        }
        let section = sections_of(&doc, command);
        if section.is_empty() {
            missing.push(format!("a section headed `uvae {command}`"));
            continue;
        }
        // The command and its own subcommands (`uvae figure NAME`), one level down.
        let help = parse_help(&run_ok(&["help", command]));
        let mut pages = vec![(command.clone(), help)];
        for sub in pages[0].1.commands.clone() {
            let h = parse_help(&run_ok(&["help", command, &sub]));
            pages.push((format!("{command} {sub}"), h));
        }
        for (path, h) in &pages {
            for word in h.commands.iter().chain(&h.flags).chain(&h.values) {
                if !mentions(&section, word) {
                    missing.push(format!("uvae {path}: {word}"));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/cli.md leaves out what `uvae help` lists:\n{}",
        missing.join("\n")
    );
}

#[test]
fn help_is_parsed_into_commands_flags_and_values() {
    let text = "About\n\nUsage: uvae x [OPTIONS]\n\nCommands:\n  snr   SNR\n  help  Print\n\n\
                Options:\n  -q, --quiet\n          Print --not-a-flag\n      --model <M>\n\
                \x20         Possible values:\n          - vae:  The VAE\n          - toy\n\n\
                \x20     --x <X>  [possible values: epoch, seconds]\n  -h, --help\n";
    let h = parse_help(text);
    assert_eq!(h.commands, ["snr"]);
    assert_eq!(h.flags, ["--quiet", "--model", "--x"]);
    assert_eq!(h.values, ["vae", "toy", "epoch", "seconds"]);
    assert!(mentions("`--k K`, --model", "--k") && !mentions("--k-max", "--k"));
}
