//! Arrows point down: no file of a crate may reach, through its paths, a file that reaches
//! back to it. A cycle means two ideas cannot be read, tested or moved apart.
//!
//! The graph is built from the sources themselves: every `crate::a::b::…`, `super::…` and
//! `self::…` path (in `use` trees, brace groups included, and inline) is an edge from the file
//! it is written in to the file of the longest module prefix of that path. A module's files
//! are one unit with its folder's `mod.rs`: a path from a child up to an ancestor module is
//! not an edge (the parent holds the folder's shared words), and `mod` declarations are not
//! edges. Written by hand because no maintained crate reads a module graph without compiling
//! the crate.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates whose library sources are checked.
const CRATES: &[&str] = &["coordinator", "catalog", "common", "executor"];

#[test]
fn no_crate_has_a_module_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut report = Vec::new();
    for krate in CRATES {
        let graph = module_graph(&root.join(krate).join("src"));
        for cycle in cycles(&graph) {
            report.push(format!("{krate}: {}", cycle.join(" <-> ")));
            for from in &cycle {
                for to in graph[from].iter().filter(|to| cycle.contains(to)) {
                    report.push(format!("    {from} -> {to}"));
                }
            }
        }
    }
    assert!(
        report.is_empty(),
        "module cycles (each line is a set of files that import each other in a circle):\n{}",
        report.join("\n")
    );
}

