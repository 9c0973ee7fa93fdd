//! How much memory a segment may take: the kernel's `MemAvailable` and
//! the cgroup's limits (v2 and v1) less their usage, read from procfs and
//! cgroupfs only, which never block; and sizes written for messages.

use std::path::Path;

/// Refuses a segment larger than the memory this process can still use:
/// the kernel's `MemAvailable` and the cgroup's `memory.max` less its
/// `memory.current`. Only procfs and cgroupfs are read: neither blocks.
pub(crate) fn check_capacity(len: usize) -> Result<(), String> {
    let Some((available, source)) = available_memory() else {
        return Ok(());
    };
    if len as u64 <= available {
        return Ok(());
    }
    Err(format!(
        "shared memory: a {} segment does not fit in the {} of memory left ({source}); \
         nothing was allocated. Free memory or raise the limit, or set \
         max_nbytes = None to send arguments inline",
        human(len),
        human(available as usize)
    ))
}

/// The memory left to this process, and where the figure came from.
pub(crate) fn available_memory() -> Option<(u64, &'static str)> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let host = meminfo.as_deref().and_then(|m| {
        let line = m.lines().find(|l| l.starts_with("MemAvailable:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    });
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|c| cgroup_room(&c, Path::new("/sys/fs/cgroup")));
    match (host, cgroup) {
        (Some(h), Some((c, source))) if c < h => Some((c, source)),
        (Some(h), _) => Some((h, "MemAvailable in /proc/meminfo")),
        (None, Some(c)) => Some(c),
        (None, None) => None,
    }
}

/// The room left under the tightest memory limit of this process's
/// cgroup and its ancestors, from `/proc/self/cgroup`'s text and the
/// cgroup mount: v2's `memory.max - memory.current`, or v1's
/// `memory.limit_in_bytes - memory.usage_in_bytes` (v1 is what many
/// clusters and containers still run). `None` when no level has a limit.
fn cgroup_room(proc_cgroup: &str, mount: &Path) -> Option<(u64, &'static str)> {
    let v2 = proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|path| {
            let levels = levels(&mount.join(path.trim_start_matches('/')), mount);
            let room = levels
                .iter()
                .filter_map(|dir| room_at(dir, "memory.max", "memory.current"));
            (room.min(), "the cgroup's memory.max")
        });
    let v1 = proc_cgroup
        .lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers
                .split(',')
                .any(|c| c == "memory")
                .then_some(path)
        })
        .map(|path| {
            let root = mount.join("memory");
            let levels = levels(&root.join(path.trim_start_matches('/')), &root);
            let room = levels
                .iter()
                .filter_map(|dir| room_at(dir, "memory.limit_in_bytes", "memory.usage_in_bytes"));
            (room.min(), "the cgroup's memory.limit_in_bytes (v1)")
        });
    [v2, v1]
        .into_iter()
        .flatten()
        .filter_map(|(room, source)| Some((room?, source)))
        .min_by_key(|&(room, _)| room)
}

/// `leaf` and each folder above it up to `root`, which may be the leaf
/// itself (a container sees its own cgroup at the mount's root).
fn levels(leaf: &Path, root: &Path) -> Vec<std::path::PathBuf> {
    leaf.ancestors()
        .take_while(|dir| dir.starts_with(root))
        .map(Path::to_path_buf)
        .collect()
}

/// `limit - usage` in `dir`, when it has a limit ("max", or v1's huge
/// page-rounded maximum, is none).
fn room_at(dir: &Path, limit: &str, usage: &str) -> Option<u64> {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let limit: u64 = read(limit)?.trim().parse().ok()?;
    if limit >= 1 << 62 {
        return None;
    }
    let usage: u64 = read(usage)?.trim().parse().ok()?;
    Some(limit.saturating_sub(usage))
}

/// A size for messages: `80.0 MB`.
pub(crate) fn human(bytes: usize) -> String {
    const UNITS: [&str; 5] = ["bytes", "KB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake cgroup mount with `files` ((folder, name, text)) in it.
    fn fake_mount(name: &str, files: &[(&str, &str, &str)]) -> std::path::PathBuf {
        let mount = std::env::temp_dir().join(format!("parjob-cg-{name}-{}", std::process::id()));
        for (dir, file, text) in files {
            std::fs::create_dir_all(mount.join(dir)).unwrap();
            std::fs::write(mount.join(dir).join(file), text).unwrap();
        }
        mount
    }

    #[test]
    fn a_v1_memory_limit_counts_at_the_leaf_and_above() {
        let proc_cgroup = "4:memory:/jobs/job7\n3:cpuset:/\n0::/\n";
        let mount = fake_mount(
            "v1",
            &[
                ("memory/jobs", "memory.limit_in_bytes", "300000000\n"),
                ("memory/jobs", "memory.usage_in_bytes", "100000000\n"),
                (
                    "memory/jobs/job7",
                    "memory.limit_in_bytes",
                    "9223372036854771712\n",
                ),
                ("memory/jobs/job7", "memory.usage_in_bytes", "50000000\n"),
            ],
        );
        let room = cgroup_room(proc_cgroup, &mount);
        std::fs::remove_dir_all(&mount).unwrap();
        let (bytes, source) = room.expect("the parent's limit is seen");
        assert_eq!(bytes, 200_000_000);
        assert!(source.contains("limit_in_bytes"), "{source}");
    }

    #[test]
    fn a_v2_limit_wins_when_tighter_and_no_limit_is_none() {
        let mount = fake_mount(
            "v2",
            &[
                ("a", "memory.max", "1000\n"),
                ("a", "memory.current", "400\n"),
                ("a/b", "memory.max", "max\n"),
                ("a/b", "memory.current", "300\n"),
            ],
        );
        let room = cgroup_room("0::/a/b\n", &mount);
        let none = cgroup_room("0::/elsewhere\n", &mount);
        std::fs::remove_dir_all(&mount).unwrap();
        assert_eq!(room, Some((600, "the cgroup's memory.max")));
        assert_eq!(none, None);
    }

    #[test]
    fn a_segment_larger_than_memory_is_refused_before_allocating() {
        let (available, _) = available_memory().expect("this machine reports its memory");
        let err = check_capacity(available as usize + (1 << 30)).unwrap_err();
        assert!(
            err.contains("max_nbytes") && err.contains("memory"),
            "{err}"
        );
        assert_eq!(human(80_000_000), "80.0 MB");
    }
}
