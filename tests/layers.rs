//! The application's modules stand in floors, and a floor only uses the floors below it (see
//! PIPELINE.md): this reads every `src/**/*.rs`, collects each `crate::<module>` path (in
//! `use crate::…` lines, grouped `use crate::{a, b::c}` and inline `crate::a::b` paths; not
//! in comments or string literals), maps each file to its top-level module (`src/foo.rs` and
//! `src/foo/**.rs` are `foo`), and checks that the modules form no cycle and that no module
//! uses one on a higher floor. A failure names the edge and where it is written.
//!
//! The lowest floors are crates of their own under `crates/` (see [`CRATES`]): Cargo lets a
//! crate use only what it depends on, so their layering is checked in their manifests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The floors, lowest first. A module may use modules of its own floor (the cycle check
/// keeps those apart) and of every floor below, never one above. Every top-level module of
/// `src/` must be listed, so that a new one is placed on purpose.
const FLOORS: &[(&str, &[&str])] = &[
    ("system", &["accounts", "certbot"]),
    ("config", &["config"]),
    (
        "records",
        &["state", "hold", "keys", "material", "alert", "fleet"],
    ),
    (
        "steps",
        &["schedule", "acme", "deploy", "issuer", "inventory"],
    ),
    ("pass", &["pass", "metrics", "probe"]),
    ("top", &["daemon", "cli"]),
];

/// The workspace crates below the application, lowest first: directory, package, the
/// workspace crates it may depend on, and the modules `src/lib.rs` re-exports it as (which
/// every floor of `src/` may use). Every crate under `crates/` must be listed.
const CRATES: &[(&str, &str, &[&str], &[&str])] = &[
    (
        "crates/base",
        "certkeeper-base",
        &[],
        &["text", "fsutil", "perms"],
    ),
    (
        "crates/x509",
        "certkeeper-x509",
        &["certkeeper-base"],
        &["x509"],
    ),
    (
        "crates/store",
        "certkeeper-store",
        &["certkeeper-base", "certkeeper-x509"],
        &["store"],
    ),
    (
        "crates/fleet",
        "certkeeper-fleet",
        &["certkeeper-base"],
        &[],
    ),
];

/// Upward edges known and not fixed yet, as `(from, to, why)`. Each one listed here is
/// allowed; any other upward edge fails, and so does an entry that no longer occurs.
const KNOWN_UPWARD: &[(&str, &str, &str)] = &[];

/// `from -> to`, with where each use is written (`src/…:line`).
type Graph = BTreeMap<String, BTreeMap<String, Vec<String>>>;

#[test]
fn every_module_stands_on_one_floor() {
    let src = src_dir();
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if let Some(module) = module_of(&src, &path) {
            found.insert(module);
        }
    }
    let mut listed = BTreeMap::new();
    for (floor, modules) in FLOORS {
        for m in *modules {
            assert!(
                listed.insert(m.to_string(), *floor).is_none(),
                "module {m} is listed on two floors"
            );
        }
    }
    let unlisted: Vec<_> = found.iter().filter(|m| !listed.contains_key(*m)).collect();
    assert!(
        unlisted.is_empty(),
        "modules on no floor (add them to FLOORS in tests/layers.rs): {unlisted:?}"
    );
    let gone: Vec<_> = listed.keys().filter(|m| !found.contains(*m)).collect();
    assert!(
        gone.is_empty(),
        "FLOORS lists modules that do not exist: {gone:?}"
    );
}

#[test]
fn modules_form_no_cycle() {
    let graph = graph();
    if let Some(cycle) = find_cycle(&graph) {
        let mut steps = Vec::new();
        for pair in cycle.windows(2) {
            let at = &graph[&pair[0]][&pair[1]];
            steps.push(format!("{} -> {} ({})", pair[0], pair[1], at.join(", ")));
        }
        panic!(
            "the modules form a cycle: {}\n  {}",
            cycle.join(" -> "),
            steps.join("\n  ")
        );
    }
}

#[test]
fn no_module_uses_a_higher_floor() {
    let (upward, unknown) = upward_edges(&graph(), KNOWN_UPWARD);
    assert!(
        upward.is_empty(),
        "modules use a higher floor:\n  {}",
        upward.join("\n  ")
    );
    assert!(
        unknown.is_empty(),
        "modules use modules on no floor and in no crate of CRATES:\n  {}",
        unknown.join("\n  ")
    );
}

