//! The public API is reviewed: `docs/public-api.txt` lists every `pub`
//! item of the facade, the macros, the option syntax and the runtime, and this test fails
//! when the code and the list differ.
//!
//! The runtime denies `unreachable_pub` (through clippy `-D warnings`), so
//! every item still marked `pub` there is reachable from outside: either
//! contract, or the hidden `__private` module the macros call. The list
//! has two parts: the contract first, then the plumbing, an item reachable
//! only through `__private` (named there and in no public `pub use`, or a
//! method of such a type). After an intended change, regenerate the list
//! and review its diff:
//!
//! ```text
//! PARJOB_BLESS_API=1 cargo test --test public_api
//! git diff docs/public-api.txt
//! ```

mod common;

use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn is_public(trimmed: &str) -> bool {
    trimmed.starts_with("pub ") || trimmed.starts_with("pub(self)")
}

/// One line per public declaration: `file | enclosing item | signature`.
fn declarations(root: &Path, file: &Path) -> Vec<String> {
    let text = fs::read_to_string(file).unwrap();
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => &text[..],
    };
    let rel = file.strip_prefix(root).unwrap().display().to_string();
    let mut out = Vec::new();
    let mut context = String::new();
    // Items inside a top-level `cfg_mpi! { .. }` (the runtime's feature
    // seam) are read as if they stood at the top level.
    let mut in_cfg_block = false;
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim();
        if trimmed.starts_with("//") {
            continue;
        }
        if line.starts_with("cfg_mpi! {") || line.starts_with("cfg_not_mpi! {") {
            in_cfg_block = true;
            continue;
        }
        if in_cfg_block && line == "}" {
            in_cfg_block = false;
            continue;
        }
        let line = match line.strip_prefix("    ") {
            Some(inner) if in_cfg_block => inner,
            _ => line,
        };
        if !line.starts_with(' ') && !trimmed.is_empty() && !trimmed.starts_with('#') {
            context = trimmed.trim_end_matches('{').trim().to_string();
        }
        // A row of the option table generates a field and three setters.
        if rel.ends_with("options.rs")
            && trimmed.ends_with(';')
            && trimmed.contains(": ")
            && trimmed.contains(", with_")
        {
            out.push(format!("{rel} | option table | {trimmed}"));
            continue;
        }
        if !is_public(trimmed) {
            continue;
        }
        // A field of a struct that is not public is not reachable.
        let in_private_type = line.starts_with(' ')
            && (context.starts_with("pub(") || context.starts_with("struct "))
            && !context.starts_with("pub(self)");
        if in_private_type {
            continue;
        }
        let mut signature = trimmed.to_string();
        // A function or a `use` group runs to its body or `;`; a field or
        // a variant ends at its comma.
        let long = signature.contains("fn ") || signature.contains(" use ");
        let ends = |s: &str| {
            s.ends_with('{') || s.ends_with(';') || s.ends_with('}') || (!long && s.ends_with(','))
        };
        while !ends(&signature) {
            match lines.next() {
                Some(next) => {
                    signature.push(' ');
                    signature.push_str(next.trim());
                }
                None => break,
            }
        }
        let signature = signature.trim_end_matches('{').trim().to_string();
        let scope = if line.starts_with(' ') {
            context.as_str()
        } else {
            "-"
        };
        out.push(format!("{rel} | {scope} | {signature}"));
    }
    out
}

/// The names a `pub use` line brings in (the last segment of each path,
/// or its `as` name).
fn used_names(line: &str) -> Vec<String> {
    let body = line
        .trim()
        .trim_start_matches("pub use")
        .trim_end_matches(';');
    body.split([',', '{', '}'])
        .filter_map(|part| {
            let part = part.trim();
            let name = part.rsplit(" as ").next()?.rsplit("::").next()?.trim();
            (!name.is_empty() && name != "*" && name != "self").then(|| name.to_string())
        })
        .collect()
}

/// The names `__private` re-exports, and those a public `pub use` does.
fn reexports(text: &str) -> (Vec<String>, Vec<String>) {
    let (mut private, mut public) = (Vec::new(), Vec::new());
    let mut depth_in_private: Option<usize> = None;
    let mut depth = 0usize;
    let mut statement = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("pub mod __private") {
            depth_in_private = Some(depth);
        }
        if trimmed.starts_with("pub use") || !statement.is_empty() {
            statement.push_str(trimmed);
            statement.push(' ');
            if trimmed.ends_with(';') {
                let mut names = used_names(&statement);
                // A glob of a module names its whole file.
                if let Some(module) = statement.trim().strip_prefix("pub use crate::") {
                    if let Some(path) = module.trim_end().strip_suffix("::*;") {
                        names.push(format!("{}.rs", path.replace("::", "/")));
                    }
                }
                match depth_in_private {
                    Some(_) => private.extend(names),
                    None => public.extend(names),
                }
                statement.clear();
            }
        }
        depth += trimmed.matches('{').count();
        depth = depth.saturating_sub(trimmed.matches('}').count());
        if depth_in_private.is_some_and(|d| depth <= d) && trimmed.contains('}') {
            depth_in_private = None;
        }
    }
    (private, public)
}

