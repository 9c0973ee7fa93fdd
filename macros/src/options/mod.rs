//! The options every parjob macro shares: `n_jobs`, `backend`,
//! `batch_size`, `pre_dispatch`, `timeout`, `verbose`, `progress`,
//! `prefer`, `require`, `return_as`, `max_nbytes`, `temp_folder`, `on_error`,
//! `retries`, `retry_panics`, `max_worker_memory`, `speculate`,
//! `speculation_multiplier`, `inner_max_num_threads` and `crate`.
//!
//! They are parsed from `name = value` pairs and checked here, so every
//! macro gives the same error, with a suggestion, for the same mistake.

use crate::diagnostics::Errors;
use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, Lit, Meta, Token};

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
    "inner_max_num_threads",
    "on_error",
    "retries",
    "retry_panics",
    "max_worker_memory",
    "speculate",
    "speculation_multiplier",
    "trace",
    "crate",
];

pub use parjob_syntax::{duration_seconds, BackendName, PreferName};

mod values;
pub use values::string;
use values::{
    bad_inner_threads, example, parse_backend, parse_batch_size, parse_bool, parse_max_nbytes,
    parse_max_worker_memory, parse_multiplier, parse_n_jobs, parse_on_error, parse_pre_dispatch,
    parse_prefer, parse_require, parse_return_as, parse_timeout, parse_verbose, positive_int,
    unknown, MMAP_MODE,
};

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
    /// `inner_max_num_threads`: threads per worker process.
    pub inner_max_num_threads: Option<usize>,
    /// `on_error`: `true` for `"continue"`.
    pub on_error_continues: Option<bool>,
    /// `retries`: how many more times a job may run.
    pub retries: Option<u32>,
    /// `retry_panics`.
    pub retry_panics: Option<bool>,
    /// `max_worker_memory`, in bytes.
    pub max_worker_memory: Option<u64>,
    /// `speculate`.
    pub speculate: Option<bool>,
    /// `speculation_multiplier`.
    pub speculation_multiplier: Option<u32>,
    /// `trace`: the JSON file's path.
    pub trace: Option<String>,
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
                "on_error" => opts.on_error_continues = parse_on_error(value, errors),
                "retries" => match positive_int(value).and_then(|n| u32::try_from(n).ok()) {
                    Some(n) => opts.retries = Some(n),
                    None => errors.spanned(
                        value,
                        "retries takes how many more times a job may run when its worker dies or times out, e.g. retries = 2",
                    ),
                },
                "retry_panics" => opts.retry_panics = parse_bool(&name, value, errors),
                "max_worker_memory" => {
                    opts.max_worker_memory = parse_max_worker_memory(value, errors)
                }
                "speculate" => opts.speculate = parse_bool(&name, value, errors),
                "speculation_multiplier" => {
                    opts.speculation_multiplier = parse_multiplier(value, errors)
                }
                "mmap_mode" => errors.spanned(&meta, MMAP_MODE),
                "inner_max_num_threads" => match positive_int(value) {
                    Some(n) if n > 0 => opts.inner_max_num_threads = Some(n),
                    _ => bad_inner_threads(value, errors),
                },
                "temp_folder" => match string(value) {
                    Some(s) if !s.value().is_empty() => opts.temp_folder = Some(s.value()),
                    _ => errors.spanned(
                        value,
                        "temp_folder takes a folder in a string, e.g. temp_folder = \"/mnt/scratch\"",
                    ),
                },
                "trace" => match string(value) {
                    Some(s) if !s.value().is_empty() => opts.trace = Some(s.value()),
                    _ => errors.spanned(
                        value,
                        "trace takes the file to write the run's timeline to, in a string, e.g. trace = \"run.json\" (the HTML report goes beside it, run.html)",
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
            inner_max_num_threads: over.inner_max_num_threads.or(self.inner_max_num_threads),
            on_error_continues: over.on_error_continues.or(self.on_error_continues),
            retries: over.retries.or(self.retries),
            retry_panics: over.retry_panics.or(self.retry_panics),
            max_worker_memory: over.max_worker_memory.or(self.max_worker_memory),
            speculate: over.speculate.or(self.speculate),
            speculation_multiplier: over.speculation_multiplier.or(self.speculation_multiplier),
            trace: over.trace.clone().or_else(|| self.trace.clone()),
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
        let set = [
            ("pre_dispatch", self.pre_dispatch.is_some()),
            ("timeout", self.timeout_ns.is_some()),
            ("verbose", self.verbose.is_some()),
            ("progress", self.progress.is_some()),
            ("on_error", self.on_error_continues.is_some()),
            ("retries", self.retries.is_some()),
            ("retry_panics", self.retry_panics.is_some()),
            ("max_worker_memory", self.max_worker_memory.is_some()),
            ("speculate", self.speculate.is_some()),
            (
                "speculation_multiplier",
                self.speculation_multiplier.is_some(),
            ),
        ];
        set.into_iter()
            .filter_map(|(name, given)| given.then_some(name))
            .collect()
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

    /// `options` with the failure-handling options set here: `on_error`,
    /// `retries`, `retry_panics`, `max_worker_memory`, `speculate` and
    /// `speculation_multiplier`.
    fn failure_options(&self, mut options: TokenStream, private: &TokenStream) -> TokenStream {
        if let Some(continues) = self.on_error_continues {
            let variant = if continues {
                quote!(Continue)
            } else {
                quote!(Stop)
            };
            options = quote!(#options.with_on_error(#private::OnError::#variant));
        }
        if let Some(n) = self.retries {
            options = quote!(#options.with_retries(#n));
        }
        if let Some(b) = self.retry_panics {
            options = quote!(#options.with_retry_panics(#b));
        }
        if let Some(bytes) = self.max_worker_memory {
            options = quote!(#options.with_max_worker_memory(#bytes));
        }
        if let Some(b) = self.speculate {
            options = quote!(#options.with_speculate(#b));
        }
        if let Some(k) = self.speculation_multiplier {
            options = quote!(#options.with_speculation_multiplier(#k));
        }
        options
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
        if let Some(n) = self.inner_max_num_threads {
            options = quote!(#options.with_inner_max_num_threads(#n));
        }
        options = self.failure_options(options, private);
        if let Some(folder) = &self.temp_folder {
            options = quote!(#options.with_temp_folder(#private::TempFolder::new(#folder)));
        }
        if let Some(file) = &self.trace {
            options = quote!(#options.with_trace(#private::TraceFile::new(#file)));
        }
        options
    }
}
