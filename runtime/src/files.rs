//! Files that may be hostile, and files written so no reader sees half.
//!
//! Both `persist` (dump and load) and `memo` (the cache) use these:
//!
//! - [`open_regular`] opens without blocking (a FIFO with no writer would
//!   block `open` forever) and refuses anything that is not a regular
//!   file, following symlinks: a FIFO, `/dev/zero`, a socket or a
//!   directory is an error before a byte is read.
//! - [`write_atomic`] writes through a temporary file in the target's
//!   directory and renames it into place. The temporary's name carries the
//!   host, the writer's pid and a random part (as NFS-safe writers name
//!   theirs), so [`sweep_dead_temps`] can remove the leftovers of writers
//!   that died, and only those. An existing file's permissions are kept.
//!   A symlink is followed for a file the user named ([`Links::Follow`],
//!   `dump`), and replaced for a file parjob names itself
//!   ([`Links::Replace`], the cache): a link planted in a cache directory
//!   must never redirect a write elsewhere. A FIFO, device or socket at
//!   the end of a user's path is refused; in parjob's own directories it
//!   is replaced like any damaged entry.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The marker in every temporary file's name.
const TEMP_MARKER: &str = ".parjob-tmp.";

/// Opens `path` for reading if it is a regular file (after symlinks), and
/// returns it with its size. Never blocks: a FIFO is refused, not waited on.
pub(crate) fn open_regular(path: &Path) -> io::Result<(File, u64)> {
    open_regular_with_metadata(path).map(|(file, meta)| (file, meta.len()))
}

/// [`open_regular`], with the file's metadata (its mtime, say) from the
/// same `fstat`.
///
/// The descriptor keeps `O_NONBLOCK`, which Linux ignores for regular
/// files; it never leaves parjob, so clearing it would only cost two
/// `fcntl`s a read (a cache hit is a handful of system calls).
pub(crate) fn open_regular_with_metadata(path: &Path) -> io::Result<(File, fs::Metadata)> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = regular_metadata(&file, || path.to_path_buf())?;
    Ok((file, meta))
}

/// The metadata of `file`, opened from `path`, if it is a regular file;
/// else an `InvalidInput` error naming what it is.
pub(crate) fn regular_metadata(
    file: &File,
    path: impl FnOnce() -> PathBuf,
) -> io::Result<fs::Metadata> {
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is {}, not a regular file: only regular files are read",
                path().display(),
                kind_of(&meta.file_type())
            ),
        ));
    }
    Ok(meta)
}

/// Reads a small regular file whole: an error for anything that is not a
/// regular file or holds more than `max` bytes.
pub(crate) fn read_small(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let (file, size) = open_regular(path)?;
    if size > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} holds {size} bytes, more than {max}", path.display()),
        ));
    }
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut io::Read::take(file, max), &mut bytes)?;
    Ok(bytes)
}

fn kind_of(t: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

/// Where a write to `path` lands: the file a symlink chain points to (so
/// writing through a link updates its target, as `>` does in a shell), or
/// `path` itself.
pub(crate) fn write_target(path: &Path) -> PathBuf {
    let mut target = path.to_path_buf();
    for _ in 0..40 {
        match fs::read_link(&target) {
            Ok(next) => {
                target = match target.parent() {
                    Some(dir) if next.is_relative() => dir.join(next),
                    _ => next,
                }
            }
            Err(_) => return target,
        }
    }
    target
}

/// This host's first name label, read once.
fn host_name() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(read_host_name)
}

fn read_host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = if rc == 0 {
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    };
    // Dots separate the name's fields: keep the host's first label only.
    let name: String = name
        .split('.')
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // std's RandomState is seeded from the OS per process; the counter
    // makes every draw in this process distinct.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

/// A temporary name beside `target`:
/// `.<name>.parjob-tmp.<host>.<pid>.<random>`.
pub(crate) fn temp_path(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(
        ".{name}{TEMP_MARKER}{}.{}.{:016x}",
        host_name(),
        std::process::id(),
        random_u64()
    ))
}

/// The writer's host and pid, read back from a temporary file's name.
fn temp_owner(name: &OsString) -> Option<(String, u32)> {
    let name = name.to_str()?;
    let (_, fields) = name.rsplit_once(TEMP_MARKER)?;
    let mut parts = fields.split('.');
    let host = parts.next()?.to_string();
    let pid = parts.next()?.parse().ok()?;
    parts.next()?;
    Some((host, pid))
}

fn pid_is_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Removes the temporary files in `dir` left by writers on this host whose
/// process has died. Each directory is swept once per process (the first
/// time this process writes there); other hosts' temporaries are left alone.
pub(crate) fn sweep_dead_temps(dir: &Path) {
    static SWEPT: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
    {
        let mut swept = SWEPT.lock().unwrap_or_else(|p| p.into_inner());
        if !swept
            .get_or_insert_with(HashSet::new)
            .insert(dir.to_path_buf())
        {
            return;
        }
    }
    sweep_now(dir);
}

