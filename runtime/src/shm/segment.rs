//! A sealed `memfd`: the backing store of shared memory.
//!
//! A segment is made by `memfd_create(MFD_CLOEXEC | MFD_ALLOW_SEALING)`,
//! sized, filled with `pwrite`, then sealed against shrinking, growing,
//! writing and further seals, and only then mapped, read-only. It has no
//! name in any filesystem, so the kernel frees it when its last descriptor
//! and its last mapping close, however their holders ended: a SIGKILL of
//! every process leaves nothing behind, and nothing is ever written to
//! `/dev/shm`. Its size is bounded by memory and the cgroup's limit, not
//! by the size of `/dev/shm` (Docker's 64 MB default does not apply).

use super::backing::{self, Place};
use super::capacity::human;
use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

/// Every seal: no shrinking, growing or writing, and no change of seals.
pub(crate) const SEALS: i32 =
    libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
/// The seals of an output buffer (`SharedSliceMut`): its size is fixed, so
/// no mapping of it can fault, but its bytes can be written.
pub(crate) const SIZE_SEALS: i32 = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static CREATED: AtomicU64 = AtomicU64::new(0);

/// How many segments this process has created (a test hook: one buffer
/// passed to many jobs must make one segment).
pub fn segments_created() -> u64 {
    CREATED.load(Ordering::Relaxed)
}

/// A sealed `memfd` and its mapping: read-only and sealed against writes
/// (shared inputs), or writable with a fixed size (output buffers).
pub(crate) struct Segment {
    id: u64,
    file: File,
    /// The mapping, or a dangling pointer for an empty segment.
    ptr: NonNull<u8>,
    len: usize,
    writable: bool,
}

// SAFETY: a read-only segment is sealed against writes everywhere
// (`F_SEAL_WRITE` refuses every writable shared mapping and every
// `write`), so its bytes never change and any thread may read them. A
// writable segment hands out only a raw pointer; `SharedSliceMut` makes
// its chunks disjoint before anyone writes through it.
unsafe impl Send for Segment {}
// SAFETY: as above; `&Segment` hands out `&[u8]` only of a read-only one.
unsafe impl Sync for Segment {}

impl Segment {
    /// A new segment in a memfd holding a copy of `bytes`, sealed against
    /// every change. The error names where the memory was to come from,
    /// and the knob that avoids it.
    pub(crate) fn create(bytes: &[u8]) -> Result<Segment, String> {
        Segment::create_in(bytes, &Place::Memfd)
    }

    /// A new segment at `place` holding a copy of `bytes`: a memfd sealed
    /// against every change, or an unnamed file left open read-only only.
    pub(crate) fn create_in(bytes: &[u8], place: &Place) -> Result<Segment, String> {
        let (file, sealable) = backing::new_file(bytes.len(), place)?;
        if let Err(e) = file.write_all_at(bytes, 0) {
            // Dropping `file` frees what was written: the segment has no name.
            return Err(format!(
                "shared memory: writing a {} segment failed ({e}); it was freed. \
                 Free memory or room in temp_folder, or set max_nbytes = None \
                 to send arguments inline",
                human(bytes.len())
            ));
        }
        let file = if sealable {
            file
        } else {
            backing::reopen_read_only(&file)
                .map_err(|e| format!("shared memory: reopening a segment read-only: {e}"))?
        };
        Segment::finish(file, bytes.len(), sealable.then_some(SEALS), false)
    }

