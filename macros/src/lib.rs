//! Procedural macros of parjob. Use them through the `parjob` crate.
//!
//! Every macro parses its input into a model, checks the model, then
//! expands it (`parse.rs`, `check.rs`, `expand.rs`; a marked loop's body
//! is analysed and rewritten by `loops/analyse.rs` and `loops/rewrite.rs`). Errors are collected,
//! spanned on the user's tokens, and emitted next to the user's item
//! unchanged, so one mistake does not cascade into many. Expansions name the
//! runtime only through `::parjob::__private` (or `crate = "..."`).
//!
//! Each macro's page is a file in `doc/`, with its full option table and
//! examples. The examples are compiled and run as doctests of the `parjob`
//! crate (they need it), not of this one.

use proc_macro::TokenStream;

mod diagnostics;
mod entry;
mod loops;
mod memoize;
mod options;
mod parallel;

#[cfg_attr(not(doctest), doc = include_str!("../doc/parallel.md"))]
#[proc_macro_attribute]
pub fn parallel(args: TokenStream, item: TokenStream) -> TokenStream {
    parallel::attribute(args.into(), item.into()).into()
}

#[cfg_attr(not(doctest), doc = include_str!("../doc/memoize.md"))]
#[proc_macro_attribute]
pub fn memoize(args: TokenStream, item: TokenStream) -> TokenStream {
    memoize::attribute(args.into(), item.into()).into()
}

/// `#[memoize]` in a build of parjob without its `cache` feature: one error
/// that says how to turn the feature on, and the function unchanged, so
/// its callers still compile.
#[doc(hidden)]
#[proc_macro_attribute]
pub fn memoize_without_cache(_args: TokenStream, item: TokenStream) -> TokenStream {
    let item = proc_macro2::TokenStream::from(item);
    quote::quote! {
        ::core::compile_error!(
            "#[memoize] needs parjob's `cache` feature, which this build turned off \
             (`default-features = false`): add `features = [\"cache\"]` to parjob in Cargo.toml"
        );
        #item
    }
    .into()
}

#[cfg_attr(not(doctest), doc = include_str!("../doc/parallel_for.md"))]
#[proc_macro]
pub fn parallel_for(input: TokenStream) -> TokenStream {
    loops::parallel_for(input.into()).into()
}

#[cfg_attr(not(doctest), doc = include_str!("../doc/main.md"))]
#[proc_macro_attribute]
pub fn main(args: TokenStream, item: TokenStream) -> TokenStream {
    entry::attribute(entry::Kind::Main, args.into(), item.into()).into()
}

#[cfg_attr(not(doctest), doc = include_str!("../doc/test.md"))]
#[proc_macro_attribute]
pub fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    entry::attribute(entry::Kind::Test, args.into(), item.into()).into()
}
