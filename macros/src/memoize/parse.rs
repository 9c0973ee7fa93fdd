//! The model of a `#[memoize(..)]` function: its options, checked as they
//! are parsed, and its parameters.

use crate::diagnostics::{closest, Errors};
use crate::options::{duration_seconds, named_metas, string};
use parjob_syntax::size_bytes;
use proc_macro2::TokenStream;
use syn::{Expr, ExprLit, Ident, ItemFn, Lit, Meta};

/// The option names `#[memoize]` accepts (`location` is joblib's name for
/// `dir`).
const KNOWN: &[&str] = &[
    "dir",
    "location",
    "ignore",
    "compress",
    "expires_after",
    "bytes_limit",
    "verbose",
    "name",
    "mmap_mode",
    "crate",
];

pub use parjob_syntax::CodecSpec as Codec;

/// `#[memoize(..)]`'s options.
#[derive(Default)]
pub struct MemoOpts {
    pub dir: Option<String>,
    pub ignore: Vec<Ident>,
    pub compress: Option<Codec>,
    pub expires_after_ns: Option<u64>,
    pub bytes_limit: Option<u64>,
    pub verbose: Option<u8>,
    pub name: Option<String>,
    /// `mmap_mode = "r"`, with its span.
    pub mmap_mode: Option<proc_macro2::Span>,
    pub krate: Option<syn::Path>,
    /// Set by `#[parallel]` above this attribute: the struct exists.
    pub with_struct: bool,
}

/// The hidden option `#[parallel]` adds when it sits above `#[memoize]`.
pub const WITH_STRUCT: &str = "__parjob_with_struct";

impl MemoOpts {
    pub fn parse(args: TokenStream, errors: &mut Errors) -> MemoOpts {
        let mut opts = MemoOpts::default();
        for (name, meta) in named_metas(args, errors) {
            if name == WITH_STRUCT {
                opts.with_struct = true;
                continue;
            }
            let Meta::NameValue(nv) = &meta else {
                let message = match closest(&name, KNOWN) {
                    Some(known) if known == name => {
                        format!("`{name}` needs a value, e.g. {}", example(&name))
                    }
                    Some(known) => {
                        format!("unknown #[memoize] option `{name}`; did you mean `{known}`?")
                    }
                    None => format!(
                        "unknown #[memoize] option `{name}`; the options are {}",
                        KNOWN.join(", ")
                    ),
                };
                errors.spanned(&meta, message);
                continue;
            };
            let value = &nv.value;
            match name.as_str() {
                "dir" | "location" => {
                    if opts.dir.is_some() {
                        errors.spanned(
                            &meta,
                            "`dir` and `location` name the same thing (joblib's `location`): give one",
                        );
                    }
                    opts.dir = text(value, &name, errors);
                }
                "name" => opts.name = text(value, "name", errors),
                "mmap_mode" => opts.mmap_mode = parse_mmap_mode(value, errors),
                "ignore" => opts.ignore = parse_ignore(value, errors),
                "compress" => opts.compress = parse_codec(value, errors),
                "expires_after" => opts.expires_after_ns = parse_duration(value, errors),
                "bytes_limit" => opts.bytes_limit = parse_size(value, errors),
                "verbose" => match value {
                    Expr::Lit(ExprLit {
                        lit: Lit::Int(i), ..
                    }) if i.base10_parse::<u8>().is_ok_and(|v| v <= 2) => {
                        opts.verbose = i.base10_parse().ok();
                    }
                    _ => errors.spanned(
                        value,
                        "verbose takes 0, 1 (a line per miss) or 2 (per hit too)",
                    ),
                },
                "crate" => {
                    match text(value, "crate", errors).map(|t| syn::parse_str::<syn::Path>(&t)) {
                        Some(Ok(path)) => opts.krate = Some(path),
                        Some(Err(_)) => {
                            errors.spanned(value, "`crate` takes a path, e.g. crate = \"::parjob\"")
                        }
                        None => {}
                    }
                }
                other => {
                    let message = match closest(other, KNOWN) {
                        Some(known) => {
                            format!("unknown #[memoize] option `{other}`; did you mean `{known}`?")
                        }
                        None => format!(
                            "unknown #[memoize] option `{other}`; the options are {}",
                            KNOWN.join(", ")
                        ),
                    };
                    errors.spanned(&nv.path, message);
                }
            }
        }
        opts
    }

