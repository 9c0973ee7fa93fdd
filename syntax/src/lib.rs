//! The spellings of parjob's option values, parsed in one place.
//!
//! `#[parallel(backend = "loky")]` in an attribute, `"loky".parse::<Backend>()`
//! in the runtime and `PARJOB_BACKEND=loky` in the environment all accept
//! exactly what these functions accept. Each returns `None` for text it does
//! not accept; the caller words the error, with a span in the macros and as
//! `Error::Config` in the runtime. This crate has no dependencies.

#![warn(missing_docs)]

/// A backend, as named in options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendName {
    /// `"thread"`, also `"threads"` and joblib's `"threading"`.
    Thread,
    /// `"process"`, also `"processes"` and joblib's `"loky"` and
    /// `"multiprocessing"`.
    Process,
    /// `"sequential"`.
    Sequential,
    /// `"mpi"`: the worker ranks of an MPI job (parjob's `mpi` feature).
    Mpi,
}

/// The canonical backend names, for error messages and suggestions.
pub const BACKENDS: &[&str] = &["thread", "process", "sequential", "mpi"];

/// A backend name: case and surrounding spaces do not matter.
pub fn backend(text: &str) -> Option<BackendName> {
    match text.trim().to_ascii_lowercase().as_str() {
        "thread" | "threads" | "threading" => Some(BackendName::Thread),
        "process" | "processes" | "loky" | "multiprocessing" => Some(BackendName::Process),
        "sequential" => Some(BackendName::Sequential),
        "mpi" => Some(BackendName::Mpi),
        _ => None,
    }
}

/// joblib's `prefer`: a soft hint, used only when nothing names a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PreferName {
    /// `"threads"` (also `"thread"`).
    Threads,
    /// `"processes"` (also `"process"`).
    Processes,
}

/// `"threads"` or `"processes"`; case and surrounding spaces do not matter.
pub fn prefer(text: &str) -> Option<PreferName> {
    match text.trim().to_ascii_lowercase().as_str() {
        "threads" | "thread" => Some(PreferName::Threads),
        "processes" | "process" => Some(PreferName::Processes),
        _ => None,
    }
}

/// `on_error`: `"stop"` (joblib's behaviour, the default) gives `false`,
/// `"continue"` gives `true`; case and surrounding spaces do not matter.
pub fn on_error_continues(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "stop" => Some(false),
        "continue" => Some(true),
        _ => None,
    }
}

/// joblib's `require`: its one value, `"sharedmem"`.
pub fn require_sharedmem(text: &str) -> bool {
    text.trim().eq_ignore_ascii_case("sharedmem")
}

/// joblib's `verbose` scale mapped to parjob's levels 0 to 3:
/// - 0 is silent;
/// - 1 to 3 are parjob's own levels (a line every 2 s, 0.5 s, 0.1 s);
/// - 4 to 10, joblib's "progress at growing intervals", are level 2;
/// - above 10, where joblib reports every batch, level 3.
///
/// joblib sends output to stdout above 50; parjob always writes to stderr.
pub fn verbose_level(verbose: u32) -> u8 {
    match verbose {
        0..=3 => verbose as u8,
        4..=10 => 2,
        _ => 3,
    }
}

/// joblib's `pre_dispatch`, as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PreDispatchSpec {
    /// `"k*n_jobs"` (and `"n_jobs"` for `k = 1`).
    PerJob(usize),
    /// A count.
    Fixed(usize),
    /// `"all"`.
    All,
}

/// `"all"`, `"8"`, `"n_jobs"` or `"3*n_jobs"`; spaces do not matter. A zero
/// count parses (as `Fixed(0)` or `PerJob(0)`) so that the caller can say
/// why it is refused.
pub fn pre_dispatch(text: &str) -> Option<PreDispatchSpec> {
    let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    match text.as_str() {
        "all" => Some(PreDispatchSpec::All),
        "n_jobs" => Some(PreDispatchSpec::PerJob(1)),
        _ => match text.strip_suffix("*n_jobs") {
            Some(k) => k.parse().ok().map(PreDispatchSpec::PerJob),
            None => text.parse().ok().map(PreDispatchSpec::Fixed),
        },
    }
}