fn sweep_now(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let host = host_name();
    for entry in entries.flatten() {
        let Some((owner_host, pid)) = temp_owner(&entry.file_name()) else {
            continue;
        };
        if owner_host == host && !pid_is_alive(pid) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// What [`write_atomic`] does with a symlink at the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Links {
    /// Write to the file it points to; the link stays (a path the user named).
    Follow,
    /// Replace the link itself (a path parjob names, in its own directory).
    Replace,
}

/// Writes a file at `path` atomically: `write` fills a new temporary file
/// beside the target, which is then renamed over it. On any failure the
/// temporary file is removed and whatever was at `path` is left as it was.
/// An existing regular file's mode is kept; a special file at the end of a
/// followed path is refused.
pub(crate) fn write_atomic<E: From<io::Error>>(
    path: &Path,
    links: Links,
    write: impl FnOnce(&mut File) -> Result<(), E>,
) -> Result<(), E> {
    let target = match links {
        Links::Follow => write_target(path),
        Links::Replace => path.to_path_buf(),
    };
    let existing = fs::symlink_metadata(&target).ok();
    let ft = existing.as_ref().map(fs::Metadata::file_type);
    // Renaming over a special file replaces only its directory entry, which
    // is right in parjob's own directories, but a user's path that leads to
    // a device or a FIFO is not a file to replace.
    let special = ft.filter(|t| !t.is_file() && !t.is_symlink() && links == Links::Follow);
    if let Some(ft) = special {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is {}, not a regular file: refusing to replace it",
                target.display(),
                kind_of(&ft)
            ),
        )
        .into());
    }
    if let Some(dir) = target.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        sweep_dead_temps(dir);
    }
    let temp = temp_path(&target);
    let mode = existing
        .filter(fs::Metadata::is_file)
        .map(|m| m.permissions().mode());
    let written = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        if let Some(mode) = mode {
            file.set_permissions(fs::Permissions::from_mode(mode & 0o7777))?;
        }
        write(&mut file)?;
        fs::rename(&temp, &target)?;
        Ok(())
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("parjob-files-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn special_files_are_refused_without_blocking() {
        let dir = scratch("special");
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        for path in [fifo.as_path(), Path::new("/dev/zero"), dir.as_path()] {
            let e = open_regular(path).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
            assert!(e.to_string().contains("not a regular file"), "{e}");
        }
        let link = dir.join("link");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert!(open_regular(&link)
            .unwrap_err()
            .to_string()
            .contains("character device"));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn temps_of_dead_writers_on_this_host_are_swept_and_no_others() {
        let dir = scratch("sweep");
        let host = host_name();
        // A pid far above pid_max is never alive.
        let dead = dir.join(format!(
            ".a.out{TEMP_MARKER}{host}.999999999.0123456789abcdef"
        ));
        let mine = temp_path(&dir.join("b.out"));
        let elsewhere = dir.join(format!(".c.out{TEMP_MARKER}otherhost.999999999.00"));
        let unrelated = dir.join("d.out");
        for p in [&dead, &mine, &elsewhere, &unrelated] {
            fs::write(p, b"x").unwrap();
        }
        sweep_now(&dir);
        assert!(!dead.exists());
        assert!(mine.exists() && elsewhere.exists() && unrelated.exists());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn atomic_writes_keep_the_mode_and_follow_symlinks() {
        let dir = scratch("atomic");
        let real = dir.join("real");
        fs::write(&real, b"old").unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.join("link");
        std::os::unix::fs::symlink("real", &link).unwrap();
        write_atomic::<io::Error>(&link, Links::Follow, |f| io::Write::write_all(f, b"new"))
            .unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(&real).unwrap(), b"new");
        assert_eq!(
            fs::metadata(&real).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // A failed write leaves the old contents and no temporary file.
        let failed =
            write_atomic::<io::Error>(&real, Links::Follow, |_| Err(io::Error::other("disk full")));
        assert!(failed.is_err());
        assert_eq!(fs::read(&real).unwrap(), b"new");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 2);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn parjob_named_paths_replace_links_and_nothing_replaces_a_device() {
        let dir = scratch("replace");
        let victim = dir.join("victim");
        fs::write(&victim, b"keep me").unwrap();
        let entry = dir.join("entry");
        std::os::unix::fs::symlink(&victim, &entry).unwrap();
        write_atomic::<io::Error>(&entry, Links::Replace, |f| {
            io::Write::write_all(f, b"cache")
        })
        .unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"keep me");
        assert!(fs::symlink_metadata(&entry).unwrap().is_file());
        assert_eq!(fs::read(&entry).unwrap(), b"cache");
        // A link to a device: replaced when parjob names the path, refused
        // when the user's path leads to the device.
        let to_null = dir.join("to-null");
        std::os::unix::fs::symlink("/dev/null", &to_null).unwrap();
        let refused = write_atomic::<io::Error>(&to_null, Links::Follow, |_| Ok(()));
        assert!(refused
            .unwrap_err()
            .to_string()
            .contains("character device"));
        write_atomic::<io::Error>(&to_null, Links::Replace, |_| Ok(())).unwrap();
        assert!(fs::symlink_metadata(&to_null).unwrap().is_file());
        assert!(fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device());
        fs::remove_dir_all(dir).unwrap();
    }
}
