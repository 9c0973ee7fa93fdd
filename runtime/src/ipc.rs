//! Frames and messages between the parent and its worker processes.
//!
//! The transport is a pair of anonymous pipes inherited by the worker at
//! fixed descriptors (named in `PARJOB_WORKER`), never stdout: the worker's
//! stdout and stderr stay the user's (DESIGN.md decision 3). A frame is a
//! little-endian `u64` length followed by that many bytes of a codec-encoded
//! message, and a length above [`MAX_FRAME`] is refused before anything is
//! allocated.

use crate::codec::{self, CodecError};
use crate::task::Outcome;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::io::{self, Read, Write};

/// Bumped whenever a message changes shape.
pub const PROTOCOL_VERSION: u32 = 2;
/// `b"PJOB"`, the first field of every hello.
pub const MAGIC: u32 = u32::from_le_bytes(*b"PJOB");
/// The largest frame either side accepts: 1 GiB.
pub const MAX_FRAME: u64 = 1 << 30;

/// An encoded value, carried as one byte string (not a sequence of
/// numbers), so large arguments and results cost one copy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bytes(pub Vec<u8>);

impl Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Bytes;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(v.to_vec()))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes(v))
            }
        }
        d.deserialize_byte_buf(Visitor)
    }
}

/// Parent to worker.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToWorker {
    /// Run task `task` once per entry of `args`, in order, the k-th as job
    /// `seq + k`, and answer with one `Done { id }`.
    Run {
        /// The batch's id, chosen by the parent and echoed back.
        id: u64,
        /// The registered task name.
        task: String,
        /// The sequence number of the first job, for the beacon.
        seq: u64,
        /// One encoded argument tuple per job.
        args: Vec<Bytes>,
    },
}

/// Worker to parent.
#[derive(Debug, Serialize, Deserialize)]
pub enum FromWorker {
    /// The first message of every worker.
    Hello(Hello),
    /// The answer to `Run { id }`: one outcome per job, in order.
    Done {
        /// The `Run`'s id.
        id: u64,
        /// How each job went.
        outcomes: Vec<Outcome>,
        /// Time spent running the batch's jobs, in nanoseconds.
        elapsed_ns: u64,
    },
}

/// What a worker says when it starts, so a mismatch is found at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`MAGIC`].
    pub magic: u32,
    /// The worker's [`PROTOCOL_VERSION`].
    pub protocol: u32,
    /// The worker's [`crate::task::registry_fingerprint`].
    pub fingerprint: u64,
    /// The worker's pid.
    pub pid: u32,
}

impl Hello {
    /// This process's hello.
    pub fn current() -> Self {
        Hello {
            magic: MAGIC,
            protocol: PROTOCOL_VERSION,
            fingerprint: crate::task::registry_fingerprint(),
            pid: std::process::id(),
        }
    }

    /// Checks a worker's hello against this process; the error says what differs.
    pub fn check(&self, ours: &Hello) -> Result<(), String> {
        if self.magic != ours.magic {
            return Err(format!(
                "worker {} spoke another protocol (magic {:#x})",
                self.pid, self.magic
            ));
        }
        if self.protocol != ours.protocol {
            return Err(format!(
                "worker {} speaks protocol version {}, this process {}",
                self.pid, self.protocol, ours.protocol
            ));
        }
        if self.fingerprint != ours.fingerprint {
            return Err(format!(
                "worker {} has another task registry (fingerprint {:#018x}, ours {:#018x}): \
                 was the binary rebuilt while it ran?",
                self.pid, self.fingerprint, ours.fingerprint
            ));
        }
        Ok(())
    }
}

/// Encodes `msg` as one frame, ready for a single `write_all`.
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, CodecError> {
    let mut buf = vec![0u8; 8];
    codec::encode_into(msg, &mut buf)?;
    let len = (buf.len() - 8) as u64;
    if len > MAX_FRAME {
        return Err(CodecError(format!(
            "a message of {len} bytes is over the {MAX_FRAME}-byte frame limit"
        )));
    }
    buf[..8].copy_from_slice(&len.to_le_bytes());
    Ok(buf)
}

/// Writes one frame.
pub fn write_frame<T: Serialize>(w: &mut impl Write, msg: &T) -> io::Result<()> {
    let frame = encode_frame(msg).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.0))?;
    w.write_all(&frame)?;
    w.flush()
}

/// Reads one frame's payload. `Ok(None)` is a clean end of stream between
/// frames; a stream that ends inside a frame is `UnexpectedEof`.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 8];
    let mut got = 0;
    while got < len.len() {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u64::from_le_bytes(len);
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame claims {len} bytes, over the {MAX_FRAME}-byte limit"),
        ));
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload)?;
    Ok(Some(payload))
}

/// Decodes a frame's payload as a message.
pub fn decode_message<T: DeserializeOwned>(payload: &[u8]) -> io::Result<T> {
    codec::decode(payload).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_end_cleanly() {
        let mut wire = Vec::new();
        let msg = ToWorker::Run {
            id: 9,
            task: "m::f".into(),
            seq: 100,
            args: vec![Bytes(vec![1, 2, 3]), Bytes(vec![])],
        };
        write_frame(&mut wire, &msg).unwrap();
        write_frame(&mut wire, &FromWorker::Hello(Hello::current())).unwrap();
        let mut r = &wire[..];
        let first: ToWorker = decode_message(&read_frame(&mut r).unwrap().unwrap()).unwrap();
        assert!(
            matches!(first, ToWorker::Run { id: 9, ref task, seq: 100, ref args }
                if task == "m::f" && args == &[Bytes(vec![1, 2, 3]), Bytes(vec![])])
        );
        let second: FromWorker = decode_message(&read_frame(&mut r).unwrap().unwrap()).unwrap();
        assert!(matches!(second, FromWorker::Hello(h) if h == Hello::current()));
        assert!(read_frame(&mut r).unwrap().is_none());
    }

    #[test]
    fn bytes_are_encoded_as_one_string() {
        let big = Bytes(vec![7u8; 100_000]);
        let encoded = crate::codec::encode(&big).unwrap();
        assert!(encoded.len() < 100_010, "{}", encoded.len());
        assert_eq!(crate::codec::decode::<Bytes>(&encoded).unwrap(), big);
    }

    #[test]
    fn torn_and_oversized_frames_are_errors() {
        let frame = encode_frame(&ToWorker::Run {
            id: 1,
            task: "t".into(),
            seq: 0,
            args: vec![Bytes(vec![0; 100])],
        })
        .unwrap();
        let torn = &frame[..frame.len() - 10];
        assert_eq!(
            read_frame(&mut &torn[..]).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        let huge = (1u64 << 60).to_le_bytes();
        assert_eq!(
            read_frame(&mut &huge[..]).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn a_hello_from_another_build_is_refused_with_the_reason() {
        let ours = Hello::current();
        let mut theirs = ours.clone();
        theirs.protocol += 1;
        assert!(theirs
            .check(&ours)
            .unwrap_err()
            .contains("protocol version"));
        let mut theirs = ours.clone();
        theirs.fingerprint ^= 1;
        assert!(theirs.check(&ours).unwrap_err().contains("registry"));
    }
}
