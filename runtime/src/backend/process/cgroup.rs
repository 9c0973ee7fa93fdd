//! A memory cgroup per worker process, where this process may make one:
//! the kernel then holds each worker to `max_worker_memory` exactly, and
//! its OOM counter says when it stopped one.
//!
//! Where the groups go is found once: the memory controller's hierarchy
//! and this process's group in it, from `/proc/self/cgroup` and
//! `/proc/self/mountinfo`. On the v1 memory controller a child group of
//! our own is made with `memory.limit_in_bytes`, and its kills are read
//! from `memory.oom_control`. On cgroup v2 the memory controller must
//! already be enabled for our group's children (`cgroup.subtree_control`
//! lists it, which a delegated tree allows); the child gets `memory.max`,
//! and its kills are read from `memory.events`. A probe group is made and
//! removed first; when anything fails, there is no group, and the memory
//! watch stops a worker over the limit itself (`memory.rs`).
//! `PARJOB_MEMORY_WATCH=statm` chooses the watch alone.
//!
//! Groups are named `parjob-<parent pid>-<worker pid>`, and removed when
//! their worker is gone; groups of a parent that died are removed the
//! next time a parjob program looks for its place.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

/// Environment variable choosing how the limit is held: `cgroup` (the
/// default: a cgroup where one can be made, else the watch) or `statm`.
pub(crate) const ENV_MEMORY_WATCH: &str = "PARJOB_MEMORY_WATCH";

/// Which cgroup interface the groups use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Version {
    V1,
    V2,
}

impl Version {
    fn limit_file(self) -> &'static str {
        match self {
            Version::V1 => "memory.limit_in_bytes",
            Version::V2 => "memory.max",
        }
    }

    fn unlimited(self) -> &'static str {
        match self {
            Version::V1 => "-1",
            Version::V2 => "max",
        }
    }

    fn kills_file(self) -> &'static str {
        match self {
            Version::V1 => "memory.oom_control",
            Version::V2 => "memory.events",
        }
    }

    fn peak_file(self) -> &'static str {
        match self {
            Version::V1 => "memory.max_usage_in_bytes",
            Version::V2 => "memory.peak",
        }
    }
}

/// The folder worker groups are made in, and its interface; `None` where
/// this process may not make them.
fn home() -> Option<&'static (PathBuf, Version)> {
    static HOME: OnceLock<Option<(PathBuf, Version)>> = OnceLock::new();
    HOME.get_or_init(|| {
        let chosen = std::env::var(ENV_MEMORY_WATCH).unwrap_or_default();
        if chosen.trim().eq_ignore_ascii_case("statm") {
            return None;
        }
        let cgroups = fs::read_to_string("/proc/self/cgroup").ok()?;
        let mounts = fs::read_to_string("/proc/self/mountinfo").ok()?;
        let (dir, version) = locate(&cgroups, &mounts)?;
        if version == Version::V2 {
            let enabled = fs::read_to_string(dir.join("cgroup.subtree_control")).ok()?;
            if !enabled.split_whitespace().any(|c| c == "memory") {
                return None;
            }
        }
        remove_orphans(&dir);
        let probe = dir.join(format!("parjob-{}-probe", std::process::id()));
        fs::create_dir(&probe).ok()?;
        let usable = probe.join(version.limit_file()).exists();
        let _ = fs::remove_dir(&probe);
        usable.then_some((dir, version))
    })
    .as_ref()
}

/// The worker groups of parjob parents in this process's memory cgroup
/// (none where it may not make them): for tests of their cleanup.
pub fn groups() -> Vec<PathBuf> {
    let Some((home, _)) = home() else {
        return Vec::new();
    };
    let Ok(entries) = fs::read_dir(home) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("parjob-"))
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

/// How `max_worker_memory` is held in this process, in words.
pub(super) fn mechanism() -> &'static str {
    match home() {
        Some((_, Version::V1)) => "a memory cgroup per worker (cgroup v1, memory.limit_in_bytes)",
        Some((_, Version::V2)) => "a memory cgroup per worker (cgroup v2, memory.max)",
        None => "the memory watch (statm read every 20 ms)",
    }
}

/// This process's memory cgroup folder and its interface, from the texts
/// of `/proc/self/cgroup` and `/proc/self/mountinfo`: the v1 memory
/// controller when it is mounted, else cgroup v2.
pub(super) fn locate(cgroups: &str, mountinfo: &str) -> Option<(PathBuf, Version)> {
    let mut v2_path = None;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.split(',').any(|c| c == "memory") {
            let mount = mount_of(mountinfo, |fs, opts| {
                fs == "cgroup" && opts.split(',').any(|o| o == "memory")
            })?;
            return Some((join(&mount, path), Version::V1));
        }
        if controllers.is_empty() {
            v2_path = Some(path.to_string());
        }
    }
    let path = v2_path?;
    let mount = mount_of(mountinfo, |fs, _| fs == "cgroup2")?;
    Some((join(&mount, &path), Version::V2))
}

/// The mount point and root of the first mount whose filesystem type and
/// super options `pick` accepts.
fn mount_of(mountinfo: &str, pick: impl Fn(&str, &str) -> bool) -> Option<(PathBuf, String)> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut right = right.split_whitespace();
        let (fstype, _source, opts) = (right.next()?, right.next()?, right.next()?);
        if !pick(fstype, opts) {
            return None;
        }
        let mut left = left.split_whitespace().skip(3);
        let (root, point) = (left.next()?, left.next()?);
        Some((PathBuf::from(point), root.to_string()))
    })
}