/// The upward edges of `graph` (the `known` ones left out), and its edges to modules that
/// stand on no floor and are no crate's. Panics on an entry of `known` that does not occur.
fn upward_edges(graph: &Graph, known: &[(&str, &str, &str)]) -> (Vec<String>, Vec<String>) {
    let floor: BTreeMap<&str, (usize, &str)> = FLOORS
        .iter()
        .enumerate()
        .flat_map(|(i, (name, modules))| modules.iter().map(move |m| (*m, (i, *name))))
        .collect();
    let from_crates: BTreeSet<&str> = CRATES
        .iter()
        .flat_map(|(_, _, _, modules)| modules.iter().copied())
        .collect();
    let mut upward = Vec::new();
    let mut unknown = Vec::new();
    let mut known_seen = BTreeSet::new();
    for (from, tos) in graph {
        for (to, at) in tos {
            if from_crates.contains(to.as_str()) {
                // A crate below every floor: Cargo keeps it from using anything of src/.
                continue;
            }
            let Some(&(t, t_name)) = floor.get(to.as_str()) else {
                unknown.push(format!("{from} -> {to} at {}", at.join(", ")));
                continue;
            };
            let Some(&(f, f_name)) = floor.get(from.as_str()) else {
                // every_module_stands_on_one_floor reports modules on no floor.
                continue;
            };
            if t <= f {
                continue;
            }
            if known.iter().any(|(a, b, _)| a == from && b == to) {
                known_seen.insert((from.clone(), to.clone()));
                continue;
            }
            upward.push(format!(
                "{from} (floor {f_name}) -> {to} (floor {t_name}) at {}",
                at.join(", ")
            ));
        }
    }
    for (a, b, _) in known {
        assert!(
            known_seen.contains(&(a.to_string(), b.to_string())),
            "KNOWN_UPWARD lists {a} -> {b}, which no longer occurs: remove it"
        );
    }
    (upward, unknown)
}

#[test]
fn an_upward_edge_is_caught_and_a_crate_is_below_every_floor() {
    let edge = |from: &str, to: &str| {
        let mut graph = Graph::new();
        graph
            .entry(from.to_owned())
            .or_default()
            .insert(to.to_owned(), vec!["src/x.rs:1".to_owned()]);
        upward_edges(&graph, &[])
    };
    let (upward, unknown) = edge("config", "cli");
    assert_eq!(
        upward,
        ["config (floor config) -> cli (floor top) at src/x.rs:1"]
    );
    assert!(unknown.is_empty());
    assert_eq!(edge("cli", "config"), (vec![], vec![]));
    assert_eq!(edge("config", "store"), (vec![], vec![]));
    assert_eq!(edge("config", "text"), (vec![], vec![]));
    let (upward, unknown) = edge("config", "nowhere");
    assert!(upward.is_empty());
    assert_eq!(unknown, ["config -> nowhere at src/x.rs:1"]);
}

#[test]
fn lower_crates_depend_only_on_lower_crates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir(root.join("crates")).unwrap() {
        let path = entry.unwrap().path();
        if path.join("Cargo.toml").is_file() {
            let name = path.file_name().unwrap().to_str().unwrap();
            found.insert(format!("crates/{name}"));
        }
    }
    let listed: BTreeSet<String> = CRATES.iter().map(|(dir, ..)| dir.to_string()).collect();
    assert_eq!(
        found, listed,
        "every crate under crates/ is listed in CRATES"
    );
    for (i, (dir, package, allowed, _)) in CRATES.iter().enumerate() {
        let manifest = std::fs::read_to_string(root.join(dir).join("Cargo.toml")).unwrap();
        let below: Vec<&str> = CRATES[..i].iter().map(|(_, p, ..)| *p).collect();
        // A crate may name itself as a dev-dependency to turn on its own test features.
        for dep in workspace_dependencies(&manifest)
            .into_iter()
            .filter(|d| d != package)
        {
            assert!(
                allowed.contains(&dep.as_str()),
                "{package} ({dir}/Cargo.toml) depends on {dep}; it may depend on {allowed:?} only"
            );
            assert!(
                below.contains(&dep.as_str()),
                "{package} depends on {dep}, which is not below it in CRATES"
            );
        }
    }
}

