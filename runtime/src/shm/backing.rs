//! What holds a segment's bytes: a `memfd` (the default), or an unnamed
//! file in a folder (`temp_folder`, or when `memfd_create` is refused).
//!
//! A file-backed segment is made with `O_TMPFILE`, so it has no name from
//! the start and the kernel frees it with its last descriptor, as a memfd.
//! Where a filesystem has no `O_TMPFILE`, the file is created mode 0600 in
//! a folder of this process (`parjob-<pid>`, mode 0700) and unlinked at
//! once; such folders of processes that died are swept when this process
//! makes its own. Files cannot be sealed, so a read-only segment's file is
//! reopened read-only and the writable descriptor dropped: no process then
//! holds it open for writing, and with no name no process can open it.
//!
//! joblib's search order picks the folder when memfd is refused:
//! `PARJOB_TEMP_FOLDER`, then `/dev/shm` when it is writable, then the
//! system's temporary folder.

use super::capacity::human;
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Where a run's segments are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Place {
    /// A `memfd`, falling back to [`default_folder`] when it is refused.
    Memfd,
    /// Unnamed files in this folder.
    Folder(PathBuf),
}

impl Place {
    /// The place for a run's `temp_folder`.
    pub(crate) fn for_folder(folder: Option<PathBuf>) -> Place {
        folder.map_or(Place::Memfd, Place::Folder)
    }
}

/// A new zero-filled file of `len` bytes, and whether it is a memfd
/// (which can be sealed). The error names the place and the knob.
pub(crate) fn new_file(len: usize, place: &Place) -> Result<(File, bool), String> {
    match place {
        Place::Memfd => match memfd(len)? {
            Some(file) => Ok((file, true)),
            None => Ok((folder_file(len, &default_folder())?, false)),
        },
        Place::Folder(dir) => Ok((folder_file(len, dir)?, false)),
    }
}

/// A memfd of `len` bytes; `None` when this system refuses memfds.
fn memfd(len: usize) -> Result<Option<File>, String> {
    super::capacity::check_capacity(len)?;
    // SAFETY: memfd_create with a static NUL-terminated name; the
    // descriptor it returns is ours alone.
    let fd = unsafe {
        libc::memfd_create(
            c"parjob-shm".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOSYS | libc::EPERM | libc::EACCES | libc::EINVAL) => Ok(None),
            _ => Err(format!("shared memory: memfd_create failed: {e}")),
        };
    }
    // SAFETY: `fd` was just returned by memfd_create and nothing else owns it.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.set_len(len as u64)
        .map_err(|e| no_room("memory (a memfd)", len, &e))?;
    Ok(Some(file))
}

/// `PARJOB_TEMP_FOLDER`, else `/dev/shm` when writable, else the system's
/// temporary folder.
pub(crate) fn default_folder() -> PathBuf {
    if let Some(dir) = std::env::var_os("PARJOB_TEMP_FOLDER").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let shm = Path::new("/dev/shm");
    let c_path = c"/dev/shm";
    // SAFETY: access with a NUL-terminated path; no memory is written.
    if shm.is_dir() && unsafe { libc::access(c_path.as_ptr(), libc::W_OK) } == 0 {
        return shm.to_path_buf();
    }
    std::env::temp_dir()
}

/// An unnamed, zero-filled file of `len` bytes in `dir`.
fn folder_file(len: usize, dir: &Path) -> Result<File, String> {
    let place = format!("temp_folder {}", dir.display());
    let free = usable_folder(dir).map_err(|e| format!("shared memory in {place}: {e}"))?;
    if len as u64 > free {
        return Err(format!(
            "shared memory in {place}: a {} segment does not fit in the {} free there; \
             nothing was written. Give a larger temp_folder (or PARJOB_TEMP_FOLDER), or set \
             max_nbytes = None to send arguments inline",
            human(len),
            human(free as usize)
        ));
    }
    let file = match fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .open(dir)
    {
        Ok(file) => file,
        Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR)) => {
            named_then_unlinked(dir).map_err(|e| format!("shared memory in {place}: {e}"))?
        }
        Err(e) => return Err(format!("shared memory in {place}: {e}")),
    };
    file.set_len(len as u64)
        .map_err(|e| no_room(&place, len, &e))?;
    reserve(&file, len).map_err(|e| no_room(&place, len, &e))?;
    Ok(file)
}

/// Gives the file's blocks now: a sparse file on a filesystem that fills
/// up meanwhile would fault (SIGBUS) on the first write through a
/// mapping, where this fails with `ENOSPC` while the caller can still say
/// so. glibc emulates it where the filesystem has no `fallocate`.
fn reserve(file: &File, len: usize) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    // SAFETY: posix_fallocate on our own descriptor; no memory is passed.
    match unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len as libc::off_t) } {
        0 => Ok(()),
        code => Err(io::Error::from_raw_os_error(code)),
    }
}

/// A file made in this process's own folder of `dir` and unlinked at once,
/// for filesystems without `O_TMPFILE`.
fn named_then_unlinked(dir: &Path) -> io::Result<File> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let ours = dir.join(format!("parjob-{}", std::process::id()));
    if !ours.is_dir() {
        sweep_dead(dir);
        fs::DirBuilder::new().mode(0o700).create(&ours)?;
    }
    let path = ours.join(format!("seg-{}", NEXT.fetch_add(1, Ordering::Relaxed)));
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(&path)?;
    fs::remove_file(&path)?;
    Ok(file)
}

