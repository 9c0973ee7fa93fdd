//! Settings the peers refuse are refused here too, at the call that uses
//! them, never clamped: CPython's `maxtasksperchild` and `chunksize` of 0,
//! joblib's compression levels and its `prefer`/`require` contradiction.

use parjob::pool::{Executor, Pool};
use parjob::prelude::*;
use parjob::{dump_with, Compression, Error, Parallel, Prefer};

mod common;

#[parallel(backend = "process")]
fn square(x: u64) -> u64 {
    x * x
}

fn config_error(result: parjob::Result<impl std::fmt::Debug>, names: &str) {
    match result {
        Err(Error::Config(why)) => assert!(why.contains(names), "{why}"),
        other => panic!("expected a configuration error naming {names}, got {other:?}"),
    }
}

#[parjob::test]
fn zero_tasks_or_items_per_child_is_refused() {
    config_error(
        Pool::builder().max_tasks_per_child(0).build(),
        "max_tasks_per_child(0)",
    );
    config_error(
        Pool::builder().max_items_per_child(0).build(),
        "max_items_per_child(0)",
    );
    config_error(Pool::builder().chunksize(0).build(), "chunksize 0");
    let pool = Pool::builder()
        .processes(1)
        .max_tasks_per_child(1)
        .build()
        .unwrap();
    assert_eq!(pool.map(square::delayed, 0..3u64).unwrap(), [0, 1, 4]);
}

#[parjob::test]
fn a_chunksize_of_zero_is_an_error_for_every_map() {
    let pool = Pool::new(2).unwrap();
    config_error(
        pool.chunksize(0).map(square::delayed, 0..4u64),
        "chunksize 0",
    );
    let mut lazy = pool.chunksize(0).imap(square::delayed, 0..4u64);
    assert!(matches!(lazy.next(), Some(Err(Error::Config(_)))));
    assert!(lazy.next().is_none());
    let mut lazy = pool
        .chunksize(1)
        .buffersize(0)
        .imap(square::delayed, 0..4u64);
    assert!(matches!(lazy.next(), Some(Err(Error::Config(_)))));
    let ex = Executor::new(2).unwrap();
    let mut mapped = ex.map_chunked(square::delayed, 0..4u64, None, 0, None);
    assert!(matches!(mapped.next(), Some(Err(Error::Config(_)))));
    assert_eq!(pool.map(square::delayed, 0..3u64).unwrap(), [0, 1, 4]);
}

#[test]
fn a_compression_level_out_of_range_writes_nothing() {
    let dir = common::scratch("validation", "levels");
    let path = dir.join("model.pj");
    for bad in [
        Compression::Zlib(10),
        Compression::Lz4(17),
        Compression::Zstd(23),
    ] {
        let err = dump_with(&vec![1.0f64; 10], path.as_path(), bad).unwrap_err();
        assert!(err.to_string().contains("takes a level from"), "{err}");
        assert!(!path.exists(), "{bad:?} left a file");
    }
    assert!(
        std::fs::read_dir(&dir).unwrap().next().is_none(),
        "a temporary file was left"
    );
    dump_with(&vec![1.0f64; 10], path.as_path(), Compression::Lz4(3)).unwrap();
    assert_eq!(parjob::load::<Vec<f64>>(&path).unwrap(), vec![1.0; 10]);
}

#[parjob::test]
fn prefer_processes_with_require_sharedmem_is_joblibs_value_error() {
    let p = Parallel::new()
        .n_jobs(2)
        .prefer(Prefer::Processes)
        .require_sharedmem();
    config_error(p.run((0..3).map(square::delayed)), "contradict");
    let scoped = parjob::config()
        .prefer(Prefer::Processes)
        .require_sharedmem()
        .scope(|| square::map(0..3));
    config_error(scoped, "contradict");
    // Across levels, require still turns a preferred process run into threads.
    let hinted = parjob::config().prefer(Prefer::Processes).scope(|| {
        Parallel::new()
            .require_sharedmem()
            .run((0..3).map(square::delayed))
    });
    assert_eq!(hinted.unwrap(), [0, 1, 4]);
}
