//! `#[memoize(..)]` on a free function: parse, check, expand.
//!
//! It stacks with `#[parallel]` in either order. Below `#[parallel]`, it
//! finds the hidden option that says the struct `f` already exists. Above
//! it, it sees the `#[parallel]` attribute on the item: it leaves the struct
//! to that attribute and rewrites the marked loops with its options, since
//! the body moves into `f::__parjob_compute`, where `#[parallel]` no longer
//! looks.

mod check;
mod expand;
mod parse;

use crate::diagnostics::Errors;
use crate::options::Opts;
use parse::{MemoFn, MemoOpts};
use proc_macro2::TokenStream;
use quote::{quote, ToTokens};

pub use parse::WITH_STRUCT;

pub fn attribute(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let opts = MemoOpts::parse(args, &mut errors);
    let mut item: syn::ItemFn = match syn::parse2::<syn::Item>(item.clone()) {
        Ok(syn::Item::Fn(f)) => f,
        Ok(other) => {
            errors.spanned(
                &other,
                "#[memoize] goes on a free function, e.g. `#[memoize(dir = \"./cache\")] fn features(path: String) -> Vec<f32> { .. }`",
            );
            let errors = errors.to_compile_errors();
            return quote!(#errors #item);
        }
        Err(e) => {
            errors.push(e);
            let errors = errors.to_compile_errors();
            return quote!(#errors #item);
        }
    };
    let source = item.to_token_stream().to_string();
    let parallel_attr = item
        .attrs
        .iter()
        .find(|a| {
            a.path()
                .segments
                .last()
                .is_some_and(|s| s.ident == "parallel")
        })
        .cloned();
    let with_struct = opts.with_struct || parallel_attr.is_some();
    if let Some(attr) = &parallel_attr {
        // `#[parallel]` reports its own option errors when it expands.
        let mut ignored = Errors::default();
        let parallel_opts = match &attr.meta {
            syn::Meta::List(list) => Opts::parse(list.tokens.clone(), &mut ignored),
            _ => Opts::default(),
        };
        crate::loops::rewrite_marked(&mut item.block, &parallel_opts, &mut errors);
    }
    let func = MemoFn { item, opts };
    check::check(&func, &mut errors);
    if !errors.is_empty() {
        let errors = errors.to_compile_errors();
        let item = &func.item;
        return quote!(#errors #item);
    }
    expand::expand(&func, &source, with_struct)
}
