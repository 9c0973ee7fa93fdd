//! The layer checker itself: over the lexer's tokens (`lex.rs`), the `use`
//! trees and `crate::`/`super::`/`self::` paths each file names, and their
//! resolution (through `use` re-exports, the crate root's included) to the
//! file that defines each name. It works on sources in memory, so the
//! self-tests can plant faults in a made-up tree.

use crate::lex::{lex, strip_test_modules, Tok};
use std::collections::{BTreeMap, BTreeSet};

/// A module path from the crate root (`[]` is the root).
type ModPath = Vec<String>;

/// What one file declares and names.
#[derive(Default)]
struct FileScan {
    /// Child modules declared in each scope (the file's and its inline
    /// modules').
    children: BTreeMap<ModPath, BTreeSet<String>>,
    /// `use` items: scope, the name they bind (`*` for a glob), the path as
    /// written.
    uses: Vec<(ModPath, String, Vec<String>)>,
    /// Paths named in expressions and types, with their scope.
    paths: Vec<(ModPath, Vec<String>)>,
    /// Test-only child modules declared as files.
    test_children: Vec<String>,
}

fn ident(t: Option<&Tok>) -> Option<&str> {
    match t {
        Some(Tok::Ident(s)) => Some(s),
        _ => None,
    }
}

/// Parses one use tree at `toks[*i]` under `prefix`.
fn use_tree(
    toks: &[Tok],
    i: &mut usize,
    mut prefix: Vec<String>,
    out: &mut Vec<(String, Vec<String>)>,
) {
    loop {
        match toks.get(*i) {
            Some(Tok::Punct('{')) => {
                *i += 1;
                while !matches!(toks.get(*i), Some(Tok::Punct('}')) | None) {
                    use_tree(toks, i, prefix.clone(), out);
                    if toks.get(*i) == Some(&Tok::Punct(',')) {
                        *i += 1;
                    }
                }
                *i += 1;
                return;
            }
            Some(Tok::Punct('*')) => {
                *i += 1;
                out.push(("*".into(), prefix));
                return;
            }
            Some(Tok::Ident(s)) => {
                prefix.push(s.clone());
                *i += 1;
                if toks.get(*i) == Some(&Tok::PathSep) {
                    *i += 1;
                    continue;
                }
                let mut name = prefix.last().cloned().unwrap_or_default();
                if ident(toks.get(*i)) == Some("as") {
                    name = ident(toks.get(*i + 1)).unwrap_or("_").to_string();
                    *i += 2;
                }
                if name == "self" {
                    prefix.pop();
                    name = prefix.last().cloned().unwrap_or_default();
                }
                out.push((name, prefix));
                return;
            }
            _ => return,
        }
    }
}

fn scan_file(module: &ModPath, text: &str) -> FileScan {
    let (toks, test_children) = strip_test_modules(lex(text));
    let mut scan = FileScan {
        test_children,
        ..FileScan::default()
    };
    // The inline modules open at each point: (name, brace depth inside it).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    let scope = |inline: &[(String, usize)]| {
        let mut s = module.clone();
        s.extend(inline.iter().map(|(n, _)| n.clone()));
        s
    };
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth -= 1;
            }
            Tok::Ident(w) if w == "mod" => {
                if let Some(name) = ident(toks.get(i + 1)) {
                    scan.children
                        .entry(scope(&inline))
                        .or_default()
                        .insert(name.to_string());
                    if toks.get(i + 2) == Some(&Tok::Punct('{')) {
                        inline.push((name.to_string(), depth + 1));
                    }
                }
            }
            Tok::Ident(w) if w == "use" && toks.get(i.wrapping_sub(1)) != Some(&Tok::PathSep) => {
                let mut j = i + 1;
                if toks.get(j) == Some(&Tok::PathSep) {
                    j += 1;
                }
                let mut found = Vec::new();
                use_tree(&toks, &mut j, Vec::new(), &mut found);
                let s = scope(&inline);
                scan.uses.extend(
                    found
                        .into_iter()
                        .map(|(name, path)| (s.clone(), name, path)),
                );
                i = j;
                continue;
            }
            Tok::Ident(w)
                if toks.get(i + 1) == Some(&Tok::PathSep)
                    && toks.get(i.wrapping_sub(1)) != Some(&Tok::PathSep) =>
            {
                let mut path = vec![w.clone()];
                let mut j = i + 1;
                while toks.get(j) == Some(&Tok::PathSep) {
                    match ident(toks.get(j + 1)) {
                        Some(seg) => path.push(seg.to_string()),
                        None => break,
                    }
                    j += 2;
                }
                scan.paths.push((scope(&inline), path));
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    scan
}