#[test]
fn the_check_sees_a_cycle() {
    let dir = std::env::temp_dir().join(format!("quarry-cycles-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("a")).unwrap();
    std::fs::write(dir.join("lib.rs"), "mod a; mod b;").unwrap();
    std::fs::write(dir.join("a/mod.rs"), "use crate::b::{x, y::Z};").unwrap();
    std::fs::write(dir.join("b.rs"), "fn f() { crate::a::g(); }").unwrap();
    std::fs::write(dir.join("c.rs"), "// crate::a::g\nuse crate::b;").unwrap();
    std::fs::create_dir_all(dir.join("d")).unwrap();
    std::fs::write(dir.join("d/mod.rs"), "pub use self::e::E; struct Shared;").unwrap();
    std::fs::write(dir.join("d/e.rs"), "use super::{Shared, f::F};").unwrap();
    std::fs::write(dir.join("d/f.rs"), "use super::e::E;").unwrap();
    let test_only = "#[cfg(test)]\nmod tests { use crate::h::{x}; fn f() { if true {} } }";
    std::fs::write(dir.join("g.rs"), test_only).unwrap();
    std::fs::write(dir.join("h.rs"), "use crate::g;").unwrap();
    let found = cycles(&module_graph(&dir));
    std::fs::remove_dir_all(&dir).unwrap();
    let want = [["a/mod.rs", "b.rs"], ["d/e.rs", "d/f.rs"]];
    assert_eq!(found, want.map(|c| c.map(String::from).to_vec()));
}

type Graph = BTreeMap<String, BTreeSet<String>>;

/// File (relative to `src`) → files it reaches through `crate::` paths.
fn module_graph(src: &Path) -> Graph {
    let files = rust_files(src);
    let mut modules: BTreeMap<Vec<String>, String> = BTreeMap::new();
    for file in &files {
        let rel = relative(src, file);
        if let Some(path) = module_path(&rel) {
            modules.insert(path, rel);
        }
    }
    let mut graph = Graph::new();
    for file in &files {
        let rel = relative(src, file);
        if module_path(&rel).is_none() {
            continue;
        }
        let text = strip_test_modules(&strip_comments_and_strings(
            &std::fs::read_to_string(file).expect("a source file reads"),
        ));
        let edges = graph.entry(rel.clone()).or_default();
        let here = module_path(&rel).unwrap_or_default();
        for path in paths(&text, &here) {
            let target = (0..=path.len())
                .rev()
                .find_map(|n| modules.get(&path[..n]))
                .cloned();
            let ancestor = |t: &String| module_path(t).is_some_and(|m| here.starts_with(&m));
            if let Some(target) = target
                && !ancestor(&target)
            {
                edges.insert(target);
            }
        }
    }
    graph
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).expect("a source folder reads") {
            let path = entry.expect("a folder entry reads").path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn relative(src: &Path, file: &Path) -> String {
    file.strip_prefix(src)
        .expect("files are under src")
        .to_string_lossy()
        .replace('\\', "/")
}

/// `a/b.rs` → `[a, b]`, `a/mod.rs` → `[a]`, `lib.rs` → `[]`; binaries' roots are no module
/// of the library.
fn module_path(rel: &str) -> Option<Vec<String>> {
    if rel == "main.rs" || rel.starts_with("bin/") {
        return None;
    }
    let stem = rel.strip_suffix(".rs")?;
    let mut parts: Vec<String> = stem.split('/').map(str::to_string).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    Some(parts)
}

/// Every path that starts at `crate::`, `super::` or `self::`, made absolute from `here`
/// (the module the text is in), with `use` brace groups expanded.
fn paths(text: &str, here: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    for anchor in ["crate::", "super::", "self::"] {
        let mut at = 0;
        while let Some(found) = text[at..].find(anchor) {
            let start = at + found;
            at = start + anchor.len();
            let before = start.checked_sub(1).map(|i| bytes[i]);
            if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':') {
                continue; // `$crate::`, `my_crate::`, `super::super::` (counted from the first)
            }
            let mut base: Vec<String> = match anchor {
                "crate::" => Vec::new(),
                "super::" => here[..here.len().saturating_sub(1)].to_vec(),
                _ => here.to_vec(),
            };
            while text[at..].starts_with("super::") {
                base.pop();
                at += "super::".len();
            }
            let (tree, end) = use_tree(text, at);
            at = end;
            expand(&tree, &mut base, &mut out);
        }
    }
    out
}

/// A parsed `a::b::{c, d::e}` tree.
struct Tree {
    segments: Vec<String>,
    children: Vec<Tree>,
}

fn use_tree(text: &str, mut at: usize) -> (Tree, usize) {
    let bytes = text.as_bytes();
    let mut tree = Tree {
        segments: Vec::new(),
        children: Vec::new(),
    };
    loop {
        while at < bytes.len() && bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        if at < bytes.len() && bytes[at] == b'{' {
            at += 1;
            loop {
                let (child, end) = use_tree(text, at);
                tree.children.push(child);
                at = end;
                while at < bytes.len() && (bytes[at].is_ascii_whitespace() || bytes[at] == b',') {
                    at += 1;
                }
                if at >= bytes.len() || bytes[at] == b'}' {
                    return (tree, (at + 1).min(bytes.len()));
                }
                if bytes[at] == b';' {
                    return (tree, at);
                }
            }
        }
        let start = at;
        while at < bytes.len() && (bytes[at].is_ascii_alphanumeric() || bytes[at] == b'_') {
            at += 1;
        }
        if at == start {
            return (tree, at);
        }
        tree.segments.push(text[start..at].to_string());
        if text[at..].starts_with("::") {
            at += 2;
        } else {
            return (tree, at);
        }
    }
}

fn expand(tree: &Tree, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let len = prefix.len();
    prefix.extend(tree.segments.iter().filter(|s| *s != "self").cloned());
    if tree.children.is_empty() {
        out.push(prefix.clone());
    }
    for child in &tree.children {
        expand(child, prefix, out);
    }
    prefix.truncate(len);
}

/// Blanks out comments, string and char literals so that paths in them are not edges.
fn strip_comments_and_strings(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
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
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
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
        } else if c == 'r' && (next == Some('#') || next == Some('"')) && !ident_before(&chars, i) {
            // Raw string: r"…" or r#"…"#.
            let mut hashes = 0;
            let mut j = i + 1;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            'raw: while j < chars.len() {
                if chars[j] == '"' && (0..hashes).all(|h| chars.get(j + 1 + h) == Some(&'#')) {
                    j += 1 + hashes;
                    break 'raw;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && is_char_literal(&chars, i) {
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Removes `#[cfg(test)] mod … { … }` blocks: what a file's own tests use is not part of the
/// file's place in the graph. Runs after comments and strings are blanked, so braces match.
fn strip_test_modules(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("#[cfg(test)]") {
        let after = &rest[at + "#[cfg(test)]".len()..];
        let trimmed = after.trim_start();
        let is_mod = trimmed.starts_with("mod ") || trimmed.starts_with("pub(crate) mod ");
        let open = trimmed.find('{');
        let Some(open) = open.filter(|o| is_mod && !trimmed[..*o].contains(';')) else {
            out.push_str(&rest[..at + "#[cfg(test)]".len()]);
            rest = after;
            continue;
        };
        out.push_str(&rest[..at]);
        let body = &trimmed[open..];
        let mut depth = 0usize;
        let mut end = body.len();
        for (i, c) in body.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &body[end..];
    }
    out.push_str(rest);
    out
}

fn ident_before(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

/// `'a'`, `'\n'`, `'\u{1F600}'` are literals; `'a` (a lifetime) is not.
fn is_char_literal(chars: &[char], i: usize) -> bool {
    match chars.get(i + 1) {
        Some('\\') => true,
        Some(_) => chars.get(i + 2) == Some(&'\''),
        None => false,
    }
}

/// The strongly connected components with more than one file (Tarjan's algorithm, written
/// iteratively), each sorted, in sorted order.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    let nodes: Vec<&String> = graph.keys().collect();
    let index_of: BTreeMap<&String, usize> =
        nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let edges: Vec<Vec<usize>> = nodes
        .iter()
        .map(|n| {
            graph[*n]
                .iter()
                .filter_map(|t| index_of.get(t).copied())
                .collect()
        })
        .collect();
    let n = nodes.len();
    let (mut index, mut low, mut on_stack) = (vec![usize::MAX; n], vec![0; n], vec![false; n]);
    let (mut stack, mut next, mut out) = (Vec::new(), 0, Vec::new());
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        let mut work = vec![(root, 0usize)];
        while let Some((v, edge)) = work.pop() {
            if edge == 0 {
                index[v] = next;
                low[v] = next;
                next += 1;
                stack.push(v);
                on_stack[v] = true;
            }
            if let Some(&w) = edges[v].get(edge) {
                work.push((v, edge + 1));
                if index[w] == usize::MAX {
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            if low[v] == index[v] {
                let mut component = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    component.push(nodes[w].clone());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    out.push(component);
                }
            }
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
        }
    }
    out.sort();
    out
}