/// The name a declaration declares, or the type an `impl` scope is of.
fn declared_name(text: &str) -> Option<String> {
    let text = text.trim();
    let text = match text.strip_prefix("impl") {
        Some(rest) => {
            let rest = rest.rsplit(" for ").next().unwrap_or(rest);
            let rest = rest.trim_start();
            if rest.starts_with('<') {
                rest.split_once("> ").map(|(_, t)| t).unwrap_or(rest)
            } else {
                rest
            }
        }
        None => text.splitn(3, ' ').nth(2).unwrap_or(""),
    };
    let name: String = text
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

/// Whether a listed line is plumbing: inside `__private`, in a file only
/// a glob in `__private` reaches, or an item (or a method of a type, or a
/// `pub use` of names) that only `__private` re-exports.
fn is_plumbing(line: &str, private: &[String], public: &[String]) -> bool {
    let mut cells = line.splitn(3, " | ");
    let (file, scope, signature) = (
        cells.next().unwrap_or(""),
        cells.next().unwrap_or(""),
        cells.next().unwrap_or(""),
    );
    if scope.starts_with("pub mod __private") || signature.contains("__private") {
        return true;
    }
    let only_private = |n: &String| private.contains(n) && !public.contains(n);
    if private
        .iter()
        .any(|p| p.ends_with(".rs") && file.ends_with(p.as_str()))
    {
        return true;
    }
    if scope == "-" && signature.starts_with("pub use") {
        let names = used_names(signature);
        return !names.is_empty() && names.iter().all(only_private);
    }
    let named = if scope == "-" {
        declared_name(signature)
    } else {
        declared_name(scope)
    };
    named.is_some_and(|n| only_private(&n))
}

fn listing() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![
        root.join("src/lib.rs"),
        root.join("macros/src/lib.rs"),
        root.join("syntax/src/lib.rs"),
    ];
    rust_files(&root.join("runtime/src"), &mut files);
    let (private, mut public) =
        reexports(&fs::read_to_string(root.join("runtime/src/lib.rs")).unwrap());
    for file in &files {
        let text = fs::read_to_string(file).unwrap();
        if !file.ends_with("runtime/src/lib.rs") {
            public.extend(reexports(&text).1);
        }
    }
    let (mut contract, mut plumbing) = (String::new(), String::new());
    for file in files {
        for line in declarations(root, &file) {
            let part = if is_plumbing(&line, &private, &public) {
                &mut plumbing
            } else {
                &mut contract
            };
            part.push_str(&line);
            part.push('\n');
        }
    }
    format!(
        "# The public API of parjob: every `pub` item of the facade, the macros and the\n\
         # runtime (`file | enclosing item | signature`). Generated and checked by\n\
         # tests/public_api.rs: regenerate with PARJOB_BLESS_API=1 and review the diff.\n\
         #\n\
         # Part 1: the contract.\n\
         {contract}\
         #\n\
         # Part 2: plumbing, reachable only through `parjob::__private` (what the macros'\n\
         # expansions, parjob's tests and its fuzz targets call). Not public API: any of it\n\
         # may change in any release.\n\
         {plumbing}"
    )
}

#[test]
fn the_public_api_matches_the_reviewed_list() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/public-api.txt");
    let now = listing();
    if std::env::var_os("PARJOB_BLESS_API").is_some() {
        fs::write(&path, &now).unwrap();
        return;
    }
    let reviewed = fs::read_to_string(&path).unwrap_or_default();
    if now != reviewed {
        let added: Vec<&str> = now.lines().filter(|l| !reviewed.contains(l)).collect();
        let removed: Vec<&str> = reviewed.lines().filter(|l| !now.contains(l)).collect();
        panic!(
            "the public API changed without docs/public-api.txt:\n\
             added:\n  {}\nremoved:\n  {}\n\
             If this is intended, run PARJOB_BLESS_API=1 cargo test --test public_api \
             and review the diff of docs/public-api.txt.",
            added.join("\n  "),
            removed.join("\n  ")
        );
    }
}

#[test]
fn plumbing_is_what_only_private_re_exports() {
    let lib = "pub use a::{Contract, Both};\npub mod __private {\n    pub use crate::b::{Hidden, Both};\n    pub mod m {\n        pub use crate::c::Deep as Alias;\n    }\n}\npub use d::Later;\n";
    let (private, public) = reexports(lib);
    assert_eq!(private, ["Hidden", "Both", "Alias"]);
    assert_eq!(public, ["Contract", "Both", "Later"]);
    assert!(is_plumbing(
        "b.rs | - | pub struct Hidden",
        &private,
        &public
    ));
    assert!(is_plumbing(
        "b.rs | impl<'p> Hidden<'p> | pub fn f(self)",
        &private,
        &public
    ));
    assert!(!is_plumbing(
        "b.rs | - | pub struct Both",
        &private,
        &public
    ));
    assert!(!is_plumbing(
        "a.rs | impl Contract | pub fn g()",
        &private,
        &public
    ));
    assert!(is_plumbing(
        "lib.rs | pub mod __private | pub use crate::b::Hidden;",
        &private,
        &public
    ));
    assert!(!is_plumbing(
        "lib.rs | - | pub use a::{Contract, Both};",
        &private,
        &public
    ));
    let (private, _) = reexports("pub mod __private {\n    pub use crate::p::format::*;\n}\n");
    assert!(is_plumbing(
        "src/p/format.rs | - | pub const MAGIC: u8 = 1;",
        &private,
        &public
    ));
}

#[test]
fn the_lister_reads_signatures_scopes_and_skips_private_items() {
    let dir = common::scratch("api", "lister");
    let file = dir.join("x.rs");
    fs::write(
        &file,
        "pub struct S {\n    pub a: u8,\n    b: u8,\n}\nimpl S {\n    pub fn f(\n        x: u8,\n    ) -> u8 {\n        x\n    }\n    pub(crate) fn g() {}\n}\n// pub fn commented() {}\n",
    )
    .unwrap();
    let got = declarations(&dir, &file);
    assert_eq!(
        got,
        vec![
            "x.rs | - | pub struct S",
            "x.rs | pub struct S | pub a: u8,",
            "x.rs | impl S | pub fn f( x: u8, ) -> u8",
        ]
    );
    fs::remove_dir_all(&dir).unwrap();
}