/// The module path of a source file, relative to `src/`.
fn module_of(rel: &str) -> ModPath {
    let mut parts: Vec<String> = rel
        .trim_end_matches(".rs")
        .split('/')
        .map(String::from)
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// Every source file's scan, and which module path each inline or file
/// module lives in.
pub struct Tree {
    scans: BTreeMap<ModPath, FileScan>,
    files: BTreeMap<ModPath, String>,
    /// Every module (file or inline) and the file that holds it.
    home: BTreeMap<ModPath, ModPath>,
    /// `use` bindings by scope and name, resolved to absolute paths.
    bound: BTreeMap<(ModPath, String), ModPath>,
}

impl Tree {
    /// Scans `sources` (paths relative to `src/`, and their text), leaving
    /// out test-only files.
    pub fn new(sources: &[(String, String)]) -> Tree {
        let mut scans = BTreeMap::new();
        let mut files = BTreeMap::new();
        for (rel, text) in sources {
            let module = module_of(rel);
            scans.insert(module.clone(), scan_file(&module, text));
            files.insert(module, rel.clone());
        }
        let test_only: Vec<ModPath> = scans
            .iter()
            .flat_map(|(m, s)| {
                s.test_children
                    .iter()
                    .map(move |c| [m.clone(), vec![c.clone()]].concat())
            })
            .collect();
        scans.retain(|m, _| !test_only.iter().any(|t| m.starts_with(t)));
        files.retain(|m, _| scans.contains_key(m));
        let mut home = BTreeMap::new();
        for (m, scan) in &scans {
            home.insert(m.clone(), m.clone());
            for (scope, names) in &scan.children {
                for n in names {
                    let child = [scope.clone(), vec![n.clone()]].concat();
                    if !files.contains_key(&child) {
                        home.insert(child, m.clone());
                    }
                }
            }
        }
        let mut tree = Tree {
            scans,
            files,
            home,
            bound: BTreeMap::new(),
        };
        // Twice, so that a `use` through a name another `use` binds resolves.
        for _ in 0..2 {
            let mut bound = BTreeMap::new();
            for scan in tree.scans.values() {
                for (scope, name, path) in &scan.uses {
                    if let Some(abs) = tree.absolute(scope, path).filter(|_| name != "*") {
                        bound.insert((scope.clone(), name.clone()), abs);
                    }
                }
            }
            tree.bound = bound;
        }
        tree
    }

    /// A path as written in `scope`, made absolute; `None` for paths into
    /// other crates. Names bound by `use` are followed once `bound` is
    /// filled.
    fn absolute(&self, scope: &ModPath, path: &[String]) -> Option<ModPath> {
        let (first, rest) = path.split_first()?;
        let mut base = match first.as_str() {
            "crate" => Vec::new(),
            "self" => scope.clone(),
            "super" => {
                let mut s = scope.clone();
                s.pop()?;
                s
            }
            name if self.is_child(scope, name) => [scope.clone(), vec![name.to_string()]].concat(),
            name => {
                let bound = self.bound.get(&(scope.clone(), name.to_string()))?;
                return Some([bound.clone(), rest.to_vec()].concat());
            }
        };
        let mut rest = rest;
        while rest.first().is_some_and(|s| s == "super") {
            base.pop()?;
            rest = &rest[1..];
        }
        Some([base, rest.to_vec()].concat())
    }

    fn is_child(&self, scope: &ModPath, name: &str) -> bool {
        self.home
            .get(scope)
            .and_then(|file| self.scans.get(file))
            .and_then(|scan| scan.children.get(scope))
            .is_some_and(|c| c.contains(name))
    }

    /// The file that defines what an absolute path names, following `use`
    /// re-exports (the crate root's included).
    fn defining_file(&self, abs: &ModPath, depth: usize) -> Option<ModPath> {
        let k = (0..=abs.len())
            .rev()
            .find(|k| self.home.contains_key(&abs[..*k]))?;
        if let Some(name) = abs.get(k) {
            if let Some(target) = self.bound.get(&(abs[..k].to_vec(), name.clone())) {
                if depth < 16 && target != abs {
                    let next = [target.clone(), abs[k + 1..].to_vec()].concat();
                    return self.defining_file(&next, depth + 1);
                }
            }
        }
        self.home.get(&abs[..k]).cloned()
    }

    /// Every import between files: (from, to), by module path.
    pub fn edges(&self) -> BTreeSet<(ModPath, ModPath)> {
        let mut edges = BTreeSet::new();
        for (file, scan) in &self.scans {
            let named = scan
                .uses
                .iter()
                .map(|(s, _, p)| (s, p))
                .chain(scan.paths.iter().map(|(s, p)| (s, p)));
            for (scope, path) in named {
                let Some(abs) = self.absolute(scope, path) else {
                    continue;
                };
                if let Some(to) = self.defining_file(&abs, 0) {
                    if to != *file && self.files.contains_key(&to) {
                        edges.insert((file.clone(), to));
                    }
                }
            }
        }
        edges
    }

    /// The file of a module path, as written under `src/`.
    pub fn file(&self, module: &ModPath) -> &str {
        &self.files[module]
    }

    /// Imports that point to a higher layer, and modules with no layer.
    pub fn upward(&self, layers: &[(&str, u8)]) -> Vec<String> {
        let layer = |m: &ModPath| {
            m.first()
                .and_then(|top| layers.iter().find(|(n, _)| n == top).map(|(_, l)| *l))
        };
        let mut found = BTreeSet::new();
        for m in self.files.keys().filter(|m| !m.is_empty()) {
            if layer(m).is_none() {
                found.insert(format!("module `{}` has no layer in tests/layers.rs", m[0]));
            }
        }
        for (from, to) in self.edges() {
            if let (Some(a), Some(b)) = (layer(&from), layer(&to)) {
                if b > a {
                    found.insert(format!(
                        "{} (layer {a}) imports {} (layer {b})",
                        self.file(&from),
                        self.file(&to)
                    ));
                }
            }
        }
        found.into_iter().collect()
    }

    /// Import cycles between the files and folders of each folder.
    pub fn cycles(&self) -> Vec<String> {
        let edges = self.edges();
        let folders: BTreeSet<ModPath> = self
            .files
            .keys()
            .filter(|m| !m.is_empty())
            .map(|m| m[..m.len() - 1].to_vec())
            .collect();
        let mut found = Vec::new();
        for folder in folders {
            let n = folder.len();
            let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for (from, to) in &edges {
                if from.len() > n
                    && to.len() > n
                    && from.starts_with(&folder)
                    && to.starts_with(&folder)
                    && from[n] != to[n]
                {
                    graph
                        .entry(from[n].clone())
                        .or_default()
                        .insert(to[n].clone());
                }
            }
            if let Some(cycle) = find_cycle(&graph) {
                let place = if folder.is_empty() {
                    "src".to_string()
                } else {
                    format!("src/{}", folder.join("/"))
                };
                found.push(format!("import cycle in {place}/: {}", cycle.join(" -> ")));
            }
        }
        found
    }
}

/// A cycle in `graph`, by depth-first search for a back edge.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if !done.insert(node.to_string()) {
            return None;
        }
        path.push(node.to_string());
        for dep in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(dep, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}
