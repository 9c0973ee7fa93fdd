//! Slurm job arrays without MPI: three array tasks, each a real process
//! with its own `SLURM_ARRAY_TASK_ID`, compute their shares into one
//! `#[memoize]` cache; the gather then finds every item there.

use parjob::{memoize, Shard};
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

static COMPUTED: AtomicUsize = AtomicUsize::new(0);
const ITEMS: u64 = 30;
const DIR: &str = "target/memo-tests/shards";

#[memoize(dir = "target/memo-tests/shards")]
fn costly(x: u64) -> u64 {
    COMPUTED.fetch_add(1, Ordering::SeqCst);
    println!("computed {x}");
    x * x + 1
}

#[test]
#[ignore = "helper: one array task, run by the test below in its own process"]
fn helper_array_task() {
    let shard = Shard::from_env().unwrap().expect("run as an array task");
    for x in shard.select(0..ITEMS) {
        assert_eq!(costly(x), x * x + 1);
    }
}

#[test]
fn array_tasks_fill_the_cache_and_the_gather_only_reads_it() {
    let _ = std::fs::remove_dir_all(DIR);
    let children: Vec<_> = (0..3)
        .map(|id| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "helper_array_task",
                    "--include-ignored",
                    "--nocapture",
                    "-q",
                ])
                .env("SLURM_ARRAY_TASK_ID", (10 + id).to_string())
                .env("SLURM_ARRAY_TASK_MIN", "10")
                .env("SLURM_ARRAY_TASK_COUNT", "3")
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut computed = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mine: BTreeSet<u64> = text
            .lines()
            .filter_map(|l| l.strip_prefix("computed "))
            .map(|n| n.parse().unwrap())
            .collect();
        computed.push(mine);
    }
    // The shares are disjoint and cover every item.
    let all: BTreeSet<u64> = computed.iter().flatten().copied().collect();
    assert_eq!(all, (0..ITEMS).collect());
    assert_eq!(
        computed.iter().map(BTreeSet::len).sum::<usize>(),
        ITEMS as usize
    );
    // The gather: every item from the cache, none computed again.
    let gathered: Vec<u64> = (0..ITEMS).map(costly).collect();
    assert_eq!(gathered, (0..ITEMS).map(|x| x * x + 1).collect::<Vec<_>>());
    assert_eq!(COMPUTED.load(Ordering::SeqCst), 0);
}

#[test]
fn kubernetes_indexed_jobs_need_the_count() {
    let vars = |index: Option<&str>, count: Option<&str>| {
        let (index, count) = (index.map(String::from), count.map(String::from));
        Shard::from_vars(move |name| match name {
            "JOB_COMPLETION_INDEX" => index.clone(),
            "PARJOB_SHARD_COUNT" => count.clone(),
            _ => None,
        })
    };
    assert_eq!(
        vars(Some("2"), Some("5")).unwrap(),
        Some(Shard { index: 2, count: 5 })
    );
    assert!(vars(Some("2"), None)
        .unwrap_err()
        .to_string()
        .contains("PARJOB_SHARD_COUNT"));
    assert!(vars(Some("5"), Some("5")).is_err());
    assert!(vars(Some("x"), Some("5")).is_err());
    assert_eq!(vars(None, None).unwrap(), None);
}
