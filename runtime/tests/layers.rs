//! The runtime's modules form layers that only point down. This test reads
//! `src/`, resolves every path to a module of this crate (through `use`
//! re-exports, the crate root's included), and fails on an import from a
//! higher layer, or on an import cycle between the files and folders of any
//! one folder. Test-only modules may reach anywhere and are skipped.
//!
//! [`LAYERS`] is the one layer map: `docs/architecture.md`'s table is
//! checked against it.

#[path = "layers/lex.rs"]
mod lex;
#[path = "layers/scan.rs"]
mod scan;

use scan::Tree;
use std::fs;
use std::path::Path;

/// Each top-level module's layer; a module may import from its own layer
/// or below.
const LAYERS: &[(&str, u8)] = &[
    ("cfg", 0),
    ("error", 0),
    ("panic", 0),
    ("files", 0),
    ("hash", 0),
    ("plain", 0),
    ("compress", 0),
    ("shm", 0),
    ("trace", 0),
    ("options", 1),
    ("task", 1),
    ("wire", 2),
    ("sync", 2),
    ("backend", 3),
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

/// `src/`'s files, relative to it, with their text.
fn sources() -> Vec<(String, String)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.push((rel, fs::read_to_string(&path).unwrap()));
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    walk(&src, &src, &mut out);
    out
}

#[test]
fn every_import_points_to_the_same_layer_or_below() {
    let upward = Tree::new(&sources()).upward(LAYERS);
    assert!(
        upward.is_empty(),
        "imports that point up:\n{}",
        upward.join("\n")
    );
}

#[test]
fn no_import_cycle_inside_any_folder() {
    let cycles = Tree::new(&sources()).cycles();
    assert!(cycles.is_empty(), "{}", cycles.join("\n"));
}

/// A made-up tree from `(file, text)` pairs.
fn tree(files: &[(&str, &str)]) -> Tree {
    let owned: Vec<(String, String)> = files
        .iter()
        .map(|(f, t)| (f.to_string(), t.to_string()))
        .collect();
    Tree::new(&owned)
}

const ROOT: &str =
    "mod error; mod wire; mod sync; mod schedule; mod parallel; mod pool; mod backend;\n\
                    pub use error::Error;\npub use parallel::Parallel;\n\
                    pub mod shared { pub use crate::parallel::Parallel as Runner; }";

#[test]
fn the_checker_finds_an_upward_import_through_a_root_re_export() {
    let t = tree(&[
        ("lib.rs", ROOT),
        ("error.rs", "fn f(_: crate::Parallel) {}"),
        ("parallel.rs", "use crate::Error;"),
    ]);
    assert_eq!(
        t.upward(LAYERS),
        ["error.rs (layer 0) imports parallel.rs (layer 5)"]
    );
    let t = tree(&[
        ("lib.rs", ROOT),
        ("error.rs", "use crate::shared::Runner;"),
        ("parallel.rs", ""),
    ]);
    assert_eq!(
        t.upward(LAYERS),
        ["error.rs (layer 0) imports parallel.rs (layer 5)"]
    );
}

#[test]
fn the_checker_reads_past_a_test_module_declaration() {
    let sync = "#[cfg(test)]\nmod tests;\n\nuse crate::schedule::Stream;\n\
                #[cfg(test)]\nmod inline { use crate::parallel::Parallel; }\n";
    let t = tree(&[
        ("lib.rs", ROOT),
        ("sync/mod.rs", sync),
        ("sync/tests.rs", "use crate::parallel::Parallel;"),
        ("schedule/mod.rs", ""),
        ("parallel.rs", ""),
    ]);
    assert_eq!(
        t.upward(LAYERS),
        ["sync/mod.rs (layer 2) imports schedule/mod.rs (layer 4)"]
    );
}

#[test]
fn the_checker_finds_a_circle_inside_a_folder() {
    let t = tree(&[
        ("lib.rs", ROOT),
        (
            "pool/mod.rs",
            "mod chunks; mod manager; pub(crate) use manager::Engine;",
        ),
        ("pool/chunks.rs", "use super::Engine;"),
        (
            "pool/manager.rs",
            "pub(crate) enum Engine {}\nfn f() { super::chunks::cut(); }",
        ),
    ]);
    assert_eq!(
        t.cycles(),
        ["import cycle in src/pool/: chunks -> manager -> chunks"]
    );
    let t = tree(&[
        ("lib.rs", ROOT),
        ("backend/mod.rs", "mod mpi;"),
        ("backend/mpi/mod.rs", "mod driver; mod rank; mod segments;"),
        ("backend/mpi/driver.rs", "use super::rank::Rank;"),
        ("backend/mpi/rank.rs", "use super::segments::Kept;"),
        ("backend/mpi/segments.rs", "use super::driver;"),
    ]);
    assert_eq!(
        t.cycles(),
        ["import cycle in src/backend/mpi/: driver -> rank -> segments -> driver"]
    );
}

#[test]
fn the_checker_follows_super_super_nested_groups_and_skips_text() {
    let t = tree(&[
        ("lib.rs", ROOT),
        ("backend/mod.rs", "mod process;"),
        ("backend/process/mod.rs", "mod session;"),
        ("backend/process/session.rs", "use super::super::super::pool::Pool;"),
        ("wire.rs", "use crate::{error::{Error}, schedule::Stream};"),
        ("sync/mod.rs", "// use crate::parallel::Parallel;\nconst S: &str = \"crate::parallel::P\"; /* crate::pool::Pool */"),
        ("pool/mod.rs", ""),
        ("schedule/mod.rs", ""),
        ("parallel.rs", ""),
    ]);
    assert_eq!(
        t.upward(LAYERS),
        [
            "backend/process/session.rs (layer 3) imports pool/mod.rs (layer 5)",
            "wire.rs (layer 2) imports schedule/mod.rs (layer 4)",
        ]
    );
}

/// The `layer | module | job` table of `docs/architecture.md`: each row's
/// layer and top-level module (`backend/mpi/` counts as `backend`).
fn documented_layers() -> Vec<(String, u8)> {
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/architecture.md");
    let text = fs::read_to_string(doc).unwrap();
    let table = text
        .split("| layer | module | job |")
        .nth(1)
        .expect("docs/architecture.md has the layer table");
    table
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let module = cells[2]
                .trim_matches('`')
                .split('/')
                .next()
                .unwrap()
                .to_string();
            (module, cells[1].parse().unwrap())
        })
        .collect()
}

#[test]
fn the_documented_layer_table_is_this_one() {
    let documented = documented_layers();
    for (module, layer) in &documented {
        assert!(
            LAYERS.contains(&(module.as_str(), *layer)),
            "docs/architecture.md puts `{module}` in layer {layer}; tests/layers.rs does not"
        );
    }
    for (module, layer) in LAYERS {
        assert!(
            documented.iter().any(|(m, l)| m == module && l == layer),
            "docs/architecture.md's layer table has no row for `{module}` in layer {layer}"
        );
    }
}
