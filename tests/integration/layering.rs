//! The layers of docs/design.md §4, kept true: every `crate::`, `super::` and `self::` path in
//! src/ (in `use` trees and inline in expressions, outside `#[cfg(test)]` items, comments and
//! string literals) is resolved to the module file it names, and the resulting edges must
//! follow the layer table and form no cycle among files. The binary (main.rs, cli/) may use
//! anything and is not read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The foundations: every module may use them, and they use only one another.
const FOUNDATIONS: &[&str] = &[
    "denormals",
    "error",
    "files",
    "progress",
    "rng",
    "run_lock",
    "stats",
];

/// The engine below the applications, bottom up (`train` last).
const ENGINE: &[&str] = &[
    "estimators",
    "exact",
    "optim",
    "data",
    "model",
    "coupling",
    "config",
    "backend",
    "eval",
    "train",
];

/// docs/design.md §4's table, bottom up: modules, and what they may use besides the
/// foundations.
const LAYERS: &[(&[&str], &[&str])] = &[
    (FOUNDATIONS, FOUNDATIONS),
    (&["estimators", "exact", "optim", "data"], &[]),
    (&["model"], &["exact"]),
    (&["coupling"], &["estimators", "exact"]),
    (&["config"], &["estimators", "model", "optim", "data"]),
    (
        &["backend"],
        &["estimators", "coupling", "model", "optim", "data"],
    ),
    (&["eval"], &["backend"]),
    (&["train"], ENGINE.split_at(ENGINE.len() - 1).0),
    (&["apps"], ENGINE),
];

/// A module path from the crate root, e.g. ["backend", "gpu", "plan"].
type ModPath = Vec<String>;

/// One resolved path: where it is written and the module file it names.
#[derive(Clone, Debug)]
struct Edge {
    from: String,
    line: usize,
    to: String,
    text: String,
}

/// The module a file under src/ declares ("backend/gpu/mod.rs" -> backend::gpu).
fn module_of(path: &str) -> ModPath {
    let stem = path.strip_suffix(".rs").unwrap_or(path);
    let mut segs: ModPath = stem.split('/').map(String::from).collect();
    if matches!(segs.last().map(String::as_str), Some("mod" | "lib")) {
        segs.pop();
    }
    segs
}

