//! The options every parjob macro shares: `n_jobs`, `backend`,
//! `batch_size`, `pre_dispatch`, `timeout`, `verbose`, `progress`,
//! `prefer`, `require`, `return_as`, `max_nbytes`, `temp_folder` and
//! `crate`.
//!
//! They are parsed from `name = value` pairs and checked here, so every
//! macro gives the same error, with a suggestion, for the same mistake.

use crate::diagnostics::{closest, Errors};
use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, ExprUnary, Lit, Meta, Token, UnOp};

/// The option names the macros accept.
pub const KNOWN: &[&str] = &[
    "n_jobs",
    "backend",
    "batch_size",
    "pre_dispatch",
    "timeout",
    "verbose",
    "progress",
    "prefer",
    "require",
    "return_as",
    "max_nbytes",
    "temp_folder",
    "crate",
];

pub use parjob_syntax::{duration_seconds, BackendName, PreferName};

/// `batch_size` as written.
#[derive(Clone, Copy)]
pub enum Batch {
    Auto,
    Fixed(usize),
}

/// `pre_dispatch` as written.
#[derive(Clone, Copy)]
pub enum PreDispatch {
    All,
    PerJob(usize),
    Fixed(usize),
}

/// What `f::map` returns.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub enum ReturnAs {
    #[default]
    List,
    Generator,
    GeneratorUnordered,
}

/// Options given in an attribute.
#[derive(Default, Clone)]
pub struct Opts {
    pub n_jobs: Option<i32>,
    pub backend: Option<(BackendName, Span)>,
    pub batch_size: Option<Batch>,
    pub pre_dispatch: Option<PreDispatch>,
    pub timeout_ns: Option<u64>,
    pub verbose: Option<u32>,
    pub progress: Option<bool>,
    pub prefer: Option<(PreferName, Span)>,
    /// `require = "sharedmem"`, with its span.
    pub require_sharedmem: Option<Span>,
    pub return_as: Option<ReturnAs>,
    /// `max_nbytes`: a size, or `Some(None)` for `"none"`.
    pub max_nbytes: Option<Option<u64>>,
    /// `temp_folder`: a folder path.
    pub temp_folder: Option<String>,
    pub krate: Option<syn::Path>,
}

/// An attribute's `name = value, ...` list, each with its name (empty for
/// a path that is not one identifier). A syntax error is recorded and
/// gives an empty list.
pub fn named_metas(args: TokenStream, errors: &mut Errors) -> Vec<(String, Meta)> {
    match Punctuated::<Meta, Token![,]>::parse_terminated.parse2(args) {
        Ok(metas) => metas
            .into_iter()
            .map(|meta| {
                let name = meta
                    .path()
                    .get_ident()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                (name, meta)
            })
            .collect(),
        Err(e) => {
            errors.push(e);
            Vec::new()
        }
    }
}

impl Opts {
    /// Parses `name = value, ...`, recording every mistake in `errors`.
    pub fn parse(args: TokenStream, errors: &mut Errors) -> Opts {
        let mut opts = Opts::default();
        for (name, meta) in named_metas(args, errors) {
            let value = match &meta {
                Meta::NameValue(nv) => &nv.value,
                _ if KNOWN.contains(&name.as_str()) => {
                    errors.spanned(
                        &meta,
                        format!("`{name}` needs a value, e.g. {}", example(&name)),
                    );
                    continue;
                }
                _ => {
                    unknown(&meta, &name, errors);
                    continue;
                }
            };
            match name.as_str() {
                "n_jobs" => opts.n_jobs = parse_n_jobs(value, errors),
                "backend" => opts.backend = parse_backend(value, errors),
                "batch_size" => opts.batch_size = parse_batch_size(value, errors),
                "pre_dispatch" => opts.pre_dispatch = parse_pre_dispatch(value, errors),
                "timeout" => opts.timeout_ns = parse_timeout(value, errors),
                "verbose" => opts.verbose = parse_verbose(value, errors),
                "progress" => match value {
                    Expr::Lit(ExprLit {
                        lit: Lit::Bool(b), ..
                    }) => opts.progress = Some(b.value),
                    _ => errors.spanned(value, "progress takes `true` or `false`"),
                },
                "prefer" => opts.prefer = parse_prefer(value, errors),
                "require" => opts.require_sharedmem = parse_require(value, errors),
                "return_as" => opts.return_as = parse_return_as(value, errors),
                "max_nbytes" => opts.max_nbytes = parse_max_nbytes(value, errors),
                "mmap_mode" => errors.spanned(&meta, MMAP_MODE),
                "temp_folder" => match string(value) {
                    Some(s) if !s.value().is_empty() => opts.temp_folder = Some(s.value()),
                    _ => errors.spanned(
                        value,
                        "temp_folder takes a folder in a string, e.g. temp_folder = \"/mnt/scratch\"",
                    ),
                },
                "crate" => match string(value) {
                    Some(s) => match syn::parse_str::<syn::Path>(&s.value()) {
                        Ok(path) => opts.krate = Some(path),
                        Err(_) => {
                            errors.spanned(value, "`crate` takes a path, e.g. crate = \"::parjob\"")
                        }
                    },
                    None => errors.spanned(
                        value,
                        "`crate` takes a path in a string, e.g. crate = \"::parjob\"",
                    ),
                },
                _ => unknown(&meta, &name, errors),
            }
        }
        opts.check_require(errors);
        opts
    }

