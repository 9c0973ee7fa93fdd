//! What a parallel loop's body may do, and its rewrite into a closure that
//! logs updates of outer variables instead of applying them.
//!
//! A variable is *outer* when no pattern inside the body binds it (the
//! loop's own pattern, `let`, closure parameters, `match` arms, nested
//! loops). The body may update an outer variable only through the
//! recognised forms ([`FORMS`]); each becomes an effect, applied later in
//! iteration order. Everything else that would touch outer state, and
//! `break`, `return` and labels that leave the body, is an error spanned on
//! the user's tokens. A second pass then makes sure no accumulator is read
//! elsewhere in the body: iterations run at once, so a read could not see
//! the updates the sequential loop would have made before it.

use super::places::{bare, is_compound, place, root, Scopes, MUTATING, UPDATES};
use crate::diagnostics::Errors;
use proc_macro2::TokenStream;
use quote::{format_ident, quote, ToTokens};
use syn::punctuated::Punctuated;
use syn::visit_mut::VisitMut;
use syn::{BinOp, Expr, Ident, Pat, Token};

/// The allowed updates, for error messages.
pub const FORMS: &str = "`x += e` (or -=, *=, /=, %=, |=, &=, ^=, <<=, >>=), `v.push(e)`, \
     `v.extend(e)`, `m.insert(k, e)`, `s = s.max(e)` and `s = s.min(e)`";

/// Where the body sits: a marked loop (whose items have no value) or a
/// `parallel_for!` (whose body's value is the item's result).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Loop,
    Comprehension,
}

/// How a logged value is applied to its target.
pub enum Apply {
    /// `target op= value`.
    Compound(BinOp),
    /// `target.method(args..)`, with `extend`'s argument collected first.
    Method(Ident, usize),
    /// `target = target.max(value)` or `.min`.
    Extremum(Ident),
}

/// One recognised update site.
pub struct Effect {
    pub target: Expr,
    pub apply: Apply,
}

/// The analysed body.
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

/// Analyses and rewrites `block`, the body of a loop over `pat`.
pub fn analyse(
    block: &syn::Block,
    pat: &Pat,
    kind: Kind,
    private: &TokenStream,
    errors: &mut Errors,
) -> Body {
    let mut rewriter = Walker::new(Mode::Rewrite, kind, private, errors);
    rewriter.scopes.push();
    rewriter.scopes.bind(pat);
    let mut parallel = block.clone();
    rewriter.visit_block_mut(&mut parallel);
    let effects = std::mem::take(&mut rewriter.effects);
    let question = rewriter.question;
    let accumulators: Vec<String> = effects
        .iter()
        .filter_map(|e| place(&e.target).map(|(_, text)| text))
        .collect();
    let mut reads = Walker::new(Mode::CheckReads(accumulators), kind, private, errors);
    reads.scopes.push();
    reads.scopes.bind(pat);
    reads.visit_block_mut(&mut parallel.clone());
    let captured = reads.captured;
    Body {
        parallel,
        effects,
        question,
        captured,
    }
}

enum Mode {
    Rewrite,
    CheckReads(Vec<String>),
}

struct Walker<'a> {
    mode: Mode,
    kind: Kind,
    private: &'a TokenStream,
    scopes: Scopes,
    /// Inside a closure or an async block: control flow there is not ours.
    closure_depth: usize,
    /// Inside a loop nested in the body: `break`/`continue` are its own.
    loop_depth: usize,
    /// Labels defined inside the body.
    labels: Vec<String>,
    effects: Vec<Effect>,
    question: bool,
    rewrites: usize,
    captured: Vec<Ident>,
    errors: &'a mut Errors,
}