    /// The path to the runtime's private API.
    pub fn private_path(&self) -> TokenStream {
        match &self.krate {
            Some(path) => quote::quote!(#path::__private),
            None => quote::quote!(::parjob::__private),
        }
    }
}

/// joblib's `mmap_mode`: only `"r"`, since a cached result is shared.
fn parse_mmap_mode(value: &Expr, errors: &mut Errors) -> Option<proc_macro2::Span> {
    match string(value).map(|s| s.value()).as_deref() {
        Some("r") => return Some(syn::spanned::Spanned::span(value)),
        Some("r+" | "w+" | "c") => errors.spanned(
            value,
            "a cached result is shared by every later call, so it is mapped read-only: use mmap_mode = \"r\" (copy with `.to_vec()` to change it)",
        ),
        _ => errors.spanned(
            value,
            "mmap_mode takes \"r\": the cached array comes back mapped read-only",
        ),
    }
    None
}

fn example(name: &str) -> &'static str {
    match name {
        "dir" | "location" => "dir = \"./cache\"",
        "ignore" => "ignore = [verbose]",
        "compress" => "compress = \"zstd:3\"",
        "expires_after" => "expires_after = \"7d\"",
        "bytes_limit" => "bytes_limit = \"10G\"",
        "verbose" => "verbose = 1",
        "name" => "name = \"features_v2\"",
        _ => "crate = \"::parjob\"",
    }
}

fn text(value: &Expr, option: &str, errors: &mut Errors) -> Option<String> {
    match string(value) {
        Some(s) => Some(s.value()),
        None => {
            errors.spanned(
                value,
                format!("`{option}` takes a string, e.g. {}", example(option)),
            );
            None
        }
    }
}

fn parse_ignore(value: &Expr, errors: &mut Errors) -> Vec<Ident> {
    let usage = "ignore takes a list of parameter names, e.g. ignore = [verbose, log]";
    let Expr::Array(array) = value else {
        errors.spanned(value, usage);
        return Vec::new();
    };
    let mut names = Vec::new();
    for element in &array.elems {
        match element {
            Expr::Path(p) if p.path.get_ident().is_some() => {
                names.push(p.path.get_ident().expect("checked").clone());
            }
            other => errors.spanned(other, usage),
        }
    }
    names
}

fn parse_codec(value: &Expr, errors: &mut Errors) -> Option<Codec> {
    let usage = "compress takes a codec with an optional level, \"zstd:3\", \"gzip:3\", \"lz4\", \"none\" \
                 (zlib, gzip, xz, lzma 0 to 9; bz2 1 to 9; lz4 0 to 16; zstd 1 to 22), or joblib's number (0 to 9: zlib) \
                 or bool (true: zlib level 3)";
    let parsed = match value {
        Expr::Lit(ExprLit {
            lit: Lit::Bool(b), ..
        }) => Some(if b.value {
            Codec::Zlib(parjob_syntax::DEFAULT_LEVEL)
        } else {
            Codec::None
        }),
        Expr::Lit(ExprLit {
            lit: Lit::Int(i), ..
        }) => i
            .base10_parse::<i64>()
            .ok()
            .and_then(parjob_syntax::compress_level),
        _ => match string(value) {
            Some(s) => parjob_syntax::compress(&s.value()),
            None => None,
        },
    };
    if parsed.is_some() {
        return parsed;
    }
    let message = match string(value).map(|s| s.value()) {
        Some(text) => {
            let (codec, level) = match text.split_once(':') {
                Some((codec, level)) => (codec.to_string(), format!(":{level}")),
                None => (text.clone(), String::new()),
            };
            match closest(&codec, parjob_syntax::CODECS) {
                Some(k) if k == codec => format!("bad level in \"{text}\": {usage}"),
                Some(k) => {
                    format!("unknown codec \"{text}\"; did you mean \"{k}{level}\"? {usage}")
                }
                None => format!("unknown codec \"{text}\": {usage}"),
            }
        }
        None => usage.to_string(),
    };
    errors.spanned(value, message);
    None
}

fn parse_duration(value: &Expr, errors: &mut Errors) -> Option<u64> {
    let usage = "expires_after takes a duration with a unit: \"500ms\", \"30s\", \"10m\", \"2h\", \"7d\" or \"1w\"";
    let seconds = string(value).and_then(|s| duration_seconds(&s.value()));
    match seconds {
        Some(s) if s > 0.0 => Some((s * 1e9) as u64),
        Some(_) => {
            errors.spanned(value, "expires_after must be longer than zero");
            None
        }
        None => {
            errors.spanned(value, usage);
            None
        }
    }
}

fn parse_size(value: &Expr, errors: &mut Errors) -> Option<u64> {
    let usage = "bytes_limit takes a size: \"10G\", \"500M\", \"64K\" or a number of bytes";
    let bytes = match value {
        Expr::Lit(ExprLit {
            lit: Lit::Int(i), ..
        }) => i.base10_parse::<u64>().ok(),
        _ => string(value).and_then(|s| size_bytes(&s.value())),
    };
    match bytes {
        Some(0) => {
            errors.spanned(
                value,
                "bytes_limit = 0 would evict every result as soon as it is stored",
            );
            None
        }
        Some(b) => Some(b),
        None => {
            errors.spanned(value, usage);
            None
        }
    }
}

/// A memoized function: the item and its options.
pub struct MemoFn {
    pub item: ItemFn,
    pub opts: MemoOpts,
}