/// The folder of group `path` under a mount at `point` whose root is `root`.
fn join((point, root): &(PathBuf, String), path: &str) -> PathBuf {
    let inside = path.strip_prefix(root.as_str()).unwrap_or(path);
    point.join(inside.trim_start_matches('/'))
}

/// Removes the groups of parjob parents that are gone (each empty: their
/// workers died with them).
fn remove_orphans(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("parjob-")) else {
            continue;
        };
        let parent = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if parent.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
            let _ = fs::remove_dir(entry.path());
        }
    }
}

/// At exit, the groups of workers still alive (a pool kept for the whole
/// program): their workers would die with this process anyway, so they
/// are stopped and reaped now, and their groups removed.
extern "C" fn remove_ours_at_exit() {
    let Some((home, _)) = home() else {
        return;
    };
    let ours = format!("parjob-{}-", std::process::id());
    let left = std::mem::take(&mut *LEFT.lock().unwrap_or_else(PoisonError::into_inner));
    left.into_iter().for_each(remove_soon);
    let Ok(entries) = fs::read_dir(home) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(&ours) {
            continue;
        }
        let procs = fs::read_to_string(entry.path().join("cgroup.procs")).unwrap_or_default();
        for pid in procs
            .lines()
            .filter_map(|p| p.trim().parse::<libc::pid_t>().ok())
        {
            // SAFETY: a worker this process started (only they are put in
            // its groups), killed and then reaped here, at exit.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
        remove_soon(entry.path());
    }
}

/// Groups whose removal the kernel refused for now (a worker it killed
/// for memory is still being torn down): tried again each round of the
/// memory watch, and at exit.
static LEFT: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Tries again to remove the groups the kernel refused to remove before.
pub(super) fn remove_left() {
    let mut left = LEFT.lock().unwrap_or_else(PoisonError::into_inner);
    left.retain(|dir| fs::remove_dir(dir).is_err() && dir.exists());
}

/// Removes group `dir`, waiting up to 100 ms for the kernel to let go of
/// it (at exit only: nothing else waits then).
fn remove_soon(dir: PathBuf) {
    for _ in 0..100 {
        if fs::remove_dir(&dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// One worker's memory cgroup; removed when dropped (its worker is gone).
pub(super) struct WorkerGroup {
    dir: PathBuf,
    version: Version,
}

impl WorkerGroup {
    /// Moves worker `pid` into a group of its own, where this process may
    /// make one.
    pub(super) fn create(pid: u32) -> Option<WorkerGroup> {
        let (home, version) = home()?;
        static AT_EXIT: OnceLock<()> = OnceLock::new();
        AT_EXIT.get_or_init(|| {
            // SAFETY: atexit with a function that lives as long as the program.
            unsafe { libc::atexit(remove_ours_at_exit) };
        });
        let dir = home.join(format!("parjob-{}-{pid}", std::process::id()));
        fs::create_dir(&dir).ok()?;
        let group = WorkerGroup {
            dir,
            version: *version,
        };
        fs::write(group.dir.join("cgroup.procs"), pid.to_string()).ok()?;
        Some(group)
    }

    /// Holds the worker to `limit` bytes (`None`: no limit). False when
    /// the kernel refused it.
    pub(super) fn set_limit(&self, limit: Option<u64>) -> bool {
        let value = limit.map_or_else(|| self.version.unlimited().to_string(), |l| l.to_string());
        fs::write(self.dir.join(self.version.limit_file()), value).is_ok()
    }

    /// How many processes the kernel's OOM killer has stopped in the group.
    pub(super) fn oom_kills(&self) -> u64 {
        let text = fs::read_to_string(self.dir.join(self.version.kills_file())).unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The most memory the group held, by the kernel's count.
    pub(super) fn peak(&self) -> Option<u64> {
        fs::read_to_string(self.dir.join(self.version.peak_file()))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for WorkerGroup {
    fn drop(&mut self) {
        if fs::remove_dir(&self.dir).is_err() && self.dir.exists() {
            let dir = std::mem::take(&mut self.dir);
            LEFT.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTS: &str = "\
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
29 23 0:26 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";

    #[test]
    fn the_v1_memory_controller_is_found_under_its_mount() {
        let cgroups = "9:name=systemd:/\n4:memory:/process_api/abc\n0::/";
        assert_eq!(
            locate(cgroups, MOUNTS),
            Some((
                PathBuf::from("/sys/fs/cgroup/memory/process_api/abc"),
                Version::V1
            ))
        );
    }

    #[test]
    fn without_v1_memory_the_v2_group_is_used() {
        let cgroups = "0::/user.slice/app.scope";
        assert_eq!(
            locate(cgroups, MOUNTS),
            Some((
                PathBuf::from("/sys/fs/cgroup/unified/user.slice/app.scope"),
                Version::V2
            ))
        );
        let bind = "29 23 0:26 /user.slice /mnt/cg rw - cgroup2 cgroup2 rw";
        assert_eq!(
            locate(cgroups, bind),
            Some((PathBuf::from("/mnt/cg/app.scope"), Version::V2))
        );
        assert_eq!(locate(cgroups, "nothing mounted"), None);
    }
}
