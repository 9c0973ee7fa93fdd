//! `#[parallel(...)]` on a free function: parse, check, expand. On a
//! method (with `self`) it only rewrites the marked loops inside.

mod check;
mod expand;
mod parse;

use crate::diagnostics::Errors;
use crate::options::Opts;
use proc_macro2::TokenStream;
use quote::quote;

pub fn attribute(args: TokenStream, item: TokenStream) -> TokenStream {
    if let Ok(for_loop) = syn::parse2::<syn::ExprForLoop>(item.clone()) {
        return loop_outside_a_task(&for_loop);
    }
    let mut errors = Errors::default();
    let opts = Opts::parse(args, &mut errors);
    let option_errors = errors.count();
    let Some(mut task) = parse::TaskFn::parse(item.clone(), opts, &mut errors) else {
        let errors = errors.to_compile_errors();
        return quote!(#errors #item);
    };
    // A `#[memoize]` below this attribute must not make the struct again.
    for attr in &mut task.item.attrs {
        if attr
            .path()
            .segments
            .last()
            .is_some_and(|s| s.ident == "memoize")
        {
            mark_struct_made(attr);
        }
    }
    // Marked loops first, with the function's options as their defaults.
    crate::loops::rewrite_marked(&mut task.item.block, &task.opts, &mut errors);
    if task.item.sig.receiver().is_some() {
        // A method hosts parallel loops but is not a task: `self` cannot
        // travel with a job.
        if let Some((_, span)) = task.opts.backend.filter(|_| task.opts.is_process()) {
            errors.push(syn::Error::new(
                span,
                "a method cannot be a process task: a worker process finds a task by name, and `self` cannot \
                 travel to it. Use a free function marked #[parallel(backend = \"process\")] that takes what it \
                 needs from `self` as arguments",
            ));
        }
        let errors = errors.to_compile_errors();
        let item = &task.item;
        return quote!(#errors #item);
    }
    check::check(&task, &mut errors);
    if errors.count() > option_errors {
        // Emit the function unchanged, so its other uses still compile and
        // the user sees only the errors that matter.
        let errors = errors.to_compile_errors();
        let item = &task.item;
        return quote!(#errors #item);
    }
    // Only options were wrong: expand with the options that parsed, so
    // `f::map` and the other uses of the task still resolve and the user
    // sees the one mistake, not a cascade (thiserror's fallback).
    let errors = errors.to_compile_errors();
    let expansion = expand::expand(&task);
    quote!(#errors #expansion)
}

/// `#[parallel]` on a `for` loop in a function that is not marked: rustc
/// hands the loop to this attribute (and says attributes on expressions
/// are experimental). One error that says what to do, and the loop,
/// unchanged, as one expression.
fn loop_outside_a_task(for_loop: &syn::ExprForLoop) -> TokenStream {
    let error = syn::Error::new_spanned(
        for_loop.for_token,
        "a `#[parallel]` loop must be inside a function marked `#[parallel]`: rustc runs \
         attributes on a loop only there. Mark the enclosing function `#[parallel]`, or \
         write the loop as `parallel_for!(for x in xs { .. })`, which works in any function",
    )
    .to_compile_error();
    quote!({ #error; #for_loop })
}

/// Adds the hidden option that tells `#[memoize]` the struct exists.
fn mark_struct_made(attr: &mut syn::Attribute) {
    let flag = proc_macro2::Ident::new(crate::memoize::WITH_STRUCT, proc_macro2::Span::call_site());
    let tokens = match &attr.meta {
        syn::Meta::List(list) if !list.tokens.is_empty() => {
            let existing = &list.tokens;
            quote!(#existing, #flag)
        }
        _ => quote!(#flag),
    };
    let path = attr.path().clone();
    attr.meta = syn::Meta::List(syn::MetaList {
        path,
        delimiter: syn::MacroDelimiter::Paren(Default::default()),
        tokens,
    });
}