#[test]
fn dependencies_are_read_in_every_form() {
    let manifest = r#"
[package]
name = "certkeeper-x"

[dependencies]
certkeeper-base.workspace = true
certkeeper-x509 = { path = "../x509" }
up = { package = "certkeeper", path = "../.." }
serde.workspace = true

[dev-dependencies.certkeeper-store]
path = "../store"

[dev-dependencies.renamed]
package = "certkeeper-dns"

[target.'cfg(unix)'.build-dependencies]
"certkeeper-dns" = "1"
"#;
    assert_eq!(
        workspace_dependencies(manifest),
        [
            "certkeeper-base",
            "certkeeper-x509",
            "certkeeper",
            "certkeeper-store",
            "certkeeper-dns",
            "certkeeper-dns"
        ]
    );
}

/// The packages named `certkeeper` or `certkeeper-*` that a Cargo.toml depends on, in any
/// section of dependencies (normal, dev, build, per target), under their package names.
fn workspace_dependencies(manifest: &str) -> Vec<String> {
    #[derive(PartialEq)]
    enum Section {
        Other,
        /// `[dependencies]`, `[dev-dependencies]`, `[target.….build-dependencies]`, …
        Dependencies,
        /// `[dependencies.name]`: one dependency, its package (if renamed) on a line of its own.
        Table,
    }
    let quoted = |value: &str| -> Option<String> {
        let rest = value.trim_start().strip_prefix('=')?.trim_start();
        let (name, _) = rest.strip_prefix('"')?.split_once('"')?;
        Some(name.to_owned())
    };
    let mut out = Vec::new();
    let mut section = Section::Other;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            let header = header.trim_end_matches(']').trim();
            section = match header.rsplit_once('.') {
                Some((table, name)) if table.ends_with("dependencies") => {
                    out.push(name.trim_matches('"').to_owned());
                    Section::Table
                }
                _ if header.ends_with("dependencies") => Section::Dependencies,
                _ => Section::Other,
            };
            continue;
        }
        match section {
            Section::Other => {}
            Section::Table => {
                if let Some(package) = line.strip_prefix("package").and_then(quoted) {
                    out.pop();
                    out.push(package);
                }
            }
            Section::Dependencies => {
                let key: String = line
                    .trim_start_matches('"')
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                    .collect();
                let package = line
                    .split_once("package")
                    .and_then(|(_, rest)| quoted(rest))
                    .unwrap_or(key);
                out.push(package);
            }
        }
    }
    out.retain(|p| p == "certkeeper" || p.starts_with("certkeeper-"));
    out
}

