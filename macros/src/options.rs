//! The options every parjob macro shares: `n_jobs`, `backend`, `crate`.
//!
//! They are parsed from `name = value` pairs and checked here, so every
//! macro gives the same error, with a suggestion, for the same mistake.

use crate::diagnostics::{closest, Errors};
use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, ExprUnary, Lit, Meta, Token, UnOp};

/// The option names the macros accept.
pub const KNOWN: &[&str] = &["n_jobs", "backend", "crate"];

/// Where jobs run, as named in an attribute.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum BackendName {
    Sequential,
    Thread,
    Process,
}

/// Options given in an attribute.
#[derive(Default)]
pub struct Opts {
    pub n_jobs: Option<i32>,
    pub backend: Option<(BackendName, Span)>,
    pub krate: Option<syn::Path>,
}

impl Opts {
    /// Parses `name = value, ...`, recording every mistake in `errors`.
    pub fn parse(args: TokenStream, errors: &mut Errors) -> Opts {
        let mut opts = Opts::default();
        let metas = match Punctuated::<Meta, Token![,]>::parse_terminated.parse2(args) {
            Ok(metas) => metas,
            Err(e) => {
                errors.push(e);
                return opts;
            }
        };
        for meta in metas {
            let name = meta
                .path()
                .get_ident()
                .map(ToString::to_string)
                .unwrap_or_default();
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
        opts
    }

    /// The path to the runtime's private API.
    pub fn private_path(&self) -> TokenStream {
        match &self.krate {
            Some(path) => quote!(#path::__private),
            None => quote!(::parjob::__private),
        }
    }

    pub fn is_process(&self) -> bool {
        matches!(self.backend, Some((BackendName::Process, _)))
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
            };
            options = quote!(#options.with_backend(#private::Backend::#variant));
        }
        options
    }
}

fn example(name: &str) -> &'static str {
    match name {
        "n_jobs" => "n_jobs = 4 (or -1 for every CPU)",
        "backend" => "backend = \"process\"",
        _ => "crate = \"::parjob\"",
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

fn string(value: &Expr) -> Option<&syn::LitStr> {
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
            "backend takes a string: \"thread\", \"process\" or \"sequential\"",
        );
        return None;
    };
    let name = s.value();
    let backend = match name.as_str() {
        "thread" => BackendName::Thread,
        "process" => BackendName::Process,
        "sequential" => BackendName::Sequential,
        other => {
            let hint = match closest(other, &["thread", "process", "sequential"]) {
                Some(guess) => format!(" (did you mean \"{guess}\"?)"),
                None => String::new(),
            };
            errors.spanned(
                value,
                format!("unknown backend \"{other}\"{hint}: valid backends are \"thread\" (the default), \"process\" and \"sequential\""),
            );
            return None;
        }
    };
    Some((backend, s.span()))
}