    cfg_mpi! {
        /// A new read-only segment of `len` bytes with the given id, written
        /// once by `fill` through a temporary writable mapping and then sealed
        /// (an argument that arrived by MPI straight into shared memory).
        pub(crate) fn create_filled(
            id: u64,
            len: usize,
            fill: impl FnOnce(&mut [u8]),
        ) -> Result<Segment, String> {
            let (file, sealable) = backing::new_file(len, &Place::Memfd)?;
            if len > 0 {
                // SAFETY: a fresh shared mapping of our own file of `len` bytes,
                // unmapped before the file is sealed.
                unsafe {
                    let ptr = libc::mmap(
                        std::ptr::null_mut(),
                        len,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_SHARED,
                        file.as_raw_fd(),
                        0,
                    );
                    if ptr == libc::MAP_FAILED {
                        return Err(format!(
                            "shared memory: mapping {} to fill failed: {}",
                            human(len),
                            io::Error::last_os_error()
                        ));
                    }
                    fill(std::slice::from_raw_parts_mut(ptr.cast::<u8>(), len));
                    libc::munmap(ptr, len);
                }
            }
            // SAFETY: fcntl on our own descriptor.
            if sealable && unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } != 0 {
                return Err(format!(
                    "shared memory: sealing the segment failed: {}",
                    io::Error::last_os_error()
                ));
            }
            let segment = Segment::map(id, file, len, false)
                .map_err(|e| format!("shared memory: mapping the segment failed: {e}"))?;
            CREATED.fetch_add(1, Ordering::Relaxed);
            Ok(segment)
        }
    }

    /// A new zeroed segment of `len` bytes that stays writable, with its
    /// size sealed (an output buffer).
    pub(crate) fn create_writable(len: usize) -> Result<Segment, String> {
        let (file, sealable) = backing::new_file(len, &Place::Memfd)?;
        Segment::finish(file, len, sealable.then_some(SIZE_SEALS), true)
    }

    fn finish(
        file: File,
        len: usize,
        seals: Option<i32>,
        writable: bool,
    ) -> Result<Segment, String> {
        if let Some(seals) = seals {
            // SAFETY: fcntl on our own descriptor.
            if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
                return Err(format!(
                    "shared memory: sealing the segment failed: {}",
                    io::Error::last_os_error()
                ));
            }
        }
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let segment = Segment::map(id, file, len, writable)
            .map_err(|e| format!("shared memory: mapping the segment failed: {e}"))?;
        CREATED.fetch_add(1, Ordering::Relaxed);
        Ok(segment)
    }

    /// A segment another process created and passed to us, which must be
    /// a memfd of exactly `len` bytes with the seals its kind promises:
    /// anything else is refused, because the soundness of reading it as
    /// `&[T]` rests on the seals.
    pub(crate) fn adopt(id: u64, fd: OwnedFd, len: usize, writable: bool) -> io::Result<Segment> {
        let file = File::from(fd);
        if !kept_as_promised(&file, writable)? {
            return Err(io::Error::other(format!(
                "segment {id} is neither a sealed memfd nor an unnamed file of its kind"
            )));
        }
        let size = file.metadata()?.len();
        if size != len as u64 {
            return Err(io::Error::other(format!(
                "segment {id} holds {size} bytes, {len} were announced"
            )));
        }
        Segment::map(id, file, len, writable)
    }

    /// Reads a read-only segment another process passed, checked as
    /// [`Segment::adopt`] checks it, into `out` (its whole length, not yet
    /// initialized), without mapping it.
    pub(crate) fn read_passed(fd: OwnedFd, out: &mut [MaybeUninit<u8>]) -> io::Result<()> {
        let file = File::from(fd);
        if !kept_as_promised(&file, false)? || file.metadata()?.len() != out.len() as u64 {
            return Err(io::Error::other(
                "not a sealed segment of the announced length",
            ));
        }
        let mut done = 0;
        while done < out.len() {
            let rest = &mut out[done..];
            // SAFETY: pread writes at most `rest.len()` bytes into `rest`,
            // which is ours to write; uninitialized bytes may be written.
            let got = unsafe {
                libc::pread(
                    file.as_raw_fd(),
                    rest.as_mut_ptr().cast(),
                    rest.len(),
                    done as libc::off_t,
                )
            };
            match got {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n if n > 0 => done += n as usize,
                _ => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }

    fn map(id: u64, file: File, len: usize, writable: bool) -> io::Result<Segment> {
        let protection = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        let ptr = if len == 0 {
            NonNull::dangling()
        } else {
            // SAFETY: a fresh shared mapping of `len` bytes of a file we
            // hold, which is sealed so it can never shrink under it.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    protection,
                    libc::MAP_SHARED,
                    file.as_raw_fd(),
                    0,
                )
            };
            if ptr == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            NonNull::new(ptr.cast()).expect("mmap returned a non-null pointer")
        };
        Ok(Segment {
            id,
            file,
            ptr,
            len,
            writable,
        })
    }

    /// The segment's id, unique in the process that created it.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The bytes of a read-only segment.
    ///
    /// # Panics
    /// On a writable segment, whose bytes others may be writing.
    pub(crate) fn bytes(&self) -> &[u8] {
        assert!(!self.writable, "the bytes of a writable segment");
        // SAFETY: `ptr` maps `len` readable bytes (or is dangling with
        // `len == 0`) for as long as `self` lives, and the seals keep them
        // from changing (see the `Sync` impl).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The start of a writable segment's mapping, and its length.
    pub(crate) fn raw(&self) -> (*mut u8, usize) {
        (self.ptr.as_ptr(), self.len)
    }

    /// Whether this is an output buffer.
    pub(crate) fn is_writable(&self) -> bool {
        self.writable
    }

    /// The memfd, to pass to a worker.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// What a message passing this segment says of it.
    pub(crate) fn announce(&self) -> super::fdpass::Announce {
        super::fdpass::Announce {
            id: self.id,
            len: self.len as u64,
            writable: self.writable,
        }
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: unmapping exactly the mapping `map` made; no borrow
            // of it outlives `self`.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        }
    }
}

