//! `#[parallel(...)]` on a free function: parse, check, expand.

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
    let Some(task) = parse::TaskFn::parse(item.clone(), opts, &mut errors) else {
        let errors = errors.to_compile_errors();
        return quote!(#errors #item);
    };
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