    /// These options, with each one `over` sets replacing ours.
    pub fn overridden_by(&self, over: &Opts) -> Opts {
        Opts {
            n_jobs: over.n_jobs.or(self.n_jobs),
            backend: over.backend.or(self.backend),
            batch_size: over.batch_size.or(self.batch_size),
            pre_dispatch: over.pre_dispatch.or(self.pre_dispatch),
            timeout_ns: over.timeout_ns.or(self.timeout_ns),
            verbose: over.verbose.or(self.verbose),
            progress: over.progress.or(self.progress),
            prefer: over.prefer.or(self.prefer),
            require_sharedmem: over.require_sharedmem.or(self.require_sharedmem),
            return_as: over.return_as.or(self.return_as),
            max_nbytes: over.max_nbytes.or(self.max_nbytes),
            temp_folder: over
                .temp_folder
                .clone()
                .or_else(|| self.temp_folder.clone()),
            krate: over.krate.clone().or_else(|| self.krate.clone()),
        }
    }

    /// Whether `n_jobs` or `backend` is set: a nested loop that sets one
    /// gets threads of its own.
    pub fn sets_workers(&self) -> bool {
        self.n_jobs.is_some() || self.backend.is_some()
    }

    /// The options set here that only the scheduler honours (a loop on
    /// threads has no batches to time or report on).
    pub fn scheduler_only(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.pre_dispatch.is_some() {
            names.push("pre_dispatch");
        }
        if self.timeout_ns.is_some() {
            names.push("timeout");
        }
        if self.verbose.is_some() {
            names.push("verbose");
        }
        if self.progress.is_some() {
            names.push("progress");
        }
        names
    }

