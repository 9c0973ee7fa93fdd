//! Marked `for` loops inside a `#[parallel]` function, and `parallel_for!`.
//!
//! `parse` takes the marker and options off a loop, `analyse` models the
//! body (what it updates, where it stops, what it may not do), `rewrite`
//! turns it into a closure that logs its updates, `remote` handles bodies that call a process task,
//! and `expand` writes the code that runs them on the runtime's `loops`
//! engine.

mod analyse;
mod expand;
mod parse;
mod places;
mod remote;
mod rewrite;

use crate::diagnostics::Errors;
use crate::options::{Opts, ReturnAs};
use analyse::Kind;
use parse::{ParallelFor, ParallelLoop};
use proc_macro2::TokenStream;
use quote::quote;
use syn::visit_mut::VisitMut;
use syn::Expr;

/// Rewrites every marked loop in `block`, innermost first, with `outer`
/// (the function's options) as defaults.
pub fn rewrite_marked(block: &mut syn::Block, outer: &Opts, errors: &mut Errors) {
    Marked { outer, errors }.visit_block_mut(block);
}

struct Marked<'a> {
    outer: &'a Opts,
    errors: &'a mut Errors,
}

impl VisitMut for Marked<'_> {
    fn visit_expr_mut(&mut self, expr: &mut Expr) {
        syn::visit_mut::visit_expr_mut(self, expr);
        let Expr::ForLoop(for_loop) = expr else {
            return;
        };
        let before = self.errors.count();
        let Some(mut marked) = ParallelLoop::take(for_loop, self.outer, self.errors) else {
            return;
        };
        let rewritten = marked_loop(&mut marked, self.errors);
        // With an error, the loop stays as written (less its marker), so the
        // user sees only the errors that matter.
        if self.errors.count() == before {
            if let Some(rewritten) = rewritten {
                *expr = Expr::Verbatim(rewritten);
            }
        }
    }

    fn visit_item_mut(&mut self, _: &mut syn::Item) {}
}

fn marked_loop(marked: &mut ParallelLoop, errors: &mut Errors) -> Option<TokenStream> {
    if let Some(label) = &marked.for_loop.label {
        errors.spanned(
            label,
            "a parallel loop cannot have a label: its body runs as a closure per item, so nothing can \
             `break` or `continue` to it. Remove the label (and any `break`)",
        );
    }
    if marked.own.return_as.is_some() {
        errors.spanned(
            &marked.attr,
            "`return_as` applies to `parallel_for!`, which gives values; a marked loop gives none",
        );
    }
    let private = marked.opts.private_path();
    if marked.own.backend_is_process() {
        let remote = remote::loop_body(&marked.for_loop.body, errors)?;
        return Some(expand::process_loop(
            &marked.for_loop,
            &remote,
            &marked.opts,
        ));
    }
    // A process backend inherited from the function does not apply: the
    // function already runs in a worker, and its loops run on its threads.
    if marked.opts.backend_is_process() {
        marked.opts.backend = None;
    }
    only_threads_options(&marked.own, &marked.attr, errors);
    let body = rewrite::body(
        &marked.for_loop.body,
        &marked.for_loop.pat,
        Kind::Loop,
        &private,
        errors,
    );
    Some(expand::thread_loop(
        &marked.for_loop,
        &body,
        &marked.opts,
        marked.own.sets_workers(),
    ))
}

fn only_threads_options(own: &Opts, span: &TokenStream, errors: &mut Errors) {
    for name in own.scheduler_only() {
        errors.spanned(
            span,
            format!(
                "`{name}` does not apply to a loop on threads: its body runs as one closure per item, \
                 without the scheduler's batches. Use a `#[parallel]` function with `f::map` for it"
            ),
        );
    }
}

/// `parallel_for!(options; for pattern in iterator { body })`.
pub fn parallel_for(input: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let expanded =
        ParallelFor::parse(input, &mut errors).and_then(|pf| expand_for(&pf, &mut errors));
    match expanded {
        Some(tokens) if errors.is_empty() => tokens,
        _ => {
            let errors = errors.to_compile_errors();
            quote!({ #errors ::core::unreachable!() })
        }
    }
}

fn expand_for(pf: &ParallelFor, errors: &mut Errors) -> Option<TokenStream> {
    let opts = &pf.opts;
    if let Some(label) = &pf.for_loop.label {
        errors.spanned(label, "a `parallel_for!` loop cannot have a label");
    }
    if opts.backend_is_process() {
        let remote = remote::value_body(&pf.for_loop.body, errors)?;
        return Some(expand::process_for(&pf.for_loop, &remote, opts));
    }
    let private = opts.private_path();
    let body = rewrite::body(
        &pf.for_loop.body,
        &pf.for_loop.pat,
        Kind::Comprehension,
        &private,
        errors,
    );
    match opts.return_as.unwrap_or_default() {
        ReturnAs::List => {
            if !opts.scheduler_only().is_empty() {
                only_threads_options(opts, &quote!(parallel_for), errors);
            }
            Some(expand::thread_list(
                &pf.for_loop,
                &body,
                opts,
                opts.sets_workers(),
            ))
        }
        ReturnAs::Generator | ReturnAs::GeneratorUnordered => {
            if body.question || !body.effects.is_empty() {
                errors.spanned(
                    &pf.for_loop.body,
                    "a streaming `parallel_for!` runs each body as a job that owns its data and outlives this \
                     statement, so the body cannot use `?` or update outer variables. Use the default \
                     `return_as = \"list\"` for that",
                );
            }
            Some(expand::thread_stream(&pf.for_loop, opts))
        }
    }
}
