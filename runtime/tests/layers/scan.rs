//! The layer checker itself: a small lexer for Rust source, the `use`
//! trees and `crate::`/`super::`/`self::` paths it finds, and their
//! resolution (through `use` re-exports, the crate root's included) to the
//! file that defines each name. It works on sources in memory, so the
//! self-tests can plant faults in a made-up tree.

use std::collections::{BTreeMap, BTreeSet};

/// One token of Rust source; comments, strings, characters and lifetimes
/// are dropped by the lexer.
#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    PathSep,
    Punct(char),
}

fn lex(text: &str) -> Vec<Tok> {
    let chars: Vec<char> = text.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i = skip_block_comment(&chars, i);
        } else if c == '"' {
            i = skip_string(&chars, i + 1);
        } else if (c == 'r' || c == 'b') && starts_raw_string(&chars, i) {
            i = skip_raw_string(&chars, i);
        } else if c == 'b' && next == Some('"') {
            i = skip_string(&chars, i + 2);
        } else if c == '\'' {
            i = skip_char_or_lifetime(&chars, i);
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            toks.push(Tok::Ident(chars[start..i].iter().collect()));
        } else if c == ':' && next == Some(':') {
            toks.push(Tok::PathSep);
            i += 2;
        } else {
            toks.push(Tok::Punct(c));
            i += 1;
        }
    }
    toks
}

fn skip_block_comment(chars: &[char], mut i: usize) -> usize {
    let mut depth = 0;
    while i + 1 < chars.len() {
        if chars[i] == '/' && chars[i + 1] == '*' {
            depth += 1;
            i += 2;
        } else if chars[i] == '*' && chars[i + 1] == '/' {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    chars.len()
}

fn skip_string(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

fn starts_raw_string(chars: &[char], i: usize) -> bool {
    let mut j = i + 1;
    if chars[i] == 'b' {
        if chars.get(j) != Some(&'r') {
            return false;
        }
        j += 1;
    }
    while chars.get(j) == Some(&'#') {
        j += 1;
    }
    chars.get(j) == Some(&'"')
        && (i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_'))
}

fn skip_raw_string(chars: &[char], mut i: usize) -> usize {
    while chars[i] != '#' && chars[i] != '"' {
        i += 1;
    }
    let mut hashes = 0;
    while chars[i] == '#' {
        hashes += 1;
        i += 1;
    }
    i += 1;
    while i < chars.len() {
        if chars[i] == '"' && (0..hashes).all(|k| chars.get(i + 1 + k) == Some(&'#')) {
            return i + 1 + hashes;
        }
        i += 1;
    }
    i
}

/// `'x'`, `'\n'` and `'\u{..}'` are characters; `'a` is a lifetime.
fn skip_char_or_lifetime(chars: &[char], i: usize) -> usize {
    if chars.get(i + 1) == Some(&'\\') {
        let mut j = i + 2;
        while j < chars.len() && chars[j] != '\'' {
            j += 1;
        }
        j + 1
    } else if chars.get(i + 2) == Some(&'\'') {
        i + 3
    } else {
        i + 1
    }
}

/// Whether the attribute starting at `toks[i]` (`#`) is a `cfg` that
/// holds only in tests; returns the index after it either way.
fn attribute_end(toks: &[Tok], i: usize) -> (usize, bool) {
    let mut depth = 0;
    let mut j = i + 1;
    let mut words = Vec::new();
    while j < toks.len() {
        match &toks[j] {
            Tok::Punct('[') => depth += 1,
            Tok::Punct(']') => {
                depth -= 1;
                if depth == 0 {
                    j += 1;
                    break;
                }
            }
            Tok::Ident(w) => words.push(w.as_str()),
            _ => {}
        }
        j += 1;
    }
    let test_only =
        words.first() == Some(&"cfg") && words.contains(&"test") && !words.contains(&"not");
    (j, test_only)
}

/// The index after the `{ .. }` group opened at `toks[i]`.
fn group_end(toks: &[Tok], i: usize) -> usize {
    let mut depth = 0;
    for (j, t) in toks.iter().enumerate().skip(i) {
        match t {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
    }
    toks.len()
}

/// The tokens without their test-only modules, and the names of the
/// test-only modules declared as files (`#[cfg(test)] mod tests;`).
fn strip_test_modules(toks: Vec<Tok>) -> (Vec<Tok>, Vec<String>) {
    let mut kept = Vec::new();
    let mut test_files = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        if toks[i] != Tok::Punct('#') {
            kept.push(toks[i].clone());
            i += 1;
            continue;
        }
        let (after, test_only) = attribute_end(&toks, i);
        let mut j = after;
        while toks.get(j) == Some(&Tok::Punct('#')) {
            j = attribute_end(&toks, j).0;
        }
        if let Some(Tok::Ident(v)) = toks.get(j) {
            if v == "pub" {
                j += 1;
                if toks.get(j) == Some(&Tok::Punct('(')) {
                    while toks.get(j) != Some(&Tok::Punct(')')) {
                        j += 1;
                    }
                    j += 1;
                }
            }
        }
        let is_mod = toks.get(j) == Some(&Tok::Ident("mod".into()));
        if test_only && is_mod {
            if let (Some(Tok::Ident(name)), Some(t)) = (toks.get(j + 1), toks.get(j + 2)) {
                if *t == Tok::Punct(';') {
                    test_files.push(name.clone());
                    i = j + 3;
                } else {
                    i = group_end(&toks, j + 2);
                }
                continue;
            }
        }
        kept.extend_from_slice(&toks[i..after]);
        i = after;
    }
    (kept, test_files)
}

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
