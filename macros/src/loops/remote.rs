//! Loops on the process backend: the body must call a process task, whose
//! arguments are evaluated here and whose call runs in a worker.
//!
//! A closure cannot cross a process boundary, so the only thing a worker
//! can run is a function it finds by name. A marked loop's body is then
//! one statement: the call, or the call folded into an outer variable
//! (`total += simulate(s, 100);`, `out.push(simulate(s, 100));`,
//! `best = best.max(simulate(s, 100));`). A `parallel_for!` body is the call.

use super::analyse::FORMS;
use super::places::place;
use crate::diagnostics::Errors;
use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{BinOp, Expr, ExprCall, Path};

/// What happens to each call's result.
pub enum Sink {
    /// Dropped (a bare call statement).
    Discard,
    /// `target op= result`.
    Compound(Expr, BinOp),
    /// `target.push(result)` or `.extend(result)`.
    Method(Expr, syn::Ident),
    /// `target = target.max(result)` or `.min`.
    Extremum(Expr, syn::Ident),
}

/// A process-backend body: a task call and where its result goes.
pub struct Remote {
    pub callee: Path,
    pub args: Vec<Expr>,
    pub sink: Sink,
}

fn why(what: &str) -> String {
    format!(
        "with backend = \"process\", {what} must be a call of a process task, e.g. `simulate(seed, 100)`: \
         each call runs in a worker process, which finds the function by name, and a closure cannot cross a \
         process boundary. Put the work in a free function marked `#[parallel(backend = \"process\")]` and call it here"
    )
}

fn call_of(expr: &Expr) -> Option<(Path, Vec<Expr>)> {
    match expr {
        Expr::Call(ExprCall { func, args, .. }) => match &**func {
            Expr::Path(p) if p.qself.is_none() => {
                Some((p.path.clone(), args.iter().cloned().collect()))
            }
            _ => None,
        },
        Expr::Paren(p) => call_of(&p.expr),
        _ => None,
    }
}

/// The single expression of a block, if that is all it holds.
fn only_expr(block: &syn::Block) -> Option<&Expr> {
    match block.stmts.as_slice() {
        [syn::Stmt::Expr(expr, _)] => Some(expr),
        _ => None,
    }
}

/// A marked loop's body on the process backend.
pub fn loop_body(block: &syn::Block, errors: &mut Errors) -> Option<Remote> {
    let Some(expr) = only_expr(block) else {
        errors.spanned(
            block,
            format!(
                "{} (one statement; it may fold the result with {FORMS})",
                why("the loop's body")
            ),
        );
        return None;
    };
    let found = match expr {
        Expr::Binary(b) if place(&b.left).is_some() => {
            call_of(&b.right).map(|c| (c, Sink::Compound((*b.left).clone(), b.op)))
        }
        Expr::MethodCall(m)
            if (m.method == "push" || m.method == "extend")
                && m.args.len() == 1
                && place(&m.receiver).is_some() =>
        {
            call_of(&m.args[0]).map(|c| (c, Sink::Method((*m.receiver).clone(), m.method.clone())))
        }
        Expr::Assign(a) => match &*a.right {
            Expr::MethodCall(m)
                if (m.method == "max" || m.method == "min")
                    && m.args.len() == 1
                    && place(&a.left).is_some()
                    && place(&a.left).map(|p| p.1) == place(&m.receiver).map(|p| p.1) =>
            {
                call_of(&m.args[0])
                    .map(|c| (c, Sink::Extremum((*a.left).clone(), m.method.clone())))
            }
            _ => None,
        },
        other => call_of(other).map(|c| (c, Sink::Discard)),
    };
    match found {
        Some(((callee, args), sink)) => Some(Remote { callee, args, sink }),
        None => {
            errors.spanned(expr, why("the loop's body"));
            None
        }
    }
}

/// A `parallel_for!` body on the process backend.
pub fn value_body(block: &syn::Block, errors: &mut Errors) -> Option<Remote> {
    match only_expr(block).and_then(call_of) {
        Some((callee, args)) => Some(Remote {
            callee,
            args,
            sink: Sink::Discard,
        }),
        None => {
            errors.spanned(block, why("the body"));
            None
        }
    }
}

/// A module that names the callee in the type namespace: the task's struct
/// when it has one, and otherwise a stand-in, `unmarked::<name>`, so the
/// call gets parjob's "not a process task" error instead of a missing name.
/// The stand-in is a task of nothing that takes any item, so that error is
/// the only one. Returns the module and the path to use as the task type.
pub fn lookup(callee: &Path, private: &TokenStream) -> (TokenStream, TokenStream) {
    let span = callee.span();
    let last = &callee.segments.last().expect("a path has a segment").ident;
    let import = if callee.leading_colon.is_some() {
        quote!(#callee)
    } else {
        match callee
            .segments
            .first()
            .map(|s| s.ident.to_string())
            .as_deref()
        {
            Some("crate") => quote!(#callee),
            Some("self") => {
                let rest = callee.segments.iter().skip(1);
                quote!(super::#(#rest)::*)
            }
            _ => quote!(super::#callee),
        }
    };
    let module = format_ident!("__parjob_task_{}", last);
    let tokens = quote! {
        #[allow(non_snake_case, unused_imports)]
        mod #module {
            #[allow(non_camel_case_types, dead_code)]
            mod unmarked {
                pub struct #last;
                impl #private::Task for #last {
                    const NAME: &'static str = "unmarked";
                    type Args = ();
                    type Output = #private::loops::Unmarked;
                    fn call(_: ()) -> #private::loops::Unmarked {
                        ::core::unreachable!("an unmarked function is never called")
                    }
                    fn options() -> #private::Options {
                        #private::Options::new()
                    }
                }
                impl #private::Crossing<(), #private::loops::Unmarked> for #last {}
                impl<I> #private::FromItem<I> for #last {
                    fn from_item(_: I) {}
                }
            }
            pub(super) use self::unmarked::*;
            pub(super) use #import;
        }
    };
    let task = quote_spanned!(span=> #module::#last);
    (tokens, task)
}

/// The expression that evaluates one item's arguments and makes them the
/// task's argument tuple, through the task's `FromItem`: a borrowed value
/// for a `&T` parameter is cloned into the job, and a wrong one is the
/// task's own "cannot take items of type" error, on the call.
pub fn args_tuple(remote: &Remote, task: &TokenStream, private: &TokenStream) -> TokenStream {
    let args: Vec<TokenStream> = remote.args.iter().map(ToTokens::to_token_stream).collect();
    let item = if args.len() == 1 {
        quote!(#(#args)*)
    } else {
        quote!((#(#args,)*))
    };
    let span = remote.callee.span();
    quote_spanned!(span=> <#task as #private::FromItem<_>>::from_item(#item))
}
