//! The models of a marked loop and of a `parallel_for!` invocation.

use crate::diagnostics::Errors;
use crate::options::Opts;
use proc_macro2::{TokenStream, TokenTree};
use syn::parse::{Parse, ParseStream};
use syn::{Attribute, Expr, ExprForLoop};

/// A `for` loop to run in parallel, with the options it was given.
pub struct ParallelLoop {
    /// The loop, without its `#[parallel]` attribute.
    pub for_loop: ExprForLoop,
    /// The loop's own options (empty for a bare `#[parallel]`).
    pub own: Opts,
    /// The options in force: the function's, overridden by the loop's.
    pub opts: Opts,
    /// The tokens to span errors about the whole loop on.
    pub attr: TokenStream,
}

/// Whether `attr` is `#[parallel]` or `#[parallel(..)]` (or `parjob::parallel`).
pub fn is_marker(attr: &Attribute) -> bool {
    attr.path()
        .segments
        .last()
        .is_some_and(|s| s.ident == "parallel")
}

impl ParallelLoop {
    /// Takes the marker off a `for` loop, if it has one, and parses its options.
    pub fn take(
        for_loop: &mut ExprForLoop,
        outer: &Opts,
        errors: &mut Errors,
    ) -> Option<ParallelLoop> {
        let at = for_loop.attrs.iter().position(is_marker)?;
        let attr = for_loop.attrs.remove(at);
        let own = match &attr.meta {
            syn::Meta::Path(_) => Opts::default(),
            syn::Meta::List(list) => Opts::parse(list.tokens.clone(), errors),
            syn::Meta::NameValue(nv) => {
                errors.spanned(
                    nv,
                    "write a marked loop's options in parentheses, e.g. `#[parallel(n_jobs = 2)]`",
                );
                Opts::default()
            }
        };
        let opts = outer.overridden_by(&own);
        Some(ParallelLoop {
            for_loop: for_loop.clone(),
            own,
            opts,
            attr: quote::ToTokens::to_token_stream(&attr),
        })
    }
}

/// `parallel_for!(options; for pat in iter { body })`.
pub struct ParallelFor {
    pub opts: Opts,
    pub for_loop: ExprForLoop,
}

impl ParallelFor {
    pub fn parse(input: TokenStream, errors: &mut Errors) -> Option<ParallelFor> {
        // Options come before the first top-level `;`, when there is one.
        let tokens: Vec<TokenTree> = input.into_iter().collect();
        let split = tokens
            .iter()
            .position(|t| matches!(t, TokenTree::Punct(p) if p.as_char() == ';'));
        let (opts, body): (TokenStream, TokenStream) = match split {
            Some(at) => (
                tokens[..at].iter().cloned().collect(),
                tokens[at + 1..].iter().cloned().collect(),
            ),
            None => (TokenStream::new(), tokens.into_iter().collect()),
        };
        let opts = Opts::parse(opts, errors);
        match syn::parse2::<LoopOnly>(body) {
            Ok(LoopOnly(for_loop)) => Some(ParallelFor { opts, for_loop }),
            Err(e) => {
                errors.push(syn::Error::new(
                    e.span(),
                    "parallel_for! takes `options; for pattern in iterator { body }`, \
                     e.g. `parallel_for!(n_jobs = 2; for x in 0..100u64 { x * x })`",
                ));
                None
            }
        }
    }
}

struct LoopOnly(ExprForLoop);

impl Parse for LoopOnly {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let expr: Expr = input.parse()?;
        let Expr::ForLoop(for_loop) = expr else {
            return Err(input.error("expected a `for` loop"));
        };
        if !input.is_empty() {
            return Err(input.error("expected the end after the `for` loop"));
        }
        Ok(LoopOnly(for_loop))
    }
}
