//! The runtime's modules form layers that only point down (see the crate
//! docs). This test reads `src/`, finds every `crate::` path outside
//! comments and test modules, and fails on an import from a higher layer
//! or on an import cycle between modules.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Each module's layer; a module may import from its own layer or below.
const LAYERS: &[(&str, u8)] = &[
    ("error", 0),
    ("panic", 0),
    ("files", 0),
    ("hash", 0),
    ("plain", 0),
    ("compress", 0),
    ("shm", 0),
    ("options", 1),
    ("task", 1),
    ("wire", 2),
    ("sync", 2),
    ("backend", 3),
    ("backend::beacon", 3),
    ("backend::nesting", 3),
    ("backend::sequential", 3),
    ("backend::thread", 3),
    ("backend::process", 3),
    ("backend::mpi", 3),
    ("schedule", 4),
    ("config", 5),
    ("parallel", 5),
    ("calls", 5),
    ("indexed", 5),
    ("loops", 5),
    ("memo", 5),
    ("persist", 5),
    ("pool", 5),
    ("shard", 5),
];

fn layer(module: &str) -> u8 {
    LAYERS
        .iter()
        .find(|(m, _)| *m == module)
        .map(|(_, l)| *l)
        .unwrap_or_else(|| panic!("module `{module}` has no layer in tests/layers.rs"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a file belongs to: its top-level module, and for `backend`
/// the backend's own submodule.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .filter(|p| p != "mod")
        .collect();
    match parts.as_slice() {
        [lib] if lib == "lib" => None,
        [top, sub, ..] if top == "backend" => Some(format!("backend::{sub}")),
        [top, ..] => Some(top.clone()),
        [] => None,
    }
}

/// The code of a file without comments and without its `#[cfg(test)]`
/// module (tests may reach anywhere).
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The modules a file's code names through `crate::`, including inside
/// `use crate::{a, b::c}` groups.
fn imports(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let paths: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            group[..end].split(',').map(str::trim).collect()
        } else {
            vec![rest]
        };
        for path in paths {
            let mut segments = path.split("::").map(|s| {
                s.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .next()
                    .unwrap_or("")
            });
            let Some(top) = segments.next().filter(|s| !s.is_empty()) else {
                continue;
            };
            let module = match (top, segments.next()) {
                ("backend", Some(sub)) if layer_known(&format!("backend::{sub}")) => {
                    format!("backend::{sub}")
                }
                (top, _) => top.to_string(),
            };
            if layer_known(&module) {
                found.insert(module);
            }
        }
    }
    found
}

fn layer_known(module: &str) -> bool {
    LAYERS.iter().any(|(m, _)| *m == module)
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let Some(module) = module_of(&src, &file) else {
            continue;
        };
        let text = fs::read_to_string(&file).unwrap();
        let mut deps = imports(&code(&text));
        deps.remove(&module);
        graph.entry(module).or_default().extend(deps);
    }
    graph
}

#[test]
fn every_import_points_to_the_same_layer_or_below() {
    let mut upward = Vec::new();
    for (module, deps) in graph() {
        for dep in deps {
            if layer(&dep) > layer(&module) {
                upward.push(format!(
                    "{module} (layer {}) imports {dep} (layer {})",
                    layer(&module),
                    layer(&dep)
                ));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that point up:\n{}",
        upward.join("\n")
    );
}

#[test]
fn no_import_cycle_between_modules() {
    let graph = graph();
    // Depth-first search for a back edge, reporting the cycle it closes.
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
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for dep in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(dep, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        let cycle = visit(node, &graph, &mut Vec::new(), &mut done);
        assert!(
            cycle.is_none(),
            "import cycle: {}",
            cycle.unwrap().join(" -> ")
        );
    }
}

#[test]
fn the_checker_sees_imports_and_groups() {
    let found = imports(
        "use crate::wire::{self, Hello};\nuse crate::{error::Error, backend::thread::Threads};\nlet x = crate::options::cpu_count();",
    );
    let expected: BTreeSet<String> = ["wire", "error", "backend::thread", "options"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(found, expected);
    assert!(imports("// use crate::schedule::Stream;").contains("schedule"));
    assert!(!imports(&code("// use crate::schedule::Stream;")).contains("schedule"));
}
