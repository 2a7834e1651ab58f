//! The architecture, checked from the source text: every file of `src/`
//! imports only from its own layer or the layers below it, the two backends
//! never import each other, and no two files import each other, directly or
//! round a circle.
//!
//! The check reads `src/` as text (std only, no parser crate): it blanks out
//! comments and string literals, then follows every `use` tree and every
//! inline `crate::` / `super::` / `self::` / child-module path to the file
//! that holds the module it names. An item re-exported by a `mod.rs` counts
//! as an edge to that `mod.rs`, which is why the `mod.rs` files stay thin.
//!
//! `S3_FANOUT_LAYERS=print cargo test --test layers -- --nocapture` prints
//! every cycle and every edge that breaks a rule; `S3_FANOUT_LAYERS=edges`
//! also prints the whole graph, file by file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first. A file may import its own layer and any layer
/// listed before it. Top-level modules of one entry are peers.
const LAYERS: &[&[&str]] = &[
    &["base"],
    &["model"],
    &["report"],
    &["backend"],
    &["engine"],
    &["archive", "serverless"],
    &["plan", "local_stack"],
    &["cli"],
    &["lib"],
];

/// Imports forbidden inside a layer, as (importer, imported) folders.
/// - The bucket backend never reaches into the directory backend. The
///   directory backend does use the bucket's request code, because an
///   upload is a PUT and a restore a GET.
/// - The tools on top are peers: the archive format and the serverless
///   runtime know nothing of each other, nor do `plan` and the local stack.
const APART: &[(&str, &str)] = &[
    ("backend/s3", "backend/local"),
    ("archive", "serverless"),
    ("serverless", "archive"),
    ("plan", "local_stack"),
    ("local_stack", "plan"),
];