impl<'a> Walker<'a> {
    fn new(mode: Mode, kind: Kind, private: &'a TokenStream, errors: &'a mut Errors) -> Self {
        Walker {
            mode,
            kind,
            private,
            scopes: Scopes::default(),
            closure_depth: 0,
            loop_depth: 0,
            labels: Vec::new(),
            effects: Vec::new(),
            question: false,
            rewrites: 0,
            captured: Vec::new(),
            errors,
        }
    }

    fn rewriting(&self) -> bool {
        matches!(self.mode, Mode::Rewrite)
    }

    fn outer(&self, name: &str) -> bool {
        !self.scopes.is_local(name)
    }

    /// The outer place `expr` names, if it is one.
    fn outer_place(&self, expr: &Expr) -> Option<String> {
        place(expr)
            .filter(|(root, _)| self.outer(root))
            .map(|(_, text)| text)
    }

    fn outer_root(&self, expr: &Expr) -> Option<String> {
        root(expr).filter(|r| self.outer(r))
    }

    /// Replaces `expr` with a push of `value` to the log, as effect `apply`
    /// on `target`.
    fn log(&mut self, expr: &mut Expr, target: Expr, apply: Apply, value: TokenStream) {
        let variant = format_ident!("E{}", self.effects.len());
        self.effects.push(Effect { target, apply });
        self.rewrites += 1;
        *expr = syn::parse_quote!(__parjob_log.push(__ParjobEffect::#variant(#value)));
    }

    /// A statement-level call `v.push(..)`, `v.extend(..)`, `m.insert(..)`
    /// on an outer place: logged. Returns false when it is not one.
    fn update_call(&mut self, expr: &mut Expr) -> bool {
        let Expr::MethodCall(call) = expr else {
            return false;
        };
        let method = call.method.to_string();
        if !UPDATES.contains(&method.as_str()) || self.outer_place(&call.receiver).is_none() {
            return false;
        }
        for arg in call.args.iter_mut() {
            self.visit_expr_mut(arg);
        }
        let target = (*call.receiver).clone();
        let args: Vec<TokenStream> = call
            .args
            .iter()
            .map(|arg| {
                if method == "extend" {
                    quote!(::core::iter::Iterator::collect::<::std::vec::Vec<_>>(
                        ::core::iter::IntoIterator::into_iter(#arg)
                    ))
                } else {
                    arg.to_token_stream()
                }
            })
            .collect();
        let arity = args.len();
        let method = call.method.clone();
        self.log(
            expr,
            target,
            Apply::Method(method, arity),
            quote!((#(#args,)*)),
        );
        true
    }

    fn error(&mut self, tokens: impl ToTokens, message: impl std::fmt::Display) {
        if self.rewriting() {
            self.errors.spanned(tokens, message);
        }
    }

    fn check_read(&mut self, expr: &Expr) -> bool {
        let Mode::CheckReads(accumulators) = &self.mode else {
            return false;
        };
        let Some((root, text)) = place(expr) else {
            return false;
        };
        if !self.outer(&root) {
            return true;
        }
        let hit = accumulators
            .iter()
            .find(|acc| {
                **acc == text
                    || text.starts_with(&format!("{acc}."))
                    || acc.starts_with(&format!("{text}."))
            })
            .cloned();
        self.capture(expr);
        if let Some(acc) = hit {
            let message = format!(
                "this parallel loop updates `{acc}`, so its body cannot read `{text}`: the iterations run at once, \
                 and none would see the others' updates. Read it after the loop, or keep the value in a local"
            );
            self.errors.spanned(expr, message);
        }
        true
    }

    /// Notes the outer variable an expression starts from, for the
    /// thread-safety checks, once per name.
    fn capture(&mut self, expr: &Expr) {
        let root = match expr {
            Expr::Path(p) => p.path.get_ident(),
            Expr::Field(f) => return self.capture(&f.base),
            _ => None,
        };
        let Some(ident) = root else { return };
        let name = ident.to_string();
        let value_like = name.starts_with(|c: char| c.is_lowercase() || c == '_');
        if value_like && !name.starts_with("__parjob") && !self.captured.iter().any(|c| *c == name)
        {
            self.captured.push(ident.clone());
        }
    }

    /// Checks a macro's arguments when they parse as expressions: updates
    /// and control flow inside cannot be rewritten, reads are checked.
    fn visit_macro(&mut self, mac: &syn::Macro) {
        let parser = Punctuated::<Expr, Token![,]>::parse_terminated;
        let Ok(args) = mac.parse_body_with(parser) else {
            return;
        };
        let (effects, rewrites, question) = (self.effects.len(), self.rewrites, self.question);
        for mut arg in args {
            self.visit_expr_mut(&mut arg);
        }
        if self.rewrites != rewrites {
            self.effects.truncate(effects);
            self.rewrites = rewrites;
            self.question = question;
            let name = mac.path.to_token_stream().to_string().replace(' ', "");
            self.error(
                &mac.path,
                format!(
                    "parjob cannot rewrite an update, `continue` or `?` inside `{name}!` in a parallel loop: \
                     do it in a statement of its own (e.g. `let v = e?;` before the macro)"
                ),
            );
        }
    }

    fn visit_loop_body(
        &mut self,
        label: Option<&syn::Label>,
        pat: Option<&Pat>,
        body: &mut syn::Block,
    ) {
        if let Some(label) = label {
            self.labels.push(label.name.ident.to_string());
        }
        self.loop_depth += 1;
        self.scopes.push();
        if let Some(pat) = pat {
            self.scopes.bind(pat);
        }
        self.visit_block_mut(body);
        self.scopes.pop();
        self.loop_depth -= 1;
    }

    fn leaves_body(&self, label: &Option<syn::Lifetime>) -> bool {
        match label {
            Some(l) => !self.labels.contains(&l.ident.to_string()),
            None => self.loop_depth == 0,
        }
    }
}

impl VisitMut for Walker<'_> {
    fn visit_block_mut(&mut self, block: &mut syn::Block) {
        self.scopes.push();
        for stmt in &mut block.stmts {
            self.visit_stmt_mut(stmt);
        }
        self.scopes.pop();
    }

    fn visit_stmt_mut(&mut self, stmt: &mut syn::Stmt) {
        match stmt {
            syn::Stmt::Local(local) => {
                if let Some(init) = &mut local.init {
                    self.visit_expr_mut(&mut init.expr);
                    if let Some((_, diverge)) = &mut init.diverge {
                        self.visit_expr_mut(diverge);
                    }
                }
                self.scopes.bind(&local.pat);
            }
            syn::Stmt::Item(_) => {}
            syn::Stmt::Expr(expr, _) => {
                if !(self.rewriting() && self.update_call(expr)) {
                    self.visit_expr_mut(expr);
                }
            }
            syn::Stmt::Macro(m) => self.visit_macro(&m.mac.clone()),
        }
    }

    fn visit_item_mut(&mut self, _: &mut syn::Item) {}

    fn visit_expr_mut(&mut self, expr: &mut Expr) {
        if matches!(expr, Expr::Path(_) | Expr::Field(_)) && self.check_read(expr) {
            return;
        }
        match expr {
            Expr::Closure(c) => {
                self.closure_depth += 1;
                self.scopes.push();
                for input in &c.inputs {
                    self.scopes.bind(input);
                }
                self.visit_expr_mut(&mut c.body);
                self.scopes.pop();
                self.closure_depth -= 1;
            }
            Expr::Async(a) => {
                self.closure_depth += 1;
                self.visit_block_mut(&mut a.block);
                self.closure_depth -= 1;
            }
            Expr::ForLoop(f) => {
                self.visit_expr_mut(&mut f.expr);
                let pat = (*f.pat).clone();
                self.visit_loop_body(f.label.as_ref(), Some(&pat), &mut f.body);
            }
            Expr::While(w) => {
                self.scopes.push();
                match &mut *w.cond {
                    Expr::Let(l) => {
                        self.visit_expr_mut(&mut l.expr);
                        let pat = (*l.pat).clone();
                        self.scopes.bind(&pat);
                    }
                    cond => self.visit_expr_mut(cond),
                }
                self.visit_loop_body(w.label.as_ref(), None, &mut w.body);
                self.scopes.pop();
            }
            Expr::Loop(l) => self.visit_loop_body(l.label.as_ref(), None, &mut l.body),
            Expr::If(i) => {
                self.scopes.push();
                match &mut *i.cond {
                    Expr::Let(l) => {
                        self.visit_expr_mut(&mut l.expr);
                        let pat = (*l.pat).clone();
                        self.scopes.bind(&pat);
                    }
                    cond => self.visit_expr_mut(cond),
                }
                self.visit_block_mut(&mut i.then_branch);
                self.scopes.pop();
                if let Some((_, otherwise)) = &mut i.else_branch {
                    self.visit_expr_mut(otherwise);
                }
            }
            Expr::Match(m) => {
                self.visit_expr_mut(&mut m.expr);
                for arm in &mut m.arms {
                    self.scopes.push();
                    self.scopes.bind(&arm.pat);
                    if let Some((_, guard)) = &mut arm.guard {
                        self.visit_expr_mut(guard);
                    }
                    self.visit_expr_mut(&mut arm.body);
                    self.scopes.pop();
                }
            }
            Expr::Block(b) => {
                if let Some(label) = &b.label {
                    self.labels.push(label.name.ident.to_string());
                }
                self.visit_block_mut(&mut b.block);
            }
            Expr::Break(b) if self.closure_depth == 0 => {
                if self.leaves_body(&b.label) {
                    self.error(
                        &*expr,
                        "`break` cannot leave a parallel loop: every item runs at once, so there is no point to stop at. \
                         Select the items first (e.g. `.take_while(..)` on the iterator), or drop the loop's #[parallel]",
                    );
                } else if let Some(value) = &mut b.expr {
                    self.visit_expr_mut(value);
                }
            }
            Expr::Continue(c) if self.closure_depth == 0 => {
                if c.label.is_some() && self.leaves_body(&c.label) {
                    self.error(
                        &*expr,
                        "a parallel loop cannot be continued by label: its body runs as a closure per item. \
                         Use a plain `continue`",
                    );
                } else if c.label.is_none() && self.loop_depth == 0 {
                    match self.kind {
                        Kind::Loop => {
                            if self.rewriting() {
                                self.rewrites += 1;
                                *expr = syn::parse_quote!(
                                    return ::core::result::Result::Ok(())
                                );
                            }
                        }
                        Kind::Comprehension => self.error(
                            &*expr,
                            "`continue` has no value to give `parallel_for!`: every item's body gives one element. \
                             Filter the items first (`.filter(..)` on the iterator), or make the body an `Option`",
                        ),
                    }
                }
            }
            Expr::Return(_) if self.closure_depth == 0 => {
                self.error(
                    &*expr,
                    "`return` cannot leave a parallel loop: every item runs at once, in its own closure. \
                     Use `?` to stop at an error (the first in iteration order is returned), or `continue` to skip an item",
                );
            }
            Expr::Try(t) if self.closure_depth == 0 => {
                self.visit_expr_mut(&mut t.expr);
                if self.rewriting() {
                    self.question = true;
                    self.rewrites += 1;
                    let private = self.private;
                    // `(e)?` becomes a call argument: the parentheses go.
                    let inner = bare(&t.expr);
                    *expr = syn::parse_quote!(
                        match #private::loops::Question::branch(#inner) {
                            ::core::ops::ControlFlow::Continue(__parjob_value) => __parjob_value,
                            ::core::ops::ControlFlow::Break(__parjob_residual) => {
                                return ::core::result::Result::Err(__parjob_residual)
                            }
                        }
                    );
                }
            }
            Expr::Binary(b) if is_compound(&b.op) => {
                self.visit_expr_mut(&mut b.right);
                if self.rewriting() && self.outer_place(&b.left).is_some() {
                    let target = (*b.left).clone();
                    let value = bare(&b.right).to_token_stream();
                    let op = b.op;
                    self.log(expr, target, Apply::Compound(op), value);
                } else if let Some(root) = self.outer_root(&b.left) {
                    let message = format!(
                        "a parallel loop can update the outer variable `{root}` only as a whole variable or a field of one \
                         (`{root} += e`, `{root}.field += e`), not through an index or a dereference. The updates it can fold \
                         in iteration order are: {FORMS}"
                    );
                    self.error(&b.left, message);
                } else {
                    self.visit_expr_mut(&mut b.left);
                }
            }
            Expr::Assign(a) => {
                let extremum = match (&*a.right, self.outer_place(&a.left)) {
                    (Expr::MethodCall(m), Some(text))
                        if (m.method == "max" || m.method == "min")
                            && m.args.len() == 1
                            && place(&m.receiver).is_some_and(|(_, t)| t == text) =>
                    {
                        Some((m.method.clone(), m.args[0].clone()))
                    }
                    _ => None,
                };
                match extremum {
                    Some((method, mut value)) if self.rewriting() => {
                        self.visit_expr_mut(&mut value);
                        let target = (*a.left).clone();
                        self.log(
                            expr,
                            target,
                            Apply::Extremum(method),
                            value.to_token_stream(),
                        );
                    }
                    Some(_) => {}
                    None => {
                        self.visit_expr_mut(&mut a.right);
                        if let Some(root) = self.outer_root(&a.left) {
                            let message = format!(
                                "a parallel loop cannot assign to the outer variable `{root}`: the items run at once, \
                                 so the last write would win by chance. The updates it can fold in iteration order are: {FORMS}"
                            );
                            self.error(&*a, message);
                        } else {
                            self.visit_expr_mut(&mut a.left);
                        }
                    }
                }
            }
            Expr::MethodCall(m) => {
                let method = m.method.to_string();
                if let Some(root) = self.outer_root(&m.receiver) {
                    if UPDATES.contains(&method.as_str()) {
                        let message = format!(
                            "`{root}.{method}(..)` is an update this parallel loop can fold only as a statement of its own; \
                             here its value is used. Use `{root}.{method}(..);` alone"
                        );
                        self.error(&*m, message);
                    } else if MUTATING.contains(&method.as_str()) {
                        let message = format!(
                            "a parallel loop cannot call `{method}` on the outer variable `{root}`: it changes `{root}`, \
                             and the items run at once. The updates it can fold in iteration order are: {FORMS}"
                        );
                        self.error(&m.method, message);
                        // Already reported: do not report the receiver as a read too.
                        for arg in m.args.iter_mut() {
                            self.visit_expr_mut(arg);
                        }
                        return;
                    }
                }
                syn::visit_mut::visit_expr_method_call_mut(self, m);
            }
            Expr::Reference(r) if r.mutability.is_some() => {
                if let Some(root) = self.outer_root(&r.expr) {
                    let message = format!(
                        "a parallel loop cannot borrow the outer variable `{root}` mutably: the items run at once. \
                         The updates it can fold in iteration order are: {FORMS}"
                    );
                    self.error(&*r, message);
                }
                syn::visit_mut::visit_expr_reference_mut(self, r);
            }
            Expr::Macro(m) => self.visit_macro(&m.mac.clone()),
            Expr::Call(c) if matches!(&*c.func, Expr::Path(_)) => {
                // The callee names a function, not a value the body shares.
                for arg in c.args.iter_mut() {
                    self.visit_expr_mut(arg);
                }
            }
            _ => syn::visit_mut::visit_expr_mut(self, expr),
        }
    }
}