#[test]
fn references_are_found_in_every_form_and_only_in_code() {
    let text = r##"
use crate::{alpha, beta::{One, two::Three}, self};
use crate::gamma::Delta;
// crate::comment_line
/* crate::comment_block /* nested crate::inner */ */
let s = "crate::in_string \" crate::still_string";
let r = r#"crate::in_raw "# ;
let c = '"'; let q = '\''; let l: &'static str = ""; let b = br"\";
fn f() { crate::delta::call(); $crate::epsilon::m!(); notcrate::zeta::x(); }
use crate::{
    eta,
    theta::Iota,
};
"##;
    let found: Vec<(String, usize)> = references(text);
    let names: Vec<&str> = found.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(
        names,
        ["alpha", "beta", "gamma", "delta", "epsilon", "eta", "theta"]
    );
    assert_eq!(found[0].1, 2);
    assert_eq!(found[5].1, 11);
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level module a path under `src/` belongs to; `None` for the crate roots and
/// anything that is not Rust.
fn module_of(src: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = if rel.components().count() == 1 && !path.is_dir() {
        first.strip_suffix(".rs")?
    } else {
        first
    };
    (!matches!(name, "lib" | "main")).then(|| name.to_owned())
}

/// Every use of one top-level module by another, over all of `src/`.
fn graph() -> Graph {
    let src = src_dir();
    let mut files = Vec::new();
    collect_rs(&src, &mut files);
    let mut graph = Graph::new();
    for file in files {
        let Some(from) = module_of(&src, &file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        let shown = file.strip_prefix(src.parent().unwrap()).unwrap().display();
        for (to, line) in references(&text) {
            if to != from {
                graph
                    .entry(from.clone())
                    .or_default()
                    .entry(to)
                    .or_default()
                    .push(format!("{shown}:{line}"));
            }
        }
    }
    graph
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules named after `crate::` in the code of `text` (comments and string
/// literals left out), each with its line.
fn references(text: &str) -> Vec<(String, usize)> {
    let code = code_only(text);
    let bytes = code.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let read_ident = |mut i: usize| {
        let start = i;
        while i < bytes.len() && ident(bytes[i]) {
            i += 1;
        }
        (&code[start..i], i)
    };
    let skip_space = |mut i: usize| {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let line_of = |i: usize| code[..i].matches('\n').count() + 1;
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(pos) = code[from..].find("crate::") {
        let start = from + pos;
        from = start + "crate::".len();
        if start > 0 && ident(bytes[start - 1]) {
            continue;
        }
        let i = skip_space(from);
        if bytes.get(i) != Some(&b'{') {
            let (name, _) = read_ident(i);
            if !name.is_empty() {
                out.push((name.to_owned(), line_of(i)));
            }
            continue;
        }
        // A group: the names that open each item at depth 1.
        let (mut i, mut depth, mut item_start) = (i + 1, 1, true);
        while i < bytes.len() && depth > 0 {
            match bytes[i] {
                b'{' => {
                    depth += 1;
                    i += 1;
                }
                b'}' => {
                    depth -= 1;
                    i += 1;
                }
                b',' => {
                    item_start = depth == 1;
                    i += 1;
                }
                b if ident(b) => {
                    let (name, end) = read_ident(i);
                    if item_start && depth == 1 && name != "self" {
                        out.push((name.to_owned(), line_of(i)));
                    }
                    item_start = false;
                    i = end;
                }
                _ => i += 1,
            }
        }
        from = i;
    }
    out
}

/// `text` with comments and the contents of string and character literals blanked out
/// (newlines kept, so that line numbers stay).
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && matches!(next, Some('"' | '#')) && !ident_before(&chars, i) {
            // A raw string: r"…", r#"…"#, …
            let mut j = i + 1;
            while chars.get(j) == Some(&'#') {
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            let hashes = j - i - 1;
            out.push('"');
            i = j + 1;
            while i < chars.len() {
                if chars[i] == '"' && (1..=hashes).all(|k| chars.get(i + k) == Some(&'#')) {
                    i += 1 + hashes;
                    break;
                }
                out.push(blank(chars[i]));
                i += 1;
            }
            out.push('"');
        } else if c == '"' {
            out.push('"');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if let Some(&c) = chars.get(i) {
                    out.push(blank(c));
                }
                i += 1;
            }
            out.push('"');
            i += 1;
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{..}'), or else a lifetime.
            let close = if next == Some('\\') {
                (i + 3..chars.len().min(i + 12)).find(|&k| chars[k] == '\'')
            } else {
                (chars.get(i + 2) == Some(&'\'')).then_some(i + 2)
            };
            match close {
                Some(end) => {
                    out.push_str("' '");
                    i = end + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Whether the character before `i` continues an identifier (so an `r` there is not the
/// start of a raw string), a `b` of `br"…"` excepted.
fn ident_before(chars: &[char], i: usize) -> bool {
    let ident = |k: usize| chars[k].is_alphanumeric() || chars[k] == '_';
    match i.checked_sub(1) {
        None => false,
        Some(k) if chars[k] == 'b' => k > 0 && ident(k - 1),
        Some(k) => ident(k),
    }
}

/// A cycle as the modules along it, the first repeated at the end; `None` when there is none.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &Graph,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = path.iter().position(|n| n == node).unwrap();
                let mut cycle = path[start..].to_vec();
                cycle.push(node.to_owned());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.to_owned(), Mark::Open);
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flat_map(|tos| tos.keys()) {
            if let Some(cycle) = visit(next, graph, marks, path) {
                return Some(cycle);
            }
        }
        path.pop();
        marks.insert(node.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, graph, &mut marks, &mut Vec::new()) {
            return Some(cycle);
        }
    }
    None
}
