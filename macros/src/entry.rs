//! `#[parjob::main]` and `#[parjob::test]`: the worker entry at the top of
//! `main` or of a test (docs/decisions.md).
//!
//! Both insert one call as the function's first statement. In a process
//! started as a worker, that call serves tasks and exits; anywhere else it
//! records that the program can be re-executed as a worker. `#[parjob::test]`
//! also adds `#[test]`.

use crate::diagnostics::Errors;
use crate::options::Opts;
use proc_macro2::TokenStream;
use quote::quote;
use syn::ItemFn;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Main,
    Test,
}

pub fn attribute(kind: Kind, args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let opts = Opts::parse(args, &mut errors);
    if opts.n_jobs.is_some() || opts.backend.is_some() {
        errors.push(syn::Error::new(
            proc_macro2::Span::call_site(),
            "#[parjob::main] and #[parjob::test] take only `crate = \"...\"`; put n_jobs and backend on #[parallel] or a Parallel",
        ));
    }
    let what = match kind {
        Kind::Main => "#[parjob::main] goes on `fn main`",
        Kind::Test => "#[parjob::test] goes on a test function, in place of #[test]",
    };
    let mut function: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(_) => {
            errors.push(syn::Error::new_spanned(&item, what));
            let errors = errors.to_compile_errors();
            return quote!(#errors #item);
        }
    };
    if let Some(input) = function.sig.inputs.first() {
        errors.spanned(input, format!("{what}, which takes no arguments"));
    }
    let private = opts.private_path();
    let entry: syn::Stmt = match kind {
        Kind::Main => syn::parse_quote!(#private::init();),
        Kind::Test => {
            let name = function.sig.ident.to_string();
            syn::parse_quote!(#private::test_entry(::core::module_path!(), #name);)
        }
    };
    function.block.stmts.insert(0, entry);
    let errors = errors.to_compile_errors();
    match kind {
        Kind::Main => quote!(#errors #function),
        Kind::Test => quote! {
            #errors
            #[::core::prelude::v1::test]
            #function
        },
    }
}