/// Removes the `parjob-<pid>` folders of `dir` whose process is gone.
fn sweep_dead(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("parjob-"))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only asks whether the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// The bytes free in `dir`, once it is known to be a folder this process
/// can write in, on a writable filesystem: each refusal says which.
fn usable_folder(dir: &Path) -> io::Result<u64> {
    let meta = fs::metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::other(
            "it is not a directory; give a folder as temp_folder (or PARJOB_TEMP_FOLDER)",
        ));
    }
    let (free, read_only) = free_bytes(dir)?;
    if read_only {
        return Err(io::Error::other(
            "it is on a read-only filesystem; give a writable temp_folder (or PARJOB_TEMP_FOLDER)",
        ));
    }
    let c_dir = c_path(dir)?;
    // SAFETY: access with a NUL-terminated path; no memory is written.
    if unsafe { libc::access(c_dir.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
        return Err(io::Error::other(format!(
            "this process cannot create files there ({})",
            io::Error::last_os_error()
        )));
    }
    Ok(free)
}

fn c_path(dir: &Path) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::other("a folder name with a NUL byte"))
}

/// The bytes free to this user in `dir`'s filesystem, and whether it is
/// mounted read-only.
fn free_bytes(dir: &Path) -> io::Result<(u64, bool)> {
    let c_dir = c_path(dir)?;
    // SAFETY: a zeroed statvfs is a valid out-parameter.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs writes into `stat` and reads the NUL-terminated path.
    if unsafe { libc::statvfs(c_dir.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let read_only = stat.f_flag & libc::ST_RDONLY != 0;
    Ok((stat.f_bavail as u64 * stat.f_frsize as u64, read_only))
}

/// The same file, opened read-only through `/proc/self/fd`: what a
/// read-only file-backed segment keeps and passes on.
pub(crate) fn reopen_read_only(file: &File) -> io::Result<File> {
    let path = format!("/proc/self/fd/{}", file.as_raw_fd());
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

fn no_room(place: &str, len: usize, e: &io::Error) -> String {
    format!(
        "shared memory in {place}: writing a {} segment failed ({e}); it was freed. \
         Free room there, give another temp_folder (or PARJOB_TEMP_FOLDER), or set \
         max_nbytes = None to send arguments inline",
        human(len)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileExt, MetadataExt};

    #[test]
    fn a_folder_file_is_unnamed_private_and_zeroed() {
        let dir = std::env::temp_dir().join(format!("parjob-backing-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = folder_file(8192, &dir).unwrap();
        let meta = file.metadata().unwrap();
        assert_eq!(
            (meta.len(), meta.nlink(), meta.mode() & 0o777),
            (8192, 0, 0o600)
        );
        let mut byte = [1u8];
        file.read_exact_at(&mut byte, 4000).unwrap();
        assert_eq!(byte, [0]);
        let ro = reopen_read_only(&file).unwrap();
        assert!(
            ro.write_at(&[1], 0).is_err(),
            "the reopened file is writable"
        );
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0, "a name was left");
        fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn named_files_are_unlinked_and_dead_owners_swept() {
        let dir = std::env::temp_dir().join(format!("parjob-named-{}", std::process::id()));
        fs::create_dir_all(dir.join("parjob-999999999")).unwrap();
        let file = named_then_unlinked(&dir).unwrap();
        assert_eq!(file.metadata().unwrap().nlink(), 0);
        let ours = dir.join(format!("parjob-{}", std::process::id()));
        let mode = fs::metadata(&ours).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert!(
            !dir.join("parjob-999999999").exists(),
            "a dead owner's folder stayed"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_or_a_missing_folder_is_refused_for_what_it_is() {
        let file = std::env::temp_dir().join(format!("parjob-not-a-dir-{}", std::process::id()));
        fs::write(&file, b"").unwrap();
        let err = folder_file(4096, &file).unwrap_err();
        fs::remove_file(&file).unwrap();
        assert!(err.contains("not a directory"), "{err}");
        let err = folder_file(4096, &file).unwrap_err();
        assert!(err.contains("No such file or directory"), "{err}");
    }

    #[test]
    fn a_folder_file_has_its_blocks_from_the_start() {
        let dir = std::env::temp_dir().join(format!("parjob-reserved-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = folder_file(1 << 20, &dir).unwrap();
        let blocks = file.metadata().unwrap().blocks();
        fs::remove_dir(&dir).unwrap();
        assert!(blocks * 512 >= 1 << 20, "{blocks} blocks: a sparse file");
    }

    #[test]
    fn a_segment_larger_than_the_folder_is_refused_by_name() {
        let dir = std::env::temp_dir();
        let (free, _) = free_bytes(&dir).unwrap();
        let err = folder_file(free as usize + (1 << 30), &dir).unwrap_err();
        assert!(
            err.contains("temp_folder") && err.contains("max_nbytes"),
            "{err}"
        );
    }
}
