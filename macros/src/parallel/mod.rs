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
    let mut errors = Errors::default();
    let opts = Opts::parse(args, &mut errors);
    let Some(mut task) = parse::TaskFn::parse(item.clone(), opts, &mut errors) else {
        let errors = errors.to_compile_errors();
        return quote!(#errors #item);
    };
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
    if !errors.is_empty() {
        // Emit the function unchanged, so its other uses still compile and
        // the user sees only the errors that matter.
        let errors = errors.to_compile_errors();
        let item = &task.item;
        return quote!(#errors #item);
    }
    expand::expand(&task)
}