/// Whether `file` is what a segment of its kind must be: a memfd with the
/// seals of its kind, or (the file fallback) an unnamed regular file that
/// this descriptor can write only if the segment is writable.
fn kept_as_promised(file: &File, writable: bool) -> io::Result<bool> {
    // SAFETY: fcntl on a descriptor we own.
    let seals = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
    let want = if writable { SIZE_SEALS } else { SEALS };
    if seals >= 0 && seals & want == want {
        return Ok((seals & libc::F_SEAL_WRITE != 0) != writable);
    }
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata()?;
    // SAFETY: fcntl on a descriptor we own.
    let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
    let can_write = flags >= 0 && flags & libc::O_ACCMODE != libc::O_RDONLY;
    Ok(meta.is_file() && meta.nlink() == 0 && can_write == writable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::FromRawFd;

    #[test]
    fn a_segment_holds_its_bytes_and_is_sealed() {
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let seg = Segment::create(&data).unwrap();
        assert_eq!(seg.bytes(), &data[..]);
        // SAFETY: fcntl on a descriptor the segment owns.
        let seals = unsafe { libc::fcntl(seg.file.as_raw_fd(), libc::F_GET_SEALS) };
        assert_eq!(seals & SEALS, SEALS);
        let again = seg.fd().try_clone_to_owned().unwrap();
        let adopted = Segment::adopt(seg.id(), again, data.len(), false).unwrap();
        assert_eq!(adopted.bytes(), &data[..]);
        let again = seg.fd().try_clone_to_owned().unwrap();
        assert!(Segment::adopt(seg.id(), again, data.len(), true).is_err());
    }

    #[test]
    fn a_writable_mapping_of_a_sealed_segment_is_refused() {
        let seg = Segment::create(&[1u8; 4096]).unwrap();
        // SAFETY: asking for a writable shared mapping, which must fail;
        // if it did not, it is unmapped at once.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                seg.file.as_raw_fd(),
                0,
            )
        };
        let err = io::Error::last_os_error();
        assert_eq!(
            ptr,
            libc::MAP_FAILED,
            "a sealed segment was mapped writable"
        );
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
        assert!(seg.file.write_at(&[2], 0).is_err());
        assert!(seg.file.set_len(1).is_err());
    }

    #[test]
    fn an_unsealed_or_misdescribed_descriptor_is_refused() {
        let plain = File::from(
            // SAFETY: a fresh memfd, owned by the File at once.
            unsafe { OwnedFd::from_raw_fd(libc::memfd_create(c"t".as_ptr(), libc::MFD_CLOEXEC)) },
        );
        plain.set_len(8).unwrap();
        assert!(Segment::adopt(1, plain.into(), 8, false).is_err());
        let seg = Segment::create(&[0u8; 8]).unwrap();
        let again = seg.fd().try_clone_to_owned().unwrap();
        assert!(Segment::adopt(seg.id(), again, 16, false).is_err());
        // An output buffer is writable, and its size is sealed.
        let out = Segment::create_writable(4096).unwrap();
        assert!(out.file.set_len(8192).is_err());
        let again = out.fd().try_clone_to_owned().unwrap();
        let theirs = Segment::adopt(out.id(), again, 4096, true).unwrap();
        // SAFETY: one byte of a 4096-byte writable mapping, no other user.
        unsafe { *theirs.raw().0.add(7) = 42 };
        // SAFETY: as above, read back through the other mapping.
        assert_eq!(unsafe { *out.raw().0.add(7) }, 42);
    }
}