/// A compression codec and level, as joblib names them. The runtime's
/// `Compression` mirrors it (this crate cannot name runtime types, since
/// the macros use it at compile time); its `FromStr` maps from this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodecSpec {
    /// `"none"`: stored as is.
    None,
    /// `"zlib"` (level 0 to 9).
    Zlib(u32),
    /// `"gzip"` (level 0 to 9).
    Gzip(u32),
    /// `"bz2"` (level 1 to 9).
    Bz2(u32),
    /// `"xz"` (level 0 to 9).
    Xz(u32),
    /// `"lzma"` (level 0 to 9).
    Lzma(u32),
    /// `"lz4"` (level 0 to 16, as joblib's; see the runtime's
    /// `Compression::Lz4` for what the level does).
    Lz4(u32),
    /// `"zstd"` (level 1 to 22).
    Zstd(i32),
}

/// The codec names, for error messages and suggestions.
pub const CODECS: &[&str] = &["none", "zlib", "gzip", "bz2", "xz", "lzma", "lz4", "zstd"];

/// joblib's default level, for a codec named without one.
pub const DEFAULT_LEVEL: u32 = 3;

/// `"zstd"`, `"zstd:9"`, `"gzip:3"`, `"lz4"`, `"none"` (joblib's
/// `("gzip", 3)` pairs, written with a colon). A level out of the codec's
/// range, or a level on `none`, is `None`.
pub fn compress(text: &str) -> Option<CodecSpec> {
    let text = text.trim().to_ascii_lowercase();
    let (name, level) = match text.split_once(':') {
        Some((name, level)) => (name.trim(), Some(level.trim().parse::<i64>().ok()?)),
        None => (text.as_str(), None),
    };
    let ranged = |lo: i64, hi: i64| -> Option<i64> {
        let level = level.unwrap_or(i64::from(DEFAULT_LEVEL));
        (lo..=hi).contains(&level).then_some(level)
    };
    Some(match name {
        "none" if level.is_none() => CodecSpec::None,
        "lz4" => CodecSpec::Lz4(ranged(0, 16)? as u32),
        "zlib" => CodecSpec::Zlib(ranged(0, 9)? as u32),
        "gzip" => CodecSpec::Gzip(ranged(0, 9)? as u32),
        "bz2" => CodecSpec::Bz2(ranged(1, 9)? as u32),
        "xz" => CodecSpec::Xz(ranged(0, 9)? as u32),
        "lzma" => CodecSpec::Lzma(ranged(0, 9)? as u32),
        "zstd" => CodecSpec::Zstd(ranged(1, 22)? as i32),
        _ => return None,
    })
}

/// joblib's `compress` as a number: 0 stores as is, 1 to 9 is zlib at that
/// level. `true` is zlib level 3, `false` none.
pub fn compress_level(level: i64) -> Option<CodecSpec> {
    match level {
        0 => Some(CodecSpec::None),
        1..=9 => Some(CodecSpec::Zlib(level as u32)),
        _ => None,
    }
}

/// Seconds in `"500ms"`, `"30s"`, `"5m"` (or `"5min"`), `"2h"`, `"7d"`,
/// `"1w"`: a number followed by a unit.
pub fn duration_seconds(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match unit.trim() {
        "ms" => 1e-3,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        "w" => 604_800.0,
        _ => return None,
    };
    Some(number * scale)
}

/// joblib's `max_nbytes`: a size (`"1M"`, `"500K"`, `"4096"`), or
/// `"none"`/`"None"`/`"off"` for `Some(None)`, which turns the automatic
/// shared-memory path off.
pub fn max_nbytes(text: &str) -> Option<Option<u64>> {
    let trimmed = text.trim();
    if ["none", "off"]
        .iter()
        .any(|n| trimmed.eq_ignore_ascii_case(n))
    {
        return Some(None);
    }
    size_bytes(trimmed).map(Some)
}