/// `text` with comments and string, byte-string and char literals blanked to spaces (lines
/// kept), so that what remains is code.
fn blank_non_code(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < c.len() {
        if let Some(end) = non_code_end(&c, i) {
            out.extend(
                c[i..end]
                    .iter()
                    .map(|&ch| if ch == '\n' { '\n' } else { ' ' }),
            );
            i = end;
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// The end of the comment or literal that starts at `i`, if one does: `//`, nested `/* */`,
/// `"..."`, `b"..."`, `r#"..."#`, `br"..."`, `'x'`, `b'\''`, `'\u{2014}'` (not a lifetime
/// `'a`).
fn non_code_end(c: &[char], i: usize) -> Option<usize> {
    let rest = &c[i..];
    if rest.starts_with(&['/', '/']) {
        return Some(
            rest.iter()
                .position(|&ch| ch == '\n')
                .map_or(c.len(), |p| i + p),
        );
    }
    if rest.starts_with(&['/', '*']) {
        let (mut depth, mut j) = (1, i + 2);
        while j < c.len() && depth > 0 {
            if c[j..].starts_with(&['/', '*']) || c[j..].starts_with(&['*', '/']) {
                depth += if c[j] == '/' { 1 } else { -1 };
                j += 2;
            } else {
                j += 1;
            }
        }
        return Some(j);
    }
    // A prefix letter inside an identifier (`tab"`, `for'`) starts nothing.
    if i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_') {
        return None;
    }
    let q = if c[i] == 'b' { i + 1 } else { i };
    if c.get(q) == Some(&'r') {
        let hashes = c[q + 1..].iter().take_while(|&&ch| ch == '#').count();
        let open = q + 1 + hashes;
        if c.get(open) != Some(&'"') {
            return None;
        }
        let closes = |j: usize| {
            c[j] == '"' && c[j + 1..].iter().take_while(|&&h| h == '#').count() >= hashes
        };
        return Some(
            (open + 1..c.len())
                .find(|&j| closes(j))
                .map_or(c.len(), |j| j + 1 + hashes),
        );
    }
    match c.get(q)? {
        '"' => {
            let mut j = q + 1;
            while j < c.len() && c[j] != '"' {
                j += if c[j] == '\\' { 2 } else { 1 };
            }
            Some((j + 1).min(c.len()))
        }
        // An escape: the escaped character, then up to `u{10FFFF}`'s digits.
        '\'' if c.get(q + 1) == Some(&'\\') => {
            let close = c.get(q + 3..)?.iter().take(9).position(|&ch| ch == '\'')?;
            Some(q + 3 + close + 1)
        }
        '\'' if c.get(q + 2) == Some(&'\'') => Some(q + 3),
        _ => None,
    }
}

/// A token of blanked code with its line.
#[derive(Clone, Debug, PartialEq)]
struct Tok {
    s: String,
    line: usize,
}

fn tokenize(code: &str) -> Vec<Tok> {
    let c: Vec<char> = code.chars().collect();
    let (mut out, mut i, mut line) = (Vec::new(), 0, 1);
    while i < c.len() {
        let word = c[i..]
            .iter()
            .take_while(|&&d| d.is_alphanumeric() || d == '_')
            .count();
        let len = match c[i] {
            '\n' => {
                line += 1;
                1
            }
            ch if ch.is_whitespace() => 1,
            _ if word > 0 => word,
            _ if c[i..].starts_with(&[':', ':']) => 2,
            _ => 1,
        };
        if !c[i].is_whitespace() {
            let s = c[i..i + len].iter().collect();
            out.push(Tok { s, line });
        }
        i += len;
    }
    out
}

/// The index after the item that starts at `i` (through its `;`, or its matching `}` when a
/// `{` comes first), brackets and parentheses counted so `[u8; 4]` does not end it; a `use`
/// item ends at its `;` (its groups are braces too).
fn item_end(t: &[Tok], mut i: usize) -> usize {
    let head = t[i..].iter().take_while(|x| x.s != "{" && x.s != ";");
    if head.clone().any(|x| x.s == "use") {
        return use_end(t, i);
    }
    let mut depth = 0i32;
    while i < t.len() {
        match t[i].s.as_str() {
            "(" | "[" => depth += 1,
            ")" | "]" => depth -= 1,
            ";" if depth == 0 => return i + 1,
            "{" if depth == 0 => return close_of(t, i),
            _ => {}
        }
        i += 1;
    }
    i
}

/// The index after the bracket that closes the one at `i`.
fn close_of(t: &[Tok], i: usize) -> usize {
    let close = match t[i].s.as_str() {
        "{" => "}",
        "[" => "]",
        _ => ")",
    };
    let mut depth = 0;
    for (j, x) in t.iter().enumerate().skip(i) {
        if x.s == t[i].s {
            depth += 1;
        } else if x.s == close {
            depth -= 1;
            if depth == 0 {
                return j + 1;
            }
        }
    }
    t.len()
}

/// The index after the `;` that ends the `use` item at `i`.
fn use_end(t: &[Tok], i: usize) -> usize {
    t[i..]
        .iter()
        .position(|x| x.s == ";")
        .map_or(t.len(), |p| i + p + 1)
}

/// The index after an attribute `#[...]` or `#![...]` starting at `i`, if one does.
fn attribute_end(t: &[Tok], i: usize) -> Option<usize> {
    if t[i].s != "#" {
        return None;
    }
    let j = if t.get(i + 1).is_some_and(|x| x.s == "!") {
        i + 2
    } else {
        i + 1
    };
    (t.get(j)?.s == "[").then(|| close_of(t, j))
}

fn is_cfg_test(t: &[Tok], i: usize, end: usize) -> bool {
    let s: Vec<&str> = t[i..end].iter().map(|x| x.s.as_str()).collect();
    s == ["#", "[", "cfg", "(", "test", ")", "]"]
}

/// The tokens outside `#[cfg(test)]` items, and the names of the `#[cfg(test)] mod NAME;`
/// files they declare (whose files are test code too).
fn drop_test_items(t: Vec<Tok>) -> (Vec<Tok>, Vec<String>) {
    let (mut out, mut test_mods, mut i) = (Vec::new(), Vec::new(), 0);
    while i < t.len() {
        let Some(end) = attribute_end(&t, i) else {
            out.push(t[i].clone());
            i += 1;
            continue;
        };
        if !is_cfg_test(&t, i, end) {
            out.extend_from_slice(&t[i..end]);
            i = end;
            continue;
        }
        // Further attributes, then the item they all apply to.
        let mut j = end;
        while let Some(e) = attribute_end(&t, j) {
            j = e;
        }
        let after = item_end(&t, j);
        let words: Vec<&str> = t[j..after].iter().map(|x| x.s.as_str()).collect();
        if let Some(m) = words.iter().position(|&w| w == "mod") {
            if words.last() == Some(&";") {
                test_mods.push(words[m + 1].to_string());
            }
        }
        i = after;
    }
    (out, test_mods)
}

/// Every path a file writes, as (line, segments from its first `crate`/`super`/`self` or
/// child-module name, the module it is written in).
fn paths_in(
    t: &[Tok],
    file_mod: &ModPath,
    children: &BTreeSet<String>,
) -> Vec<(usize, ModPath, ModPath)> {
    let mut out = Vec::new();
    // Inline `mod NAME { ... }` blocks: (name, brace depth inside it).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let here = |inline: &[(String, usize)]| -> ModPath {
        let mut m = file_mod.clone();
        m.extend(inline.iter().map(|(n, _)| n.clone()));
        m
    };
    let starts_path = |s: &str, inline: &[(String, usize)]| {
        matches!(s, "crate" | "super" | "self") || (inline.is_empty() && children.contains(s))
    };
    let mut i = 0;
    while i < t.len() {
        let s = t[i].s.as_str();
        if s == "mod" && t.get(i + 2).is_some_and(|x| x.s == "{") {
            inline.push((t[i + 1].s.clone(), depth + 1));
            depth += 1;
            i += 3;
            continue;
        }
        match s {
            "{" => depth += 1,
            "}" => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            _ => {}
        }
        if s == "use" {
            let end = use_end(t, i);
            let mut leaves = Vec::new();
            use_tree(&t[i + 1..end - 1], Vec::new(), &mut leaves);
            for (line, segs) in leaves {
                if segs.first().is_some_and(|f| starts_path(f, &inline)) {
                    out.push((line, segs, here(&inline)));
                }
            }
            i = end;
            continue;
        }
        let after_sep = i > 0 && t[i - 1].s == "::";
        if !after_sep && starts_path(s, &inline) && t.get(i + 1).is_some_and(|x| x.s == "::") {
            let mut segs = vec![s.to_string()];
            let mut j = i + 1;
            while t.get(j).is_some_and(|x| x.s == "::")
                && t.get(j + 1).is_some_and(|x| is_ident(&x.s))
            {
                segs.push(t[j + 1].s.clone());
                j += 2;
            }
            out.push((t[i].line, segs, here(&inline)));
            i = j;
            continue;
        }
        i += 1;
    }
    out
}

fn is_ident(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// Expands a use tree (the tokens between `use` and `;`) into its leaf paths.
fn use_tree(t: &[Tok], mut segs: Vec<String>, out: &mut Vec<(usize, Vec<String>)>) {
    // A leading `::` (`use ::std::x`) names an external crate: no edge.
    if t.first().is_none_or(|x| x.s == "::") {
        return;
    }
    for (i, x) in t.iter().enumerate() {
        match x.s.as_str() {
            // A group: each part at its top-level commas, with the path so far.
            "{" => {
                let (end, mut start, mut j) = (close_of(t, i) - 1, i + 1, i + 1);
                while j <= end {
                    if j == end || t[j].s == "," {
                        if start < j {
                            use_tree(&t[start..j], segs.clone(), out);
                        }
                        (start, j) = (j + 1, j + 1);
                    } else if t[j].s == "{" {
                        j = close_of(t, j);
                    } else {
                        j += 1;
                    }
                }
                return;
            }
            "as" | "*" => break,
            // `{self, X}` names the path so far.
            "self" if !segs.is_empty() => {}
            s if is_ident(s) => segs.push(s.to_string()),
            _ => {}
        }
    }
    out.push((t[0].line, segs));
}

/// The module file a path written in module `at` names: the longest prefix of its absolute
/// form that is a file (None outside the crate).
fn resolve(segs: &[String], at: &ModPath, files: &BTreeMap<ModPath, String>) -> Option<String> {
    let mut abs: ModPath = match segs[0].as_str() {
        "crate" => Vec::new(),
        "self" => at.clone(),
        "super" => {
            let mut m = at.clone();
            m.pop();
            m
        }
        child => [&at[..], &[child.to_string()]].concat(),
    };
    let mut rest = &segs[1..];
    while segs[0] == "super" && rest.first().is_some_and(|s| s == "super") {
        abs.pop();
        rest = &rest[1..];
    }
    abs.extend(rest.iter().cloned());
    (0..=abs.len())
        .rev()
        .find_map(|k| files.get(&abs[..k]).cloned())
}

/// Every edge between module files of `tree` ((path under src/, text) pairs), edges to the
/// file's own ancestor modules set aside (a file may use what its parents declare), and the
/// files read (those of `#[cfg(test)] mod NAME;` are not).
fn edges(tree: &[(String, String)]) -> (Vec<Edge>, Vec<String>) {
    let files: BTreeMap<ModPath, String> = tree
        .iter()
        .map(|(p, _)| (module_of(p), p.clone()))
        .collect();
    let mut parsed = BTreeMap::new();
    let mut test_files: BTreeSet<ModPath> = BTreeSet::new();
    for (path, text) in tree {
        let (toks, test_mods) = drop_test_items(tokenize(&blank_non_code(text)));
        let m = module_of(path);
        for name in test_mods {
            test_files.insert([&m[..], &[name]].concat());
        }
        parsed.insert(path.clone(), toks);
    }
    let (mut out, mut read) = (Vec::new(), Vec::new());
    for (path, toks) in &parsed {
        let m = module_of(path);
        if (1..=m.len()).any(|k| test_files.contains(&m[..k])) {
            continue;
        }
        read.push(path.clone());
        let children: BTreeSet<String> = files
            .keys()
            .filter(|k| k.len() == m.len() + 1 && k.starts_with(&m))
            .map(|k| k[m.len()].clone())
            .collect();
        for (line, segs, at) in paths_in(toks, &m, &children) {
            let Some(to) = resolve(&segs, &at, &files) else {
                continue;
            };
            if m.starts_with(&module_of(&to)) {
                continue;
            }
            out.push(Edge {
                from: path.clone(),
                line,
                to,
                text: segs.join("::"),
            });
        }
    }
    (out, read)
}

/// What is wrong with `tree`: each edge the layer table does not allow, and each cycle among
/// files, as lines naming file:line.
fn check(tree: &[(String, String)]) -> Vec<String> {
    let (all, read) = edges(tree);
    let mut bad = Vec::new();
    let top = |p: &str| module_of(p).first().cloned();
    let allowed: BTreeMap<&str, &[&str]> = LAYERS
        .iter()
        .flat_map(|&(mods, may)| mods.iter().map(move |&m| (m, may)))
        .collect();
    let mut unplaced = BTreeSet::new();
    for path in &read {
        if let Some(a) = top(path).filter(|a| !allowed.contains_key(a.as_str())) {
            if unplaced.insert(a.clone()) {
                bad.push(format!("src/{path}: module {a} is not in the layer table"));
            }
        }
    }
    for e in &all {
        let (Some(a), Some(b)) = (top(&e.from), top(&e.to)) else {
            continue;
        };
        let Some(may) = allowed.get(a.as_str()) else {
            continue;
        };
        if a != b && !(FOUNDATIONS.contains(&b.as_str()) || may.contains(&b.as_str())) {
            bad.push(format!(
                "src/{}:{}: {a} -> {b} is not allowed ({})",
                e.from, e.line, e.text
            ));
        }
    }
    for cycle in cycles(&all) {
        // One line per (file, line, target): a `use` group names several items.
        let mut seen = BTreeSet::new();
        let inside: Vec<String> = all
            .iter()
            .filter(|e| cycle.contains(&e.from) && cycle.contains(&e.to))
            .filter(|e| seen.insert((&e.from, e.line, &e.to)))
            .map(|e| format!("src/{}:{}: -> src/{} ({})", e.from, e.line, e.to, e.text))
            .collect();
        bad.push(format!(
            "import cycle among {}:\n  {}",
            cycle.iter().cloned().collect::<Vec<_>>().join(", "),
            inside.join("\n  ")
        ));
    }
    bad
}

/// The sets of two or more files that reach one another along `edges` (each file's reach
/// by search: the library has a few hundred files).
fn cycles(edges: &[Edge]) -> Vec<BTreeSet<String>> {
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for e in edges {
        graph.entry(&e.from).or_default().insert(&e.to);
    }
    let reach = |from: &str| {
        let (mut seen, mut todo) = (BTreeSet::new(), vec![from]);
        while let Some(v) = todo.pop() {
            for &w in graph.get(v).into_iter().flatten() {
                if seen.insert(w) {
                    todo.push(w);
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&str, BTreeSet<&str>> = graph.keys().map(|&v| (v, reach(v))).collect();
    let mut out: Vec<BTreeSet<String>> = Vec::new();
    for (&v, r) in &reaches {
        let comp: BTreeSet<String> = r
            .iter()
            .filter(|&&w| reaches.get(w).is_some_and(|rw| rw.contains(v)))
            .map(|w| w.to_string())
            .collect();
        if comp.len() > 1 && !out.contains(&comp) {
            out.push(comp);
        }
    }
    out
}

/// The library's files under `dir` as (path under src/, text), the binary's left out.
fn library_sources(dir: &Path) -> Vec<(String, String)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).expect("src/ is readable") {
            let path = entry.expect("a directory entry").path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            if rel == "main.rs" || rel == "cli" {
                continue;
            }
            if path.is_dir() {
                walk(root, &path, out);
            } else if rel.ends_with(".rs") {
                out.push((rel, std::fs::read_to_string(&path).expect("a source file")));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn the_library_keeps_its_layers_and_has_no_import_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let tree = library_sources(&src);
    assert!(tree.len() > 100, "read only {} files", tree.len());
    // Paths in `use` groups and inline ones are read (two the tree holds).
    let (found, _) = edges(&tree);
    let has = |from: &str, text: &str| found.iter().any(|e| e.from == from && e.text == text);
    assert!(
        has("config.rs", "crate::model::validate_top")
            && has("model/arch_flags.rs", "super::exact_training::shape_note"),
        "the checker missed known paths"
    );
    let bad = check(&tree);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

fn tree(files: &[(&str, &str)]) -> Vec<(String, String)> {
    files
        .iter()
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect()
}

#[test]
fn an_upward_import_and_a_file_cycle_are_reported() {
    let t = tree(&[
        (
            "lib.rs",
            "pub mod estimators;\npub mod train;\npub mod backend;\n",
        ),
        ("train/mod.rs", "pub struct Run;\npub struct Observer;\n"),
        (
            "estimators/mod.rs",
            "mod a;\nmod b;\nuse crate::{error::E, train::{Run, other::Observer}};\n\
             fn f() {\n    let _ = crate::train::Run;\n}\n",
        ),
        ("estimators/a.rs", "use super::b::B;\npub struct A;\n"),
        ("estimators/b.rs", "pub struct B(super::a::A);\n"),
        ("error.rs", "pub struct E;\n"),
        ("backend/mod.rs", "use self::gpu::G;\nmod gpu;\n"),
        (
            "backend/gpu.rs",
            "use super::super::estimators::A;\npub struct G;\n",
        ),
    ]);
    let bad = check(&t);
    let text = bad.join("\n");
    assert!(
        text.contains(
            "src/estimators/mod.rs:3: estimators -> train is not allowed (crate::train::Run)"
        ),
        "{text}"
    );
    assert!(
        text.contains("src/estimators/mod.rs:3: estimators -> train is not allowed (crate::train::other::Observer)"),
        "{text}"
    );
    assert!(
        text.contains(
            "src/estimators/mod.rs:5: estimators -> train is not allowed (crate::train::Run)"
        ),
        "{text}"
    );
    assert!(
        text.contains("import cycle among estimators/a.rs, estimators/b.rs")
            && text.contains("src/estimators/a.rs:1: -> src/estimators/b.rs (super::b::B)")
            && text.contains("src/estimators/b.rs:1: -> src/estimators/a.rs (super::a::A)"),
        "{text}"
    );
    // Downward, child and ancestor edges are fine: nothing else is reported.
    assert_eq!(bad.len(), 4, "{text}");
}

#[test]
fn test_code_comments_and_strings_are_not_read() {
    let t = tree(&[
        ("lib.rs", "pub mod estimators;\npub mod train;\n"),
        ("train/mod.rs", "pub struct Run;\n"),
        (
            "estimators/mod.rs",
            r####"//! Uses [`crate::train::Run`] in a doc comment.
/* crate::train::Run /* nested */ crate::train::Run */
const S: &str = "crate::train::Run \" crate::train::Run";
const R: &str = r#"crate::train::Run " crate::train::Run"#;
const C: char = '"';
fn f<'a>(x: &'a str) -> &'a str { x } // crate::train::Run
#[cfg(test)]
mod tests {
    use crate::train::Run;
    fn g() { let _ = crate::train::{Run}; }
}
#[cfg(test)]
mod helpers;
"####,
        ),
        ("estimators/helpers.rs", "use crate::train::Run;\n"),
    ]);
    assert_eq!(check(&t), Vec::<String>::new());
    assert!(edges(&t).0.is_empty(), "{:?}", edges(&t).0);
    // The same path outside those is read.
    let mut upward = t.clone();
    upward[2]
        .1
        .push_str("fn h() -> crate::train::Run { todo!() }\n");
    let bad = check(&upward);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(bad[0].contains("estimators -> train"), "{bad:?}");
}
