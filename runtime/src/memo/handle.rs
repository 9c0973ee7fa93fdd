//! An open handle on a `#[memoize]` function's directory, so that a hit
//! opens its entry by name (`openat`) instead of walking the directory's
//! whole path again: the walk was a tenth of a hit.
//!
//! The handle only ever speeds up finding an entry; it never decides that
//! one is missing. An entry the handle does not find is looked up by path,
//! and when the path finds it (the directory was removed and made again,
//! say by `clear` of a whole cache), the handle is opened anew on the
//! path. Writes always go by path. A directory that is moved away while
//! the program runs keeps being read through the handle for the entries
//! it still holds, which are results of the same code and arguments.

use super::key::EntryName;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// A function directory's handle, opened on first use.
#[derive(Default)]
pub(crate) struct DirHandle(Mutex<Option<Arc<OwnedFd>>>);

impl DirHandle {
    /// Opens the entry `name` in `dir` (read-only, non-blocking,
    /// following a symlink as a path open would): through the handle when
    /// it finds it, else by path, after which the handle is (re)opened on
    /// `dir`.
    pub(crate) fn open(&self, dir: &Path, name: &EntryName) -> io::Result<File> {
        let held = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(handle) = held {
            match open_at(&handle, name.as_c_str()) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                found => return found,
            }
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(dir.join(name.as_str()))?;
        self.reopen(dir);
        Ok(file)
    }

    /// Opens the handle on `dir` (`O_PATH`: it reads nothing itself).
    fn reopen(&self, dir: &Path) {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let Ok(c_dir) = CString::new(dir.as_os_str().as_bytes()) else {
            return;
        };
        let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
        // SAFETY: `c_dir` is a valid NUL-terminated string for the call.
        let fd = unsafe { libc::open(c_dir.as_ptr(), flags) };
        if fd >= 0 {
            // SAFETY: `open` just returned `fd`, which nothing else owns.
            let fd = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
            *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(fd);
        }
    }
}

/// `openat(dir, name)`, read-only and non-blocking. The old handle stays
/// open for as long as this call holds its `Arc`, so a concurrent
/// [`DirHandle::reopen`] cannot close the descriptor under it.
fn open_at(dir: &OwnedFd, name: &CStr) -> io::Result<File> {
    let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC;
    // SAFETY: `dir` is an open descriptor and `name` a valid
    // NUL-terminated string, both for the duration of the call.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `openat` just returned `fd`, which nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_directory_made_again_is_found_by_path_and_the_handle_follows() {
        let dir = std::env::temp_dir().join(format!("parjob-handle-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let name = EntryName::output(&[7; 32]);
        let other = EntryName::output(&[8; 32]);
        let entry = dir.join(name.as_str());
        std::fs::write(&entry, b"first").unwrap();
        let handle = DirHandle::default();
        let read = |handle: &DirHandle| {
            let mut text = String::new();
            let mut file = handle.open(&dir, &name).unwrap();
            file.read_to_string(&mut text).unwrap();
            text
        };
        assert_eq!(read(&handle), "first");
        assert!(handle.0.lock().unwrap().is_some(), "the handle is open");
        // Removed and made again: the old handle finds nothing, the path
        // finds the new entry.
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            handle.open(&dir, &name).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&entry, b"second").unwrap();
        assert_eq!(read(&handle), "second");
        std::fs::write(dir.join(other.as_str()), b"third").unwrap();
        let mut text = String::new();
        let held = handle.0.lock().unwrap().clone().unwrap();
        open_at(&held, other.as_c_str())
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "third", "the handle is on the new directory");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