/// Bytes in `"10G"`, `"500M"`, `"64KB"`, `"1.5GiB"` or `"4096"`, in powers
/// of 1024.
pub fn size_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let unit = unit.trim().to_ascii_uppercase();
    let unit = unit.trim_end_matches("IB").trim_end_matches('B');
    let scale: f64 = match unit {
        "" => 1.0,
        "K" => 1024.0,
        "M" => 1024.0 * 1024.0,
        "G" => 1024.0 * 1024.0 * 1024.0,
        "T" => 1024.0f64.powi(4),
        _ => return None,
    };
    Some((number * scale) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_nbytes_takes_sizes_and_none() {
        assert_eq!(max_nbytes("1M"), Some(Some(1 << 20)));
        assert_eq!(max_nbytes(" 4096 "), Some(Some(4096)));
        assert_eq!(max_nbytes("None"), Some(None));
        assert_eq!(max_nbytes("off"), Some(None));
        assert_eq!(max_nbytes("lots"), None);
    }

    #[test]
    fn prefer_require_and_joblibs_verbose_scale() {
        assert_eq!(prefer(" Processes "), Some(PreferName::Processes));
        assert_eq!(prefer("threads"), Some(PreferName::Threads));
        assert_eq!(prefer("loky"), None);
        assert!(require_sharedmem("sharedmem") && !require_sharedmem("shared"));
        let levels: Vec<u8> = [0, 1, 3, 4, 5, 10, 11, 50, 100, u32::MAX]
            .into_iter()
            .map(verbose_level)
            .collect();
        assert_eq!(levels, [0, 1, 3, 2, 2, 2, 3, 3, 3, 3]);
    }

    #[test]
    fn backend_names_and_joblibs_aliases() {
        for (text, name) in [
            ("thread", BackendName::Thread),
            (" Threading ", BackendName::Thread),
            ("loky", BackendName::Process),
            ("multiprocessing", BackendName::Process),
            ("PROCESS", BackendName::Process),
            ("sequential", BackendName::Sequential),
        ] {
            assert_eq!(backend(text), Some(name), "{text}");
        }
        assert_eq!(backend("gpu"), None);
        assert_eq!(backend(""), None);
    }

    #[test]
    fn pre_dispatch_spellings() {
        assert_eq!(pre_dispatch("all"), Some(PreDispatchSpec::All));
        assert_eq!(pre_dispatch("8"), Some(PreDispatchSpec::Fixed(8)));
        assert_eq!(pre_dispatch("n_jobs"), Some(PreDispatchSpec::PerJob(1)));
        assert_eq!(pre_dispatch("3 * n_jobs"), Some(PreDispatchSpec::PerJob(3)));
        assert_eq!(pre_dispatch("0"), Some(PreDispatchSpec::Fixed(0)));
        assert_eq!(pre_dispatch("lots"), None);
        assert_eq!(pre_dispatch("x*n_jobs"), None);
    }

    #[test]
    fn compress_takes_joblibs_names_levels_and_numbers() {
        assert_eq!(compress("zstd"), Some(CodecSpec::Zstd(3)));
        assert_eq!(compress("zstd:19"), Some(CodecSpec::Zstd(19)));
        assert_eq!(compress("gzip:3"), Some(CodecSpec::Gzip(3)));
        assert_eq!(compress("ZLIB"), Some(CodecSpec::Zlib(3)));
        assert_eq!(compress("bz2:9"), Some(CodecSpec::Bz2(9)));
        assert_eq!(compress("lz4"), Some(CodecSpec::Lz4(3)));
        assert_eq!(compress("lz4:9"), Some(CodecSpec::Lz4(9)));
        assert_eq!(compress("lz4:17"), None);
        assert_eq!(compress("zlib:10"), None);
        assert_eq!(compress("none"), Some(CodecSpec::None));
        assert_eq!(compress("zstd:23"), None);
        assert_eq!(compress("bz2:0"), None);
        assert_eq!(compress("lz4:3"), Some(CodecSpec::Lz4(3)));
        assert_eq!(compress("zstdd"), None);
        assert_eq!(compress_level(0), Some(CodecSpec::None));
        assert_eq!(compress_level(9), Some(CodecSpec::Zlib(9)));
        assert_eq!(compress_level(10), None);
    }

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(duration_seconds("250ms"), Some(0.25));
        assert_eq!(duration_seconds("5min"), Some(300.0));
        assert_eq!(duration_seconds("7d"), Some(604_800.0));
        assert_eq!(duration_seconds("30"), None);
        assert_eq!(duration_seconds("5 parsecs"), None);
    }

    #[test]
    fn sizes_use_powers_of_1024() {
        assert_eq!(size_bytes("4096"), Some(4096));
        assert_eq!(size_bytes("64KB"), Some(64 << 10));
        assert_eq!(size_bytes("1.5GiB"), Some(3 << 29));
        assert_eq!(size_bytes("10G"), Some(10 << 30));
        assert_eq!(size_bytes("3 parsecs"), None);
    }
}
