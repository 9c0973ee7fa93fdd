//! Where `#[memoize]` keeps a function's entries when the attribute names
//! no `dir`: `PARJOB_CACHE_DIR`, else the user's cache directory, and only
//! with neither a warning on stderr. Each case runs a helper in a child
//! copy of this binary, with the environment it needs.

use parjob::prelude::*;
use std::path::Path;

mod common;
use common::{cache_outputs as outputs, fresh, helper_command as helper};

#[memoize]
fn from_env_dir(x: u64) -> u64 {
    x + 7
}

#[memoize(dir = "target/memo-tests/explicit")]
fn explicit_dir(x: u64) -> u64 {
    x + 8
}

#[test]
#[ignore = "helper: run by the test below with PARJOB_CACHE_DIR set"]
fn helper_env_dir() {
    assert_eq!(from_env_dir(1), 8);
    assert_eq!(explicit_dir(1), 9);
    println!("env={}", from_env_dir::cache_dir().unwrap().display());
    println!("explicit={}", explicit_dir::cache_dir().unwrap().display());
}

#[test]
#[ignore = "helper: run by the test below with a user cache directory"]
fn helper_default_dir() {
    assert_eq!(from_env_dir(2), 9);
    assert_eq!(from_env_dir(2), 9);
    let stats = from_env_dir::stats();
    println!("hits={} misses={}", stats.hits, stats.misses);
    println!(
        "dir={}",
        from_env_dir::cache_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_default()
    );
}

/// With no `dir` and no `PARJOB_CACHE_DIR`, a function caches under the
/// user's cache directory; with none of those, it says so on stderr.
#[test]
fn without_a_dir_the_cache_goes_to_the_users_cache_directory() {
    fresh("target/memo-tests/xdg");
    let run = |env: &[(&str, &str)], unset: &[&str]| {
        let mut command = helper("helper_default_dir", env);
        for name in unset {
            command.env_remove(name);
        }
        let out = command.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (text, _) = run(
        &[("XDG_CACHE_HOME", "target/memo-tests/xdg")],
        &["PARJOB_CACHE_DIR"],
    );
    assert!(text.contains("hits=1 misses=1"), "{text}");
    assert!(
        text.contains("dir=target/memo-tests/xdg/parjob/memoize_dirs/memoize_dirs/from_env_dir"),
        "{text}"
    );
    let (text, stderr) = run(&[], &["PARJOB_CACHE_DIR", "XDG_CACHE_HOME", "HOME"]);
    assert!(text.contains("hits=0 misses=2"), "{text}");
    assert!(stderr.contains("cache unavailable"), "{stderr}");
}

#[test]
fn the_directory_comes_from_parjob_cache_dir_unless_the_attribute_names_one() {
    fresh("target/memo-tests/env");
    fresh("target/memo-tests/explicit");
    let out = helper(
        "helper_env_dir",
        &[("PARJOB_CACHE_DIR", "target/memo-tests/env")],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("env=target/memo-tests/env/memoize_dirs/from_env_dir"),
        "{text}"
    );
    assert!(
        text.contains("explicit=target/memo-tests/explicit/memoize_dirs/explicit_dir"),
        "{text}"
    );
    assert_eq!(
        outputs(Path::new("target/memo-tests/env/memoize_dirs/from_env_dir")).len(),
        1
    );
    assert_eq!(
        outputs(Path::new(
            "target/memo-tests/explicit/memoize_dirs/explicit_dir"
        ))
        .len(),
        1
    );
}
