//! Each option's value: parsed from the attribute's tokens, and checked,
//! with an error that shows a value that works.

use super::{duration_seconds, BackendName, Batch, PreDispatch, PreferName, ReturnAs, KNOWN};
use crate::diagnostics::{closest, Errors};
use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, ExprUnary, Lit, Meta, UnOp};

pub(super) fn example(name: &str) -> &'static str {
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
        "inner_max_num_threads" => "inner_max_num_threads = 2",
        "on_error" => "on_error = \"continue\"",
        "retries" => "retries = 2",
        "retry_panics" => "retry_panics = true",
        "max_worker_memory" => "max_worker_memory = \"2GB\"",
        "speculate" => "speculate = true",
        "speculation_multiplier" => "speculation_multiplier = 4",
        "trace" => "trace = \"run.json\"",
        _ => "crate = \"::parjob\"",
    }
}

/// `true` or `false`, for the option `name`.
pub(super) fn parse_bool(name: &str, value: &Expr, errors: &mut Errors) -> Option<bool> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Bool(b), ..
        }) => Some(b.value),
        _ => {
            errors.spanned(value, format!("{name} takes `true` or `false`"));
            None
        }
    }
}

/// `max_worker_memory = "2GB"`: a size in a string, not zero.
pub(super) fn parse_max_worker_memory(value: &Expr, errors: &mut Errors) -> Option<u64> {
    let bytes = string(value).and_then(|s| parjob_syntax::size_bytes(&s.value()));
    match bytes {
        Some(0) => errors.spanned(
            value,
            "max_worker_memory = 0 would stop every worker: give a size like \"2GB\", or leave the option out",
        ),
        Some(bytes) => return Some(bytes),
        None => errors.spanned(
            value,
            "max_worker_memory takes the most memory one worker process may hold, as a size in a string, e.g. max_worker_memory = \"2GB\" (or \"512MB\")",
        ),
    }
    None
}

/// `speculation_multiplier = 4`: a whole number, at least 2.
pub(super) fn parse_multiplier(value: &Expr, errors: &mut Errors) -> Option<u32> {
    match positive_int(value).and_then(|n| u32::try_from(n).ok()) {
        Some(k) if k >= 2 => Some(k),
        _ => {
            errors.spanned(
                value,
                "speculation_multiplier takes a whole number, at least 2: how many times its task's median a job must run before it gets a copy, e.g. speculation_multiplier = 4",
            );
            None
        }
    }
}

pub(super) fn bad_inner_threads(value: &Expr, errors: &mut Errors) {
    errors.spanned(
        value,
        "inner_max_num_threads takes a positive integer, the threads each worker process may use, e.g. inner_max_num_threads = 2",
    );
}

pub(super) fn positive_int(value: &Expr) -> Option<usize> {
    match int_literal(value) {
        Some((false, lit)) => lit.base10_parse::<usize>().ok(),
        _ => None,
    }
}

pub(super) fn parse_batch_size(value: &Expr, errors: &mut Errors) -> Option<Batch> {
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

pub(super) fn parse_pre_dispatch(value: &Expr, errors: &mut Errors) -> Option<PreDispatch> {
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
pub(super) fn parse_timeout(value: &Expr, errors: &mut Errors) -> Option<u64> {
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
pub(super) const MMAP_MODE: &str = "parjob takes joblib's mmap_mode from each parameter's type, not from an option: \
     `&[T]` is a read-only view of shared memory (\"r\"), a by-value `Vec<T>` is the task's own copy to change (\"c\"), \
     and `parjob::shm::SharedSliceMut` lends chunks that jobs write in place (\"r+\"). Remove mmap_mode";

/// joblib's `max_nbytes`: a byte count, a size string (`"1M"`), or
/// `"none"` (joblib's `None`).
pub(super) fn parse_max_nbytes(value: &Expr, errors: &mut Errors) -> Option<Option<u64>> {
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
pub(super) fn parse_verbose(value: &Expr, errors: &mut Errors) -> Option<u32> {
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

pub(super) fn parse_prefer(value: &Expr, errors: &mut Errors) -> Option<(PreferName, Span)> {
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

pub(super) fn parse_on_error(value: &Expr, errors: &mut Errors) -> Option<bool> {
    let continues = string(value).and_then(|s| parjob_syntax::on_error_continues(&s.value()));
    if continues.is_none() {
        errors.spanned(
            value,
            "on_error takes \"stop\" (joblib's: the first error ends the run) or \"continue\" (every item runs, and each failure is that item's Err)",
        );
    }
    continues
}

pub(super) fn parse_require(value: &Expr, errors: &mut Errors) -> Option<Span> {
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

pub(super) fn parse_return_as(value: &Expr, errors: &mut Errors) -> Option<ReturnAs> {
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

pub(super) fn unknown(meta: &Meta, name: &str, errors: &mut Errors) {
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

pub(super) fn parse_n_jobs(value: &Expr, errors: &mut Errors) -> Option<i32> {
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
pub(super) fn int_literal(value: &Expr) -> Option<(bool, &syn::LitInt)> {
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

pub(super) fn bad_n_jobs(value: &Expr, errors: &mut Errors) -> Option<i32> {
    errors.spanned(
        value,
        "n_jobs takes an integer literal (e.g. 4, or -1 for every CPU); for a value computed at run time, use Parallel::new().n_jobs(..)",
    );
    None
}

pub(super) fn parse_backend(value: &Expr, errors: &mut Errors) -> Option<(BackendName, Span)> {
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
