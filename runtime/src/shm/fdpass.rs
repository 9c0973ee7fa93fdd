//! Passing segments between processes: a `SOCK_SEQPACKET` socket pair,
//! one message per segment, its id, length and kind (writable or not) in
//! the body and its memfd as `SCM_RIGHTS` ancillary data. The worker channel's frames stay on
//! their pipes; this socket carries descriptors only.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// A connected pair of `SOCK_SEQPACKET` sockets, both close-on-exec.
pub(crate) fn socket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: socketpair writes two descriptors into the array on success.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Room for the control message of one descriptor.
const CONTROL: usize = 64;

/// What a segment message says besides its descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Announce {
    /// The segment's id in the process that made it.
    pub(crate) id: u64,
    /// Its length in bytes.
    pub(crate) len: u64,
    /// An output buffer (writable), not a sealed input.
    pub(crate) writable: bool,
}

const BODY: usize = 17;

fn iovec(body: &mut [u8; BODY]) -> libc::iovec {
    libc::iovec {
        iov_base: body.as_mut_ptr().cast(),
        iov_len: body.len(),
    }
}

/// A message of one buffer, with room for control data: the caller keeps
/// `iov` and `control` alive while the message is used.
fn header(iov: &mut libc::iovec, control: &mut [u64; CONTROL / 8]) -> libc::msghdr {
    // SAFETY: a zeroed msghdr is a valid empty message.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(control) as _;
    msg
}

/// Sends a segment with its descriptor, without blocking: `WouldBlock`
/// when the socket is full.
pub(crate) fn send_segment(
    sock: BorrowedFd<'_>,
    announce: Announce,
    fd: BorrowedFd<'_>,
) -> io::Result<()> {
    let mut body = [0u8; BODY];
    body[..8].copy_from_slice(&announce.id.to_le_bytes());
    body[8..16].copy_from_slice(&announce.len.to_le_bytes());
    body[16] = u8::from(announce.writable);
    let mut iov = iovec(&mut body);
    let mut control = [0u64; CONTROL / 8];
    // SAFETY: `header` points the message at live buffers; the CMSG macros
    // stay inside `control`, whose size covers CMSG_SPACE of one descriptor.
    unsafe {
        let mut msg = header(&mut iov, &mut control);
        msg.msg_controllen = libc::CMSG_SPACE(4) as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(4) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>(), fd.as_raw_fd());
        loop {
            let sent = libc::sendmsg(
                sock.as_raw_fd(),
                &msg,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            );
            if sent >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// Receives one segment: what it was announced as, and its descriptor
/// (close-on-exec). Blocks until one comes; `Ok(None)` when the other end
/// closed.
pub(crate) fn recv_segment(sock: BorrowedFd<'_>) -> io::Result<Option<(Announce, OwnedFd)>> {
    let mut body = [0u8; BODY];
    let mut iov = iovec(&mut body);
    let mut control = [0u64; CONTROL / 8];
    // SAFETY: as in `send_segment`; the kernel writes at most
    // `msg_controllen` bytes of control data, and a descriptor it passed
    // is ours alone (MSG_CMSG_CLOEXEC sets close-on-exec).
    unsafe {
        let mut msg = header(&mut iov, &mut control);
        let got = loop {
            let got = libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
            if got >= 0 {
                break got as usize;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        let mut passed = None;
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let count = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / 4;
                for k in 0..count {
                    let raw = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>().add(k));
                    let owned = OwnedFd::from_raw_fd(raw);
                    // Keep the first; any other is closed as it drops.
                    if passed.is_none() {
                        passed = Some(owned);
                    }
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        if got == 0 && passed.is_none() {
            return Ok(None);
        }
        if msg.msg_flags & libc::MSG_CTRUNC != 0 && passed.is_none() && got == body.len() {
            // The kernel drops a passed descriptor it cannot install.
            return Err(out_of_descriptors());
        }
        if msg.msg_flags & (libc::MSG_CTRUNC | libc::MSG_TRUNC) != 0 || got != body.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a malformed segment message",
            ));
        }
        let fd = passed.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "a segment message without its descriptor",
            )
        })?;
        let announce = Announce {
            id: u64::from_le_bytes(body[..8].try_into().expect("8 bytes")),
            len: u64::from_le_bytes(body[8..16].try_into().expect("8 bytes")),
            writable: body[16] != 0,
        };
        Ok(Some((announce, fd)))
    }
}

/// The error for a descriptor the kernel could not install: this process
/// is at its `RLIMIT_NOFILE`.
fn out_of_descriptors() -> io::Error {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit.
    let known = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    let at = if known {
        format!(" (RLIMIT_NOFILE is {})", limit.rlim_cur)
    } else {
        String::new()
    };
    io::Error::other(format!(
        "this process ran out of file descriptors{at}, so the kernel dropped the \
         segment it was passed; close files or raise the limit (ulimit -n)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_descriptor_crosses_the_socket_with_its_header() {
        let (a, b) = socket_pair().unwrap();
        let file = std::fs::File::open("/proc/self/exe").unwrap();
        let sent = Announce {
            id: 7,
            len: 1234,
            writable: true,
        };
        send_segment(a.as_fd(), sent, file.as_fd()).unwrap();
        let (announce, fd) = recv_segment(b.as_fd()).unwrap().unwrap();
        assert_eq!(announce, sent);
        let theirs = std::fs::File::from(fd).metadata().unwrap();
        let ours = file.metadata().unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((theirs.dev(), theirs.ino()), (ours.dev(), ours.ino()));
        drop(a);
        assert!(recv_segment(b.as_fd()).unwrap().is_none());
    }
}