#[test]
fn imports_point_down_the_layers_and_no_files_import_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = Graph::read(&src);
    let mut problems = Vec::new();

    for (from, tos) in &graph.edges {
        for to in tos {
            if let Some(why) = layer_violation(from, to) {
                problems.push(format!("{from} imports {to}: {why}"));
            }
        }
    }
    let cycles = graph.cycles();
    for cycle in &cycles {
        problems.push(format!(
            "import cycle between {} files: {}",
            cycle.len(),
            cycle.join(", ")
        ));
    }
    let mode = std::env::var("S3_FANOUT_LAYERS").unwrap_or_default();
    if mode == "edges" {
        for (from, tos) in &graph.edges {
            println!(
                "{from} -> {}",
                tos.iter().cloned().collect::<Vec<_>>().join(" ")
            );
        }
    }
    if mode == "print" || mode == "edges" {
        println!("{} files, {} edges", graph.files.len(), graph.edge_count());
        for p in &problems {
            println!("{p}");
        }
    }
    assert!(
        graph.files.len() > 50 && graph.edge_count() > 100,
        "the reader found too little to check ({} files, {} edges): is it reading src/?",
        graph.files.len(),
        graph.edge_count()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The checker itself must see what it is meant to catch.
#[test]
fn the_reader_follows_every_form_of_path() {
    let files: BTreeSet<String> = [
        "lib",
        "base/mod",
        "base/error",
        "model/mod",
        "model/entry",
        "engine/mod",
        "engine/diff",
        "engine/worker",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let text = r#"
        // use crate::base::nothing;  (a comment: not an edge)
        use crate::{base::error::Error, model::{entry::ObjectEntry as E}};
        use super::diff;
        const S: &str = "crate::engine::worker";
        fn f() { crate::engine::Pipeline::run(); let c = '{'; }
        #[cfg(test)]
        mod tests { use super::*; }
    "#;
    let edges = file_edges("engine/worker", text, &files);
    assert_eq!(
        edges,
        ["base/error", "engine/diff", "engine/mod", "model/entry"]
            .into_iter()
            .map(String::from)
            .collect::<BTreeSet<_>>()
    );
    assert_eq!(
        layer_violation("model/entry", "engine/diff").as_deref(),
        Some("layer model may not import layer engine")
    );
    assert!(layer_violation("backend/s3/copy", "backend/local/walk").is_some());
    assert!(layer_violation("engine/diff", "backend/mod").is_none());
    let mut g = Graph {
        files,
        edges: BTreeMap::new(),
    };
    g.edges
        .insert("engine/diff".into(), ["engine/worker".into()].into());
    g.edges
        .insert("engine/worker".into(), ["engine/diff".into()].into());
    assert_eq!(
        g.cycles(),
        vec![vec!["engine/diff".to_string(), "engine/worker".into()]]
    );
}

/// Why `from` may not import `to`, if it may not.
fn layer_violation(from: &str, to: &str) -> Option<String> {
    let top = |f: &str| f.split('/').next().unwrap_or(f).to_string();
    let rank = |f: &str| LAYERS.iter().position(|l| l.contains(&top(f).as_str()));
    let (Some(a), Some(b)) = (rank(from), rank(to)) else {
        return Some(format!(
            "{} is in no layer (add its folder to LAYERS)",
            if rank(from).is_none() { from } else { to }
        ));
    };
    if b > a {
        return Some(format!(
            "layer {} may not import layer {}",
            top(from),
            top(to)
        ));
    }
    let within = |f: &str, folder: &str| f == folder || f.starts_with(&format!("{folder}/"));
    APART
        .iter()
        .find(|(a, b)| within(from, a) && within(to, b))
        .map(|(a, b)| format!("{a} may not import {b}"))
}

struct Graph {
    /// Every module file, as its path below `src/` without `.rs`.
    files: BTreeSet<String>,
    edges: BTreeMap<String, BTreeSet<String>>,
}

impl Graph {
    fn read(src: &Path) -> Graph {
        let mut paths = Vec::new();
        collect_rs(src, &mut paths);
        let name = |p: &Path| {
            let rel = p.strip_prefix(src).unwrap().with_extension("");
            rel.to_string_lossy().replace('\\', "/")
        };
        // main.rs is the binary's own crate root; it only calls the CLI.
        let files: BTreeSet<String> = paths
            .iter()
            .map(|p| name(p))
            .filter(|n| n != "main")
            .collect();
        let mut edges = BTreeMap::new();
        for p in &paths {
            let file = name(p);
            if file == "main" {
                continue;
            }
            let text = std::fs::read_to_string(p).unwrap();
            edges.insert(file.clone(), file_edges(&file, &text, &files));
        }
        Graph { files, edges }
    }

    fn edge_count(&self) -> usize {
        self.edges.values().map(BTreeSet::len).sum()
    }

    /// Strongly connected components of more than one file (Tarjan).
    fn cycles(&self) -> Vec<Vec<String>> {
        struct State<'a> {
            g: &'a Graph,
            index: BTreeMap<&'a str, usize>,
            low: BTreeMap<&'a str, usize>,
            stack: Vec<&'a str>,
            on_stack: BTreeSet<&'a str>,
            out: Vec<Vec<String>>,
        }
        fn visit<'a>(s: &mut State<'a>, v: &'a str) {
            let i = s.index.len();
            s.index.insert(v, i);
            s.low.insert(v, i);
            s.stack.push(v);
            s.on_stack.insert(v);
            let g = s.g;
            for w in g.edges.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !s.index.contains_key(w) {
                    visit(s, w);
                    let lw = s.low[w];
                    let lv = s.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if s.on_stack.contains(w) {
                    let iw = s.index[w];
                    let lv = s.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
            if s.low[v] == s.index[v] {
                let mut component = Vec::new();
                while let Some(w) = s.stack.pop() {
                    s.on_stack.remove(w);
                    component.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    s.out.push(component);
                }
            }
        }
        let mut s = State {
            g: self,
            index: BTreeMap::new(),
            low: BTreeMap::new(),
            stack: Vec::new(),
            on_stack: BTreeSet::new(),
            out: Vec::new(),
        };
        for f in &self.files {
            if !s.index.contains_key(f.as_str()) {
                visit(&mut s, f);
            }
        }
        s.out.sort();
        s.out
    }
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file: `a/b` and `a/b/mod` are both `[a, b]`.
fn module_of(file: &str) -> Vec<String> {
    if file == "lib" {
        return Vec::new();
    }
    let mut segs: Vec<String> = file.split('/').map(String::from).collect();
    if segs.last().is_some_and(|s| s == "mod") {
        segs.pop();
    }
    segs
}

/// The file that holds a module path: the longest prefix that is a file.
fn file_of(module: &[String], files: &BTreeSet<String>) -> String {
    let mut best = "lib".to_string();
    for n in 1..=module.len() {
        let joined = module[..n].join("/");
        if files.contains(&joined) {
            best = joined;
        } else if files.contains(&format!("{joined}/mod")) {
            best = format!("{joined}/mod");
        } else {
            break;
        }
    }
    best
}

/// Every file that `file` (whose text is `text`) refers to, itself excluded.
fn file_edges(file: &str, text: &str, files: &BTreeSet<String>) -> BTreeSet<String> {
    let code = blank_comments_and_strings(text);
    let tokens = tokenize(&code);
    let base = module_of(file);
    // Child modules of this file's module, which it may name bare.
    let children: BTreeSet<String> = files
        .iter()
        .filter_map(|f| {
            let m = module_of(f);
            (m.len() == base.len() + 1 && m.starts_with(&base)).then(|| m[base.len()].clone())
        })
        .collect();

    let mut out = BTreeSet::new();
    // Inline modules (`mod tests { … }`): the brace depth each was opened at.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < tokens.len() {
        let current: Vec<String> = base
            .iter()
            .cloned()
            .chain(inline.iter().map(|(m, _)| m.clone()))
            .collect();
        match tokens[i].as_str() {
            "{" => depth += 1,
            "}" => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            "mod" if tokens.get(i + 2).is_some_and(|t| t == "{") => {
                inline.push((tokens[i + 1].clone(), depth));
            }
            "use" => {
                let end = tokens[i..]
                    .iter()
                    .position(|t| t == ";")
                    .map_or(tokens.len(), |p| i + p);
                for path in expand_use_tree(&tokens[i + 1..end]) {
                    if let Some(m) = resolve(&path, &current, &children, inline.is_empty()) {
                        out.insert(file_of(&m, files));
                    }
                }
                i = end;
            }
            t if (t == "crate" || t == "super" || t == "self" || children.contains(t))
                && tokens.get(i + 1).is_some_and(|n| n == "::")
                && !(i > 0 && (tokens[i - 1] == "::" || tokens[i - 1] == "$")) =>
            {
                let mut path = vec![t.to_string()];
                let mut j = i + 1;
                while tokens.get(j).is_some_and(|n| n == "::")
                    && tokens.get(j + 1).is_some_and(|n| is_ident(n))
                {
                    path.push(tokens[j + 1].clone());
                    j += 2;
                }
                if let Some(m) = resolve(&path, &current, &children, inline.is_empty()) {
                    out.insert(file_of(&m, files));
                }
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out.remove(file);
    out
}

/// A path as written, made absolute; `None` for paths outside this crate.
fn resolve(
    path: &[String],
    current: &[String],
    children: &BTreeSet<String>,
    at_file_level: bool,
) -> Option<Vec<String>> {
    let first = path.first()?;
    let mut rest = path[1..].to_vec();
    let mut m: Vec<String> = match first.as_str() {
        "crate" => Vec::new(),
        "self" => current.to_vec(),
        "super" => {
            let mut m = current.to_vec();
            m.pop();
            while rest.first().is_some_and(|s| s == "super") {
                rest.remove(0);
                m.pop();
            }
            m
        }
        // Bare names of child modules, seen from the file itself.
        c if at_file_level && children.contains(c) => {
            let mut m = current.to_vec();
            m.push(c.to_string());
            m
        }
        _ => return None,
    };
    m.extend(rest.into_iter().filter(|s| s != "self" && s != "*"));
    Some(m)
}

/// `a::{b, c::{d as e, *}}` → `[a, b]`, `[a, c, d]`, `[a, c, *]`.
fn expand_use_tree(tokens: &[String]) -> Vec<Vec<String>> {
    fn tree(tokens: &[String], pos: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
        let mut path = prefix;
        while *pos < tokens.len() {
            let t = tokens[*pos].as_str();
            match t {
                "::" => *pos += 1,
                "{" => {
                    *pos += 1;
                    loop {
                        tree(tokens, pos, path.clone(), out);
                        match tokens.get(*pos).map(String::as_str) {
                            Some(",") => *pos += 1,
                            Some("}") => {
                                *pos += 1;
                                return;
                            }
                            _ => return,
                        }
                        if tokens.get(*pos).is_some_and(|t| t == "}") {
                            *pos += 1;
                            return;
                        }
                    }
                }
                "," | "}" => break,
                "as" => *pos += 2,
                _ => {
                    path.push(t.to_string());
                    *pos += 1;
                }
            }
        }
        out.push(path);
    }
    let mut out = Vec::new();
    let mut pos = 0;
    // A leading `pub`, `pub(crate)` and the like come before `use`, so the
    // tree starts here; a leading `::` means an extern crate.
    tree(tokens, &mut pos, Vec::new(), &mut out);
    out.retain(|p| !p.is_empty());
    out
}

fn is_ident(t: &str) -> bool {
    t.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
        && t.chars().all(|c| c.is_alphanumeric() || c == '_')
}

fn tokenize(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let chars: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(chars[start..i].iter().collect());
            continue;
        }
        if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push("::".into());
            i += 2;
            continue;
        }
        if !c.is_whitespace() {
            out.push(c.to_string());
        }
        i += 1;
    }
    out
}

/// Comments and the contents of string and char literals become spaces, so
/// neither a path in a doc comment nor `"s3://…"` reads as code.
fn blank_comments_and_strings(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < c.len() {
        // Line comment.
        if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
            continue;
        }
        // Block comment, nested as Rust nests them.
        if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
            continue;
        }
        // Raw strings: r"…", r#"…"#, br#"…"#.
        let raw_start = if c[i] == 'r' {
            Some(i + 1)
        } else if c[i] == 'b' && c.get(i + 1) == Some(&'r') {
            Some(i + 2)
        } else {
            None
        };
        if let Some(mut j) = raw_start
            && !(i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_'))
        {
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if c.get(j) == Some(&'"') {
                j += 1;
                loop {
                    if j >= c.len() {
                        break;
                    }
                    if c[j] == '"' && (0..hashes).all(|h| c.get(j + 1 + h) == Some(&'#')) {
                        j += 1 + hashes;
                        break;
                    }
                    j += 1;
                }
                out.push_str("\"\"");
                i = j;
                continue;
            }
        }
        if c[i] == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
            continue;
        }
        // Char literals ('{', '\'', '\u{7f}'); a lifetime ('a) has no closing quote.
        if c[i] == '\'' {
            let close = if c.get(i + 1) == Some(&'\\') {
                (i + 2..c.len().min(i + 12)).find(|&j| c[j] == '\'')
            } else if c.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            if let Some(end) = close {
                out.push_str("' '");
                i = end + 1;
                continue;
            }
        }
        out.push(c[i]);
        i += 1;
    }
    out
}
