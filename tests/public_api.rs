//! The public API is reviewed: `docs/public-api.txt` lists every `pub`
//! item of the facade, the macros, the option syntax and the runtime, and this test fails
//! when the code and the list differ.
//!
//! The runtime denies `unreachable_pub` (through clippy `-D warnings`), so
//! every item still marked `pub` there is reachable from outside: either
//! contract, or the hidden `__private` module the macros call. After an
//! intended change, regenerate the list and review its diff:
//!
//! ```text
//! PARJOB_BLESS_API=1 cargo test --test public_api
//! git diff docs/public-api.txt
//! ```

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
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim();
        if trimmed.starts_with("//") {
            continue;
        }
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

fn listing() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![
        root.join("src/lib.rs"),
        root.join("macros/src/lib.rs"),
        root.join("syntax/src/lib.rs"),
    ];
    rust_files(&root.join("runtime/src"), &mut files);
    let mut out = String::from(
        "# The public API of parjob: every `pub` item of the facade, the macros and the\n\
         # runtime (`file | enclosing item | signature`). Generated and checked by\n\
         # tests/public_api.rs: regenerate with PARJOB_BLESS_API=1 and review the diff.\n",
    );
    for file in files {
        for line in declarations(root, &file) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
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
fn the_lister_reads_signatures_scopes_and_skips_private_items() {
    let dir = std::env::temp_dir().join(format!("parjob-api-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
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
