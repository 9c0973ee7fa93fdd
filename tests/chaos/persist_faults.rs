//! Faults in files: hostile, truncated, special or unwritable dumps and
//! cache entries.

use crate::harness::{child_said, in_capped_child, is_capped_child, scratch, Case};
use parjob::__private::persist_format::{codec_tag, encoder, fingerprint, trailer, Header};
use parjob::{dump, load, load_mmap, load_with, Compression, Limits, Memory, MissReason};
use parjob::{PersistError, MAX_DEPTH};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

const SHORT: Duration = Duration::from_secs(10);

pub const CASES: &[Case] = &[
    Case {
        fault: "a 200 KB zstd dump of a 3 GiB Vec<u8>, loaded under a 1 GiB cap",
        expect: "PersistError::OutOfMemory, no abort",
        within: Duration::from_secs(120),
        run: zstd_bomb_as_bytes,
        ignore: None,
    },
    Case {
        fault: "a 200 KB zstd dump of a 3 GiB String, loaded under a 1 GiB cap",
        expect: "PersistError::OutOfMemory, no abort",
        within: Duration::from_secs(120),
        run: zstd_bomb_as_string,
        ignore: None,
    },
    Case {
        fault: "a dump larger than the load's max_bytes",
        expect: "PersistError::TooLarge before any allocation",
        within: SHORT,
        run: over_the_limit,
        ignore: None,
    },
    Case {
        fault: "a linked list 300 nodes deep",
        expect: "dumps and loads back equal",
        within: SHORT,
        run: deep_list_round_trips,
        ignore: None,
    },
    Case {
        fault: "a value nested past MAX_DEPTH, dumped over a file",
        expect: "PersistError::TooDeep, the old file intact",
        within: SHORT,
        run: too_deep_to_dump,
        ignore: None,
    },
    Case {
        fault: "a hostile dump nested a million levels deep",
        expect: "PersistError::Corrupt, no stack overflow",
        within: SHORT,
        run: hostile_nesting,
        ignore: None,
    },
    Case {
        fault: "load and load_mmap of /dev/zero and /dev/urandom",
        expect: "an error naming a character device",
        within: SHORT,
        run: devices,
        ignore: None,
    },
    Case {
        fault: "load and load_mmap of a FIFO with no writer",
        expect: "an error naming a FIFO, no blocking open",
        within: SHORT,
        run: fifo_without_writer,
        ignore: None,
    },
    Case {
        fault: "load of a FIFO with an endless writer",
        expect: "an error naming a FIFO, nothing read",
        within: SHORT,
        run: fifo_with_endless_writer,
        ignore: None,
    },
    Case {
        fault: "a truncated dump and a dump with a flipped bit",
        expect: "PersistError::Truncated and PersistError::Corrupt",
        within: SHORT,
        run: damaged_dumps,
        ignore: None,
    },
    Case {
        fault: "a dump to a full device (/dev/full)",
        expect: "an I/O error (no space)",
        within: SHORT,
        run: full_device,
        ignore: None,
    },
    Case {
        fault: "a dump over a file on a full disk (RLIMIT_FSIZE)",
        expect: "an error; the old file intact, no temporary left",
        within: Duration::from_secs(60),
        run: full_disk,
        ignore: None,
    },
    Case {
        fault: "a FIFO in place of a cache entry",
        expect: "a miss (corrupt), the value recomputed, no hang",
        within: SHORT,
        run: fifo_cache_entry,
        ignore: None,
    },
    Case {
        fault: "a dump to a path that is a FIFO",
        expect: "an error, the FIFO left alone, no blocking open",
        within: SHORT,
        run: fifo_dump_target,
        ignore: None,
    },
    Case {
        fault: "a cache entry that is a symlink to /dev/zero",
        expect: "a miss (corrupt), nothing read",
        within: SHORT,
        run: device_cache_entry,
        ignore: None,
    },
    Case {
        fault: "a truncated cache entry",
        expect: "a miss (corrupt), the value recomputed",
        within: SHORT,
        run: truncated_cache_entry,
        ignore: None,
    },
    Case {
        fault: "a cache entry with one flipped bit",
        expect: "a miss (corrupt), the value recomputed",
        within: SHORT,
        run: flipped_cache_entry,
        ignore: None,
    },
    Case {
        fault: "a cache entry of garbage",
        expect: "a miss (corrupt), the value recomputed",
        within: SHORT,
        run: garbage_cache_entry,
        ignore: None,
    },
    Case {
        fault: "a temporary file left by a dead writer",
        expect: "swept by the next dump into that directory",
        within: SHORT,
        run: dead_writers_temp,
        ignore: None,
    },
];

