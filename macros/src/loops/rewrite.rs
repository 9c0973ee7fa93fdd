//! The rewrite of a parallel loop's body into a closure that logs updates
//! of outer variables instead of applying them.
//!
//! [`body`] analyses a copy of the body (`analyse.rs`), reports what it may
//! not do, and rewrites that copy in place at the sites the analysis found:
//! an update becomes a push of its value to the item's log, a marked loop's
//! `continue` an early `Ok`, and `?` an early `Err(residual)`. The walk is
//! post-order, so a site's value is rewritten before the site itself.

use super::analyse::{analyse, Effect, Kind, Model, Site};
use super::places::bare;
use crate::diagnostics::Errors;
use proc_macro2::TokenStream;
use quote::{format_ident, quote, ToTokens};
use syn::visit_mut::VisitMut;
use syn::{Expr, Ident, Pat};

/// The analysed and rewritten body.
pub struct Body {
    /// The body with each update replaced by a log push, `continue` by an
    /// early `Ok`, and `?` by an early `Err(residual)`.
    pub parallel: syn::Block,
    pub effects: Vec<Effect>,
    /// The body uses `?` at its own level.
    pub question: bool,
    /// The outer variables the body reads, each at its first use.
    pub captured: Vec<Ident>,
}

/// Analyses `block`, the body of a loop over `pat`, reports its errors to
/// `errors`, and rewrites it.
pub fn body(
    block: &syn::Block,
    pat: &Pat,
    kind: Kind,
    private: &TokenStream,
    errors: &mut Errors,
) -> Body {
    let mut parallel = block.clone();
    let model = analyse(&parallel, pat, kind);
    let Model {
        sites,
        effects,
        question,
        captured,
        errors: found,
    } = model;
    for error in found {
        errors.push(error);
    }
    let mut rewriter = Rewriter {
        sites: &sites,
        effects: &effects,
        private,
    };
    rewriter.visit_block_mut(&mut parallel);
    Body {
        parallel,
        effects,
        question,
        captured,
    }
}

struct Rewriter<'a> {
    sites: &'a std::collections::HashMap<usize, Site>,
    effects: &'a [Effect],
    private: &'a TokenStream,
}

impl Rewriter<'_> {
    /// `__parjob_log.push(__ParjobEffect::E<n>(value))`.
    fn log(n: usize, value: TokenStream) -> Expr {
        let variant = format_ident!("E{}", n);
        syn::parse_quote!(__parjob_log.push(__ParjobEffect::#variant(#value)))
    }

    /// The value an update site logs, from the site as rewritten so far.
    fn logged_value(expr: &Expr) -> TokenStream {
        match expr {
            Expr::Binary(b) => bare(&b.right).to_token_stream(),
            Expr::Assign(a) => match &*a.right {
                Expr::MethodCall(m) => m.args[0].to_token_stream(),
                other => other.to_token_stream(),
            },
            Expr::MethodCall(call) => {
                let extend = call.method == "extend";
                let args = call.args.iter().map(|arg| {
                    if extend {
                        quote!(::core::iter::Iterator::collect::<::std::vec::Vec<_>>(
                            ::core::iter::IntoIterator::into_iter(#arg)
                        ))
                    } else {
                        arg.to_token_stream()
                    }
                });
                quote!((#(#args,)*))
            }
            other => other.to_token_stream(),
        }
    }

    fn question(&self, expr: &Expr) -> Expr {
        let private = self.private;
        let Expr::Try(t) = expr else {
            return expr.clone();
        };
        // `(e)?` becomes a call argument: the parentheses go.
        let inner = bare(&t.expr);
        syn::parse_quote!(
            match #private::loops::Question::branch(#inner) {
                ::core::ops::ControlFlow::Continue(__parjob_value) => __parjob_value,
                ::core::ops::ControlFlow::Break(__parjob_residual) => {
                    return ::core::result::Result::Err(__parjob_residual)
                }
            }
        )
    }
}

impl VisitMut for Rewriter<'_> {
    fn visit_item_mut(&mut self, _: &mut syn::Item) {}

    fn visit_macro_mut(&mut self, _: &mut syn::Macro) {}

    fn visit_expr_mut(&mut self, expr: &mut Expr) {
        syn::visit_mut::visit_expr_mut(self, expr);
        let Some(site) = self.sites.get(&(expr as *const Expr as usize)) else {
            return;
        };
        *expr = match *site {
            Site::Update(n) if n < self.effects.len() => Self::log(n, Self::logged_value(expr)),
            Site::Update(_) => return,
            Site::Continue => syn::parse_quote!(return ::core::result::Result::Ok(())),
            Site::Question => self.question(expr),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    fn rewritten(block: syn::Block, kind: Kind) -> String {
        let mut errors = Errors::default();
        let body = body(&block, &parse_quote!(x), kind, &quote!(p), &mut errors);
        assert!(errors.is_empty());
        body.parallel.to_token_stream().to_string()
    }

    #[test]
    fn updates_continue_and_question_marks_are_rewritten_in_place() {
        let text = rewritten(
            parse_quote!({
                if x > 3 {
                    continue;
                }
                total += f(x)?;
                seen.push(x);
                best = best.max(x);
            }),
            Kind::Loop,
        );
        for expected in [
            "return :: core :: result :: Result :: Ok (())",
            "__parjob_log . push (__ParjobEffect :: E0 (match p :: loops :: Question :: branch (f (x))",
            "__parjob_log . push (__ParjobEffect :: E1 ((x ,)))",
            "__parjob_log . push (__ParjobEffect :: E2 (x))",
        ] {
            assert!(text.contains(expected), "{expected}\nnot in\n{text}");
        }
        assert!(!text.contains("total +="), "{text}");
    }

    #[test]
    fn local_updates_stay_as_they_are() {
        let text = rewritten(
            parse_quote!({
                let mut local = 0;
                local += x;
                local
            }),
            Kind::Comprehension,
        );
        assert!(text.contains("local += x"), "{text}");
        assert!(!text.contains("__parjob_log"), "{text}");
    }
}