    /// The path to the runtime's private API.
    pub fn private_path(&self) -> TokenStream {
        match &self.krate {
            Some(path) => quote!(#path::__private),
            None => quote!(::parjob::__private),
        }
    }

    /// Whether `backend = "process"` is given: what makes a marked loop or
    /// `parallel_for!` a process loop (the soft `prefer` hint does not).
    pub fn backend_is_process(&self) -> bool {
        matches!(
            self.backend,
            Some((BackendName::Process | BackendName::Mpi, _))
        )
    }

    /// Whether the task can run in worker processes: `backend = "process"`,
    /// or `prefer = "processes"`, which needs the same codecs.
    pub fn is_process(&self) -> bool {
        self.backend_is_process() || matches!(self.prefer, Some((PreferName::Processes, _)))
    }

    /// `require = "sharedmem"` beside `backend = "process"` or
    /// `prefer = "processes"` (joblib's ValueError), recorded in `errors`.
    fn check_require(&self, errors: &mut Errors) {
        if let (Some(span), Some((BackendName::Process, _))) =
            (self.require_sharedmem, self.backend)
        {
            errors.push(syn::Error::new(
                span,
                "require = \"sharedmem\" runs the work on threads, which contradicts backend = \"process\": drop one of the two",
            ));
        }
        if let (Some(span), Some((PreferName::Processes, _))) =
            (self.require_sharedmem, self.prefer)
        {
            errors.push(syn::Error::new(
                span,
                "prefer = \"processes\" and require = \"sharedmem\" contradict each other (joblib refuses them together too): drop the prefer hint to run on threads, or drop require to allow processes",
            ));
        }
    }

    /// An expression building the runtime's `Options` from these.
    pub fn to_runtime(&self, private: &TokenStream) -> TokenStream {
        let mut options = quote!(#private::Options::new());
        if let Some(n) = self.n_jobs {
            options = quote!(#options.with_n_jobs(#n));
        }
        if let Some((backend, _)) = self.backend {
            let variant = match backend {
                BackendName::Sequential => quote!(Sequential),
                BackendName::Thread => quote!(Thread),
                BackendName::Process => quote!(Process),
                BackendName::Mpi => quote!(Mpi),
            };
            options = quote!(#options.with_backend(#private::Backend::#variant));
        }
        if let Some(batch) = self.batch_size {
            let batch = match batch {
                Batch::Auto => quote!(#private::BatchSize::Auto),
                Batch::Fixed(n) => quote!(#private::BatchSize::Fixed(#n)),
            };
            options = quote!(#options.with_batch_size(#batch));
        }
        if let Some(pre) = self.pre_dispatch {
            let pre = match pre {
                PreDispatch::All => quote!(#private::PreDispatch::All),
                PreDispatch::PerJob(k) => quote!(#private::PreDispatch::PerJob(#k)),
                PreDispatch::Fixed(n) => quote!(#private::PreDispatch::Fixed(#n)),
            };
            options = quote!(#options.with_pre_dispatch(#pre));
        }
        if let Some(ns) = self.timeout_ns {
            options = quote!(#options.with_timeout(::core::time::Duration::from_nanos(#ns)));
        }
        if let Some(v) = self.verbose {
            options = quote!(#options.with_verbose(#v));
        }
        if let Some(p) = self.progress {
            options = quote!(#options.with_progress(#p));
        }
        if let Some((prefer, _)) = self.prefer {
            let variant = match prefer {
                PreferName::Threads => quote!(Threads),
                PreferName::Processes => quote!(Processes),
            };
            options = quote!(#options.with_prefer(#private::Prefer::#variant));
        }
        if self.require_sharedmem.is_some() {
            options = quote!(#options.with_require(#private::Require::SharedMem));
        }
        if let Some(max) = self.max_nbytes {
            let max = match max {
                Some(n) => quote!(#private::MaxNbytes::Bytes(#n)),
                None => quote!(#private::MaxNbytes::Off),
            };
            options = quote!(#options.with_max_nbytes(#max));
        }
        if let Some(folder) = &self.temp_folder {
            options = quote!(#options.with_temp_folder(#private::TempFolder::new(#folder)));
        }
        options
    }
}

fn example(name: &str) -> &'static str {
    match name {
        "n_jobs" => "n_jobs = 4 (or -1 for every CPU)",
        "backend" => "backend = \"process\"",
        "batch_size" => "batch_size = \"auto\" (or a count)",
        "pre_dispatch" => "pre_dispatch = \"2*n_jobs\" (or a count, or \"all\")",
        "timeout" => "timeout = 30 (seconds) or timeout = \"500ms\"",
        "verbose" => "verbose = 1",
        "prefer" => "prefer = \"processes\"",
        "require" => "require = \"sharedmem\"",
        "progress" => "progress = true",
        "return_as" => "return_as = \"generator\"",
        "max_nbytes" => "max_nbytes = \"1M\" (or a byte count, or \"none\")",
        "temp_folder" => "temp_folder = \"/mnt/scratch\"",
        _ => "crate = \"::parjob\"",
    }
}

fn positive_int(value: &Expr) -> Option<usize> {
    match int_literal(value) {
        Some((false, lit)) => lit.base10_parse::<usize>().ok(),
        _ => None,
    }
}

fn parse_batch_size(value: &Expr, errors: &mut Errors) -> Option<Batch> {
    if string(value).is_some_and(|s| s.value() == "auto") {
        return Some(Batch::Auto);
    }
    match positive_int(value) {
        Some(0) => errors.spanned(
            value,
            "batch_size = 0 would never send a job: use \"auto\" (the default) or a positive count",
        ),
        Some(n) => return Some(Batch::Fixed(n)),
        None => errors.spanned(
            value,
            "batch_size takes \"auto\" or a positive integer, e.g. batch_size = 64",
        ),
    }
    None
}

fn parse_pre_dispatch(value: &Expr, errors: &mut Errors) -> Option<PreDispatch> {
    let zero = "pre_dispatch = 0 would never start a job: use a positive count, \"2*n_jobs\" (the default) or \"all\"";
    if let Some(n) = positive_int(value) {
        if n == 0 {
            errors.spanned(value, zero);
            return None;
        }
        return Some(PreDispatch::Fixed(n));
    }
    let usage =
        "pre_dispatch takes a count, \"k*n_jobs\" or \"all\", e.g. pre_dispatch = \"3*n_jobs\"";
    let Some(s) = string(value) else {
        errors.spanned(value, usage);
        return None;
    };
    let parsed = parjob_syntax::pre_dispatch(&s.value()).map(|spec| match spec {
        parjob_syntax::PreDispatchSpec::All => PreDispatch::All,
        parjob_syntax::PreDispatchSpec::PerJob(k) => PreDispatch::PerJob(k),
        parjob_syntax::PreDispatchSpec::Fixed(n) => PreDispatch::Fixed(n),
    });
    match parsed {
        Some(PreDispatch::PerJob(0) | PreDispatch::Fixed(0)) => errors.spanned(value, zero),
        Some(p) => return Some(p),
        None => errors.spanned(value, usage),
    }
    None
}

/// Seconds as a number, or a string with a unit: "250ms", "5s", "2m", "1h".
fn parse_timeout(value: &Expr, errors: &mut Errors) -> Option<u64> {
    let usage = "timeout takes seconds (timeout = 30, timeout = 0.5) or a string with a unit (\"250ms\", \"5s\", \"2m\", \"1h\")";
    let seconds: Option<f64> = match value {
        Expr::Lit(ExprLit {
            lit: Lit::Int(i), ..
        }) => i.base10_parse::<u64>().ok().map(|s| s as f64),
        Expr::Lit(ExprLit {
            lit: Lit::Float(f), ..
        }) => f.base10_parse::<f64>().ok(),
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => duration_seconds(&s.value()),
        _ => None,
    };
    match seconds {
        Some(s) if s.is_finite() && s > 0.0 => Some((s * 1e9).round().max(1.0) as u64),
        Some(0.0) => {
            errors.spanned(value, "a zero timeout would fail every task: give a positive duration, or leave timeout out");
            None
        }
        _ => {
            errors.spanned(value, usage);
            None
        }
    }
}

/// Why `mmap_mode` is not an option of a run.
const MMAP_MODE: &str = "parjob takes joblib's mmap_mode from each parameter's type, not from an option: \
     `&[T]` is a read-only view of shared memory (\"r\"), a by-value `Vec<T>` is the task's own copy to change (\"c\"), \
     and `parjob::shm::SharedSliceMut` lends chunks that jobs write in place (\"r+\"). Remove mmap_mode";

/// joblib's `max_nbytes`: a byte count, a size string (`"1M"`), or
/// `"none"` (joblib's `None`).
fn parse_max_nbytes(value: &Expr, errors: &mut Errors) -> Option<Option<u64>> {
    let parsed = match (int_literal(value), string(value)) {
        (Some((false, lit)), _) => lit.base10_parse::<u64>().ok().map(Some),
        (_, Some(s)) => parjob_syntax::max_nbytes(&s.value()),
        _ => None,
    };
    if parsed.is_none() {
        errors.spanned(
            value,
            "max_nbytes takes a size: a byte count (1048576), a string like \"1M\" or \"500K\", or \"none\" to turn shared memory off",
        );
    }
    parsed
}

/// joblib's scale: any non-negative integer (see `parjob_syntax::verbose_level`).
fn parse_verbose(value: &Expr, errors: &mut Errors) -> Option<u32> {
    match int_literal(value) {
        Some((false, lit)) => match lit.base10_parse::<u32>() {
            Ok(v) => return Some(v),
            Err(_) => errors.spanned(value, "verbose is too large: joblib's scale ends at about 100"),
        },
        _ => errors.spanned(
            value,
            "verbose takes a non-negative integer on joblib's scale: 0 (silent), 1 to 10 (progress lines), above 10 (every batch)",
        ),
    }
    None
}

fn parse_prefer(value: &Expr, errors: &mut Errors) -> Option<(PreferName, Span)> {
    match string(value).and_then(|s| parjob_syntax::prefer(&s.value())) {
        Some(prefer) => Some((prefer, value.span())),
        None => {
            errors.spanned(
                value,
                "prefer takes \"threads\" or \"processes\" (a soft hint; to force a backend, use backend = ..)",
            );
            None
        }
    }
}

fn parse_require(value: &Expr, errors: &mut Errors) -> Option<Span> {
    match string(value) {
        Some(s) if parjob_syntax::require_sharedmem(&s.value()) => Some(s.span()),
        _ => {
            errors.spanned(
                value,
                "require takes \"sharedmem\", joblib's one requirement: the work runs on threads",
            );
            None
        }
    }
}

fn parse_return_as(value: &Expr, errors: &mut Errors) -> Option<ReturnAs> {
    match string(value).map(|s| s.value()).as_deref() {
        Some("list") => Some(ReturnAs::List),
        Some("generator") => Some(ReturnAs::Generator),
        Some("generator_unordered") => Some(ReturnAs::GeneratorUnordered),
        _ => {
            errors.spanned(
                value,
                "return_as takes \"list\" (a Vec, the default), \"generator\" (results in order, as they come) \
                 or \"generator_unordered\" (results as they complete, with their index)",
            );
            None
        }
    }
}

fn unknown(meta: &Meta, name: &str, errors: &mut Errors) {
    let valid = KNOWN.join(", ");
    let message = match closest(name, KNOWN) {
        Some(guess) => format!(
            "unknown parjob option `{name}`: did you mean `{guess}`? (valid options: {valid})"
        ),
        None => format!("unknown parjob option `{name}` (valid options: {valid})"),
    };
    errors.spanned(meta.path(), message);
}

/// A string literal's token, if `value` is one.
pub fn string(value: &Expr) -> Option<&syn::LitStr> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Some(s),
        _ => None,
    }
}

fn parse_n_jobs(value: &Expr, errors: &mut Errors) -> Option<i32> {
    let Some((negative, lit)) = int_literal(value) else {
        return bad_n_jobs(value, errors);
    };
    let Ok(n) = lit.base10_parse::<i32>() else {
        return bad_n_jobs(value, errors);
    };
    let n = if negative { -n } else { n };
    if n == 0 {
        errors.spanned(
            value,
            "n_jobs = 0 would run nothing: use 1 for sequential, -1 for every CPU, -2 for all but one, or a positive count",
        );
        return None;
    }
    Some(n)
}

/// `4` or `-1`, as (negative, literal).
fn int_literal(value: &Expr) -> Option<(bool, &syn::LitInt)> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Int(i), ..
        }) => Some((false, i)),
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_),
            expr,
            ..
        }) => match &**expr {
            Expr::Lit(ExprLit {
                lit: Lit::Int(i), ..
            }) => Some((true, i)),
            _ => None,
        },
        _ => None,
    }
}

fn bad_n_jobs(value: &Expr, errors: &mut Errors) -> Option<i32> {
    errors.spanned(
        value,
        "n_jobs takes an integer literal (e.g. 4, or -1 for every CPU); for a value computed at run time, use Parallel::new().n_jobs(..)",
    );
    None
}

fn parse_backend(value: &Expr, errors: &mut Errors) -> Option<(BackendName, Span)> {
    let Some(s) = string(value) else {
        errors.spanned(
            value,
            "backend takes a string: \"thread\", \"process\", \"sequential\" or \"mpi\"",
        );
        return None;
    };
    let name = s.value();
    let backend = match parjob_syntax::backend(&name) {
        Some(backend) => backend,
        None => {
            let other = name.as_str();
            let hint = match closest(other, parjob_syntax::BACKENDS) {
                Some(guess) => format!(" (did you mean \"{guess}\"?)"),
                None => String::new(),
            };
            errors.spanned(
                value,
                format!("unknown backend \"{other}\"{hint}: valid backends are \"thread\" (the default), \"process\", \"sequential\" and \"mpi\" (the `mpi` feature)"),
            );
            return None;
        }
    };
    Some((backend, s.span()))
}