/// The element kind byte of `u8` in a raw array.
const U8: u8 = 1;

/// The payload header of a raw array: length, mode, kind, zero padding.
fn raw_array_front(len: u64, kind: u8) -> Vec<u8> {
    let mut front = len.to_le_bytes().to_vec();
    front.extend_from_slice(&[1, kind]); // mode::RAW, the element kind
    front.resize(64, 0);
    front
}

/// A zstd dump of `T` whose payload is `front` followed by `zeros` zero
/// bytes, written without ever holding the payload.
fn zstd_dump_of<T: ?Sized>(path: &Path, front: &[u8], zeros: u64) {
    let mut stored = Vec::new();
    let mut enc = encoder(Compression::Zstd(3), &mut stored).unwrap();
    enc.write_all(front).unwrap();
    let chunk = vec![0u8; 1 << 20];
    let mut left = zeros;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        enc.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
    enc.finish().unwrap();
    let stored_hash = xxhash_rust::xxh3::xxh3_64(&stored);
    let header = Header {
        codec: codec_tag(Compression::Zstd(3)),
        fingerprint: fingerprint::<T>(),
        payload_len: front.len() as u64 + zeros,
        checksum: 0,
        ..Header::default()
    };
    let mut file = header.encode().to_vec();
    file.extend_from_slice(&stored);
    file.extend_from_slice(&trailer(&header, stored_hash).to_le_bytes());
    std::fs::write(path, file).unwrap();
}

/// In the capped child: loads the file named by `PARJOB_CHAOS_FILE` as `T`
/// and prints the outcome. In the parent: makes the file, runs the child
/// under a 1 GiB address-space cap, and checks what it printed.
fn bomb<T: serde::de::DeserializeOwned>(row: &str, make: fn(&Path)) -> Result<(), String> {
    if is_capped_child() {
        let path = std::env::var_os("PARJOB_CHAOS_FILE").unwrap();
        match load::<T>(PathBuf::from(path)) {
            Err(PersistError::OutOfMemory { bytes }) => {
                println!("outcome: out of memory at {bytes}")
            }
            Err(e) => println!("outcome: other error: {e}"),
            Ok(_) => println!("outcome: loaded"),
        }
        return Ok(());
    }
    let dir = scratch("bomb");
    let path = dir.join("bomb.zst");
    make(&path);
    let size = std::fs::metadata(&path).unwrap().len();
    if size > 400 << 10 {
        return Err(format!("the bomb is {size} bytes, not about 200 KB"));
    }
    let out = in_capped_child(
        row,
        libc::RLIMIT_AS,
        1 << 30,
        &[("PARJOB_CHAOS_FILE", &path)],
    )
    .map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&dir);
    let said = child_said(&out);
    if out.status.success() && said.contains("outcome: out of memory") {
        Ok(())
    } else {
        Err(said)
    }
}

fn zstd_bomb_as_bytes() -> Result<(), String> {
    bomb::<Vec<u8>>(CASES[0].fault, |path| {
        zstd_dump_of::<Vec<u8>>(path, &raw_array_front(3 << 30, U8), 3 << 30)
    })
}

fn zstd_bomb_as_string() -> Result<(), String> {
    bomb::<String>(CASES[1].fault, |path| {
        zstd_dump_of::<String>(path, &(3u64 << 30).to_le_bytes(), 3 << 30)
    })
}

