//! `#[parjob::main]` and `#[parjob::test]`: the worker entry at the top of
//! `main` or of a test (docs/decisions.md).
//!
//! Both insert one call as the function's first statement. In a process
//! started as a worker, that call serves tasks and exits; anywhere else it
//! records that the program can be re-executed as a worker. `#[parjob::test]`
//! also adds `#[test]`.

use crate::diagnostics::Errors;
use crate::options::{named_metas, Opts};
use proc_macro2::TokenStream;
use quote::{quote, ToTokens};
use syn::ItemFn;

/// `#[test]`, `#[core::prelude::v1::test]` or `#[std::prelude::v1::test]`.
fn is_std_test(attr: &syn::Attribute) -> bool {
    let segments: Vec<String> = attr
        .path()
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect();
    match segments.as_slice() {
        [only] => only == "test",
        [root, .., last] => (root == "core" || root == "std") && last == "test",
        [] => false,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Main,
    Test,
}

pub fn attribute(kind: Kind, args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    // Only `crate = ".."` is an option here; every other is refused, on
    // its own tokens.
    let mut krate = TokenStream::new();
    for (name, meta) in named_metas(args, &mut errors) {
        if name == "crate" {
            krate = meta.to_token_stream();
        } else {
            errors.spanned(
                &meta,
                format!(
                    "#[parjob::main] and #[parjob::test] take only `crate = \"...\"`: \
                     put `{}` on a #[parallel] function or a Parallel",
                    meta.path().to_token_stream()
                ),
            );
        }
    }
    let opts = Opts::parse(krate, &mut errors);
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
    if kind == Kind::Test {
        for attr in function.attrs.iter().filter(|a| is_std_test(a)) {
            errors.spanned(
                attr,
                "#[parjob::test] already makes this function a test: remove this #[test] \
                 (with both, the test would be registered, and run, twice)",
            );
        }
        function.attrs.retain(|a| !is_std_test(a));
    }
    let private = opts.private_path();
    let entry: syn::Stmt = match kind {
        Kind::Main => syn::parse_quote!(#private::init();),
        Kind::Test => {
            let name = function.sig.ident.to_string();
            syn::parse_quote!(let __parjob_test_entry = #private::test_entry(::core::module_path!(), #name);)
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