fn over_the_limit() -> Result<(), String> {
    let dir = scratch("limit");
    let path = dir.join("big.zst");
    zstd_dump_of::<Vec<u8>>(&path, &raw_array_front(1 << 30, U8), 1 << 30);
    let limits = Limits {
        max_bytes: 256 << 20,
        ..Limits::default()
    };
    let outcome = load_with::<Vec<u8>>(&path, limits);
    let _ = std::fs::remove_dir_all(&dir);
    match outcome {
        Err(PersistError::TooLarge { bytes, limit }) if limit == 256 << 20 && bytes > 1 << 30 => {
            Ok(())
        }
        Err(e) => Err(format!("wrong error: {e}")),
        Ok(_) => Err("loaded past its limit".into()),
    }
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Node {
    value: u64,
    next: Option<Box<Node>>,
}

fn list(len: u64) -> Option<Box<Node>> {
    (0..len).fold(None, |next, value| Some(Box::new(Node { value, next })))
}

/// Drops a long list without recursing.
fn drop_list(mut head: Option<Box<Node>>) {
    while let Some(mut node) = head {
        head = node.next.take();
    }
}

fn deep_list_round_trips() -> Result<(), String> {
    let dir = scratch("deep");
    let path = dir.join("list.bin");
    let original = list(300);
    dump(&original, &path).map_err(|e| format!("dump: {e}"))?;
    let back: Option<Box<Node>> = load(&path).map_err(|e| format!("load: {e}"))?;
    let same = back == original;
    drop_list(back);
    drop_list(original);
    let _ = std::fs::remove_dir_all(&dir);
    same.then_some(())
        .ok_or_else(|| "loaded another list".into())
}

fn too_deep_to_dump() -> Result<(), String> {
    let dir = scratch("too-deep");
    let path = dir.join("list.bin");
    dump(&list(3), &path).unwrap();
    let before = std::fs::read(&path).unwrap();
    let deep = list(MAX_DEPTH as u64 + 1);
    let outcome = dump(&deep, &path);
    drop_list(deep);
    let after = std::fs::read(&path).unwrap();
    let files = std::fs::read_dir(&dir).unwrap().count();
    let _ = std::fs::remove_dir_all(&dir);
    match outcome {
        Err(PersistError::TooDeep) if before == after && files == 1 => Ok(()),
        Err(PersistError::TooDeep) => Err("the old file changed or a temp was left".into()),
        other => Err(format!("expected TooDeep, got {other:?}")),
    }
}

#[derive(Debug, Serialize, Deserialize)]
enum Tree {
    Leaf,
    Node(Vec<Tree>),
}

fn hostile_nesting() -> Result<(), String> {
    // Node([Node([Node([...])])]) a million times: variant 1, then a
    // sequence of one element, element by element.
    let mut payload = Vec::new();
    for _ in 0..1_000_000 {
        payload.extend_from_slice(&1u32.to_le_bytes());
        payload.extend_from_slice(&1u64.to_le_bytes());
        payload.push(0); // mode::ELEMENTS
    }
    payload.extend_from_slice(&0u32.to_le_bytes());
    let checksum = xxhash_rust::xxh3::xxh3_64(&payload);
    let header = Header {
        codec: 0,
        fingerprint: fingerprint::<Tree>(),
        payload_len: payload.len() as u64,
        checksum,
        ..Header::default()
    };
    let mut file = header.encode().to_vec();
    file.extend_from_slice(&payload);
    file.extend_from_slice(&trailer(&header, checksum).to_le_bytes());
    let dir = scratch("hostile");
    let path = dir.join("tree.bin");
    std::fs::write(&path, file).unwrap();
    let outcome = load::<Tree>(&path);
    let _ = std::fs::remove_dir_all(&dir);
    match outcome {
        Err(PersistError::Corrupt(why)) if why.contains("nesting deeper than") => Ok(()),
        other => Err(format!("expected a nesting error, got {other:?}")),
    }
}

fn refused(path: &Path, kind: &str) -> Result<(), String> {
    let loaded = load::<Vec<u8>>(path).map(|v| v.len());
    // SAFETY: nothing is mapped unless the path is a regular file.
    let mapped = unsafe { load_mmap::<u8>(path) }.map(|m| m.len());
    for outcome in [loaded, mapped] {
        match outcome {
            Err(e) if e.to_string().contains(kind) => {}
            other => return Err(format!("{}: {other:?}", path.display())),
        }
    }
    Ok(())
}

fn devices() -> Result<(), String> {
    refused(Path::new("/dev/zero"), "character device")?;
    refused(Path::new("/dev/urandom"), "character device")
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

fn fifo_without_writer() -> Result<(), String> {
    let dir = scratch("fifo");
    let fifo = dir.join("dump.bin");
    mkfifo(&fifo);
    let outcome = refused(&fifo, "FIFO");
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

fn fifo_with_endless_writer() -> Result<(), String> {
    let dir = scratch("fifo-writer");
    let fifo = dir.join("dump.bin");
    mkfifo(&fifo);
    let mut writer = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("cat /dev/zero > '{}'", fifo.display()))
        .spawn()
        .map_err(|e| e.to_string())?;
    let outcome = refused(&fifo, "FIFO");
    let _ = writer.kill();
    let _ = writer.wait();
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

fn damaged_dumps() -> Result<(), String> {
    let dir = scratch("damaged");
    let path = dir.join("v.bin");
    let value: Vec<(String, u32)> = (0..500).map(|i| (format!("item {i}"), i)).collect();
    dump(&value, &path).unwrap();
    let whole = std::fs::read(&path).unwrap();
    std::fs::write(&path, &whole[..whole.len() / 2]).unwrap();
    let truncated = load::<Vec<(String, u32)>>(&path);
    let mut flipped = whole.clone();
    flipped[whole.len() / 2] ^= 0x10;
    std::fs::write(&path, &flipped).unwrap();
    let corrupt = load::<Vec<(String, u32)>>(&path);
    let _ = std::fs::remove_dir_all(&dir);
    match (truncated, corrupt) {
        (Err(PersistError::Truncated { .. }), Err(PersistError::Corrupt(_))) => Ok(()),
        other => Err(format!("{other:?}")),
    }
}

fn full_device() -> Result<(), String> {
    let mut full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .map_err(|e| e.to_string())?;
    let value = vec![1.5f64; 1 << 20];
    match parjob::dump_with(&value, &mut full, Compression::None) {
        Err(PersistError::Io(e)) if e.raw_os_error() == Some(libc::ENOSPC) => Ok(()),
        other => Err(format!("{other:?}")),
    }
}

fn full_disk() -> Result<(), String> {
    if is_capped_child() {
        let path = PathBuf::from(std::env::var_os("PARJOB_CHAOS_FILE").unwrap());
        match dump(&vec![2.5f64; 1 << 20], &path) {
            Err(e) => println!("outcome: refused: {e}"),
            Ok(()) => println!("outcome: written"),
        }
        return Ok(());
    }
    let dir = scratch("full-disk");
    let path = dir.join("v.bin");
    dump(&vec![1u8; 100], &path).unwrap();
    let before = std::fs::read(&path).unwrap();
    // Files may grow to 1 MiB: the 8 MiB dump cannot be written.
    let out = in_capped_child(
        CASES[11].fault,
        libc::RLIMIT_FSIZE,
        1 << 20,
        &[("PARJOB_CHAOS_FILE", &path)],
    )
    .map_err(|e| e.to_string())?;
    let after = std::fs::read(&path).unwrap();
    let files = std::fs::read_dir(&dir).unwrap().count();
    let _ = std::fs::remove_dir_all(&dir);
    let said = child_said(&out);
    if !out.status.success() || !said.contains("outcome: refused") {
        return Err(said);
    }
    if before != after || files != 1 {
        return Err(format!(
            "the old file changed or a temp was left ({files} files)"
        ));
    }
    Ok(())
}

/// Caches one value under `name` in a fresh dir, replaces its entry with
/// `damage`, and checks that the next call misses as corrupt and recomputes.
fn damaged_entry(name: &str, damage: fn(&Path, Vec<u8>)) -> Result<(), String> {
    let dir = scratch(name);
    let memory = Memory::new(&dir);
    let key = format!("chaos::{name}");
    let first: u64 = memory.cache(&key, &7u64, || 49);
    let entry = std::fs::read_dir(dir.join("chaos").join(name))
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "out"))
        .ok_or("no entry was written")?;
    let original = std::fs::read(&entry).unwrap();
    std::fs::remove_file(&entry).unwrap();
    damage(&entry, original);
    let second: u64 = memory.cache(&key, &7u64, || 49);
    let stats = memory.stats(&key);
    let _ = std::fs::remove_dir_all(&dir);
    if (first, second) != (49, 49) {
        return Err(format!("values {first}, {second}"));
    }
    match stats.last_miss {
        Some(MissReason::Corrupt) if stats.misses == 2 => Ok(()),
        _ => Err(format!("{stats:?}")),
    }
}

fn fifo_cache_entry() -> Result<(), String> {
    damaged_entry("fifo_entry", |entry, _| mkfifo(entry))
}

fn fifo_dump_target() -> Result<(), String> {
    let dir = scratch("fifo-target");
    let fifo = dir.join("out.bin");
    mkfifo(&fifo);
    let outcome = dump(&1u32, &fifo);
    let still_fifo = {
        use std::os::unix::fs::FileTypeExt;
        std::fs::symlink_metadata(&fifo).is_ok_and(|m| m.file_type().is_fifo())
    };
    let _ = std::fs::remove_dir_all(&dir);
    match outcome {
        Err(e) if e.to_string().contains("refusing to replace") && still_fifo => Ok(()),
        other => Err(format!("{other:?}, still a FIFO: {still_fifo}")),
    }
}

fn device_cache_entry() -> Result<(), String> {
    damaged_entry("device_entry", |entry, _| {
        std::os::unix::fs::symlink("/dev/zero", entry).unwrap()
    })?;
    // The recomputed entry replaced the link; it did not write through it.
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata("/dev/zero") {
        Ok(m) if m.file_type().is_char_device() => Ok(()),
        _ => Err("the cache wrote through its link to /dev/zero".into()),
    }
}

fn truncated_cache_entry() -> Result<(), String> {
    damaged_entry("truncated_entry", |entry, _| {
        std::fs::write(entry, b"PJMEMO").unwrap()
    })
}

fn flipped_cache_entry() -> Result<(), String> {
    damaged_entry("flipped_entry", |entry, mut bytes| {
        let at = bytes.len() - 1;
        bytes[at] ^= 0x01;
        std::fs::write(entry, bytes).unwrap()
    })
}

fn garbage_cache_entry() -> Result<(), String> {
    damaged_entry("garbage_entry", |entry, bytes| {
        let garbage: Vec<u8> = (0..bytes.len() as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        std::fs::write(entry, garbage).unwrap()
    })
}

fn dead_writers_temp() -> Result<(), String> {
    let dir = scratch("temps");
    let mut host = [0u8; 256];
    // SAFETY: gethostname writes at most 256 bytes into the buffer.
    unsafe { libc::gethostname(host.as_mut_ptr().cast(), host.len()) };
    let host = String::from_utf8_lossy(&host[..host.iter().position(|&b| b == 0).unwrap_or(0)])
        .split('.')
        .next()
        .unwrap_or("")
        .to_string();
    // A pid above the kernel's pid_max is never alive.
    let stale = dir.join(format!(
        ".v.bin.parjob-tmp.{host}.999999999.0123456789abcdef"
    ));
    std::fs::write(&stale, b"half a dump").unwrap();
    dump(&1u32, dir.join("v.bin")).map_err(|e| e.to_string())?;
    let left = stale.exists();
    let _ = std::fs::remove_dir_all(&dir);
    if left {
        Err("the dead writer's temporary is still there".into())
    } else {
        Ok(())
    }
}
