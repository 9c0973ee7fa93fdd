//! What a parallel loop's body does: a pure analysis into a [`Model`].
//!
//! A variable is *outer* when no pattern inside the body binds it (the
//! loop's own pattern, `let`, closure parameters, `match` arms, nested
//! loops). The body may update an outer variable only through the
//! recognised forms ([`FORMS`]); each is a [`Site`] the rewrite turns into
//! a logged effect, applied later in iteration order. Everything else that
//! would touch outer state, and `break`, `return` and labels that leave the
//! body, is an error spanned on the user's tokens. No accumulator may be
//! read elsewhere in the body: iterations run at once, so a read could not
//! see the updates the sequential loop would have made before it.
//!
//! The analysis reads the block and changes nothing. Each site is keyed by
//! the address of its `Expr` node, and `rewrite.rs` then walks that same
//! block in place, so the two never have to agree on a traversal order.

use super::places::{place, root, Scopes, MUTATING, UPDATES};
use syn::punctuated::Punctuated;
use syn::visit::Visit;
use syn::{BinOp, Expr, Ident, Pat, Token};

/// The allowed updates, for error messages.
pub const FORMS: &str = "`x += e` (or -=, *=, /=, %=, |=, &=, ^=, <<=, >>=), `v.push(e)`, \
     `v.extend(e)`, `m.insert(k, e)`, `s = s.max(e)` and `s = s.min(e)`";

/// Where the body sits: a marked loop (whose items have no value) or a
/// `parallel_for!` (whose body's value is the item's result).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
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

/// One recognised update: what it updates and how.
pub struct Effect {
    pub target: Expr,
    pub apply: Apply,
}

/// What the rewrite does at one expression of the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// Log effect number `n` instead of applying it.
    Update(usize),
    /// A marked loop's `continue`: end this item's closure.
    Continue,
    /// `e?` at the body's own level: end the item with the residual.
    Question,
}

/// The analysed body.
#[derive(Default)]
pub struct Model {
    /// The sites, by the address of their `Expr` in the analysed block.
    pub sites: std::collections::HashMap<usize, Site>,
    /// The updates, in the order of their sites.
    pub effects: Vec<Effect>,
    /// The body uses `?` at its own level.
    pub question: bool,
    /// The outer variables the body reads, each at its first use.
    pub captured: Vec<Ident>,
    /// What the body may not do, spanned on the user's tokens.
    pub errors: Vec<syn::Error>,
}

/// Analyses `block`, the body of a loop over `pat`.
pub fn analyse(block: &syn::Block, pat: &Pat, kind: Kind) -> Model {
    let mut walker = Walker {
        kind,
        scopes: Scopes::default(),
        closure_depth: 0,
        loop_depth: 0,
        macro_depth: 0,
        site_in_macro: false,
        labels: Vec::new(),
        reads: Vec::new(),
        model: Model::default(),
    };
    walker.scopes.push();
    walker.scopes.bind(pat);
    walker.visit_block(block);
    walker.check_reads();
    walker.model
}

fn key(expr: &Expr) -> usize {
    expr as *const Expr as usize
}

struct Walker {
    kind: Kind,
    scopes: Scopes,
    /// Inside a closure or an async block: control flow there is not ours.
    closure_depth: usize,
    /// Inside a loop nested in the body: `break`/`continue` are its own.
    loop_depth: usize,
    /// Inside a macro's arguments, which the rewrite cannot reach.
    macro_depth: usize,
    /// A site was found inside a macro's arguments.
    site_in_macro: bool,
    /// Labels defined inside the body.
    labels: Vec<String>,
    /// Reads of outer places: the place's text and the expression.
    reads: Vec<(String, Expr)>,
    model: Model,
}

impl Walker {
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

    fn error(&mut self, tokens: impl quote::ToTokens, message: impl std::fmt::Display) {
        self.model
            .errors
            .push(syn::Error::new_spanned(tokens, message));
    }

    /// Records a site the rewrite will act on, unless it sits inside a
    /// macro's arguments, where it cannot be rewritten.
    fn site(&mut self, expr: &Expr, site: Site) {
        if self.macro_depth > 0 {
            self.site_in_macro = true;
            return;
        }
        self.model.sites.insert(key(expr), site);
    }

    fn update(&mut self, expr: &Expr, target: &Expr, apply: Apply) {
        if self.macro_depth > 0 {
            self.site_in_macro = true;
            return;
        }
        let n = self.model.effects.len();
        self.model.effects.push(Effect {
            target: target.clone(),
            apply,
        });
        self.site(expr, Site::Update(n));
    }

    fn macro_error(&mut self, mac: &syn::Macro) {
        let name = quote::ToTokens::to_token_stream(&mac.path)
            .to_string()
            .replace(' ', "");
        self.error(
            &mac.path,
            format!(
                "parjob cannot rewrite an update, `continue` or `?` inside `{name}!` in a parallel loop: \
                 do it in a statement of its own (e.g. `let v = e?;` before the macro)"
            ),
        );
    }

    /// A read of `expr`: notes the outer variable it starts from, and the
    /// place, for the accumulator check.
    fn read(&mut self, expr: &Expr) -> bool {
        let Some((root, text)) = place(expr) else {
            return false;
        };
        if self.outer(&root) {
            self.capture(expr);
            self.reads.push((text, expr.clone()));
        }
        true
    }

    fn capture(&mut self, expr: &Expr) {
        let root = match expr {
            Expr::Path(p) => p.path.get_ident(),
            Expr::Field(f) => return self.capture(&f.base),
            _ => None,
        };
        let Some(ident) = root else { return };
        let name = ident.to_string();
        let value_like = name.starts_with(|c: char| c.is_lowercase() || c == '_');
        if value_like && !self.model.captured.iter().any(|c| *c == name) {
            self.model.captured.push(ident.clone());
        }
    }

    /// No accumulator may be read elsewhere in the body.
    fn check_reads(&mut self) {
        let accumulators: Vec<String> = self
            .model
            .effects
            .iter()
            .filter_map(|e| place(&e.target).map(|(_, text)| text))
            .collect();
        for (text, expr) in std::mem::take(&mut self.reads) {
            let hit = accumulators.iter().find(|acc| {
                **acc == text
                    || text.starts_with(&format!("{acc}."))
                    || acc.starts_with(&format!("{text}."))
            });
            if let Some(acc) = hit {
                let message = format!(
                    "this parallel loop updates `{acc}`, so its body cannot read `{text}`: the iterations run at once, \
                     and none would see the others' updates. Read it after the loop, or keep the value in a local"
                );
                self.error(&expr, message);
            }
        }
    }

    fn leaves_body(&self, label: &Option<syn::Lifetime>) -> bool {
        match label {
            Some(l) => !self.labels.contains(&l.ident.to_string()),
            None => self.loop_depth == 0,
        }
    }

    fn loop_body(&mut self, label: Option<&syn::Label>, pat: Option<&Pat>, body: &syn::Block) {
        if let Some(label) = label {
            self.labels.push(label.name.ident.to_string());
        }
        self.loop_depth += 1;
        self.scopes.push();
        if let Some(pat) = pat {
            self.scopes.bind(pat);
        }
        self.visit_block(body);
        self.scopes.pop();
        self.loop_depth -= 1;
    }

    /// A condition that may be `let pat = e`, whose names are bound for
    /// what follows in the current scope.
    fn condition(&mut self, cond: &Expr) {
        match cond {
            Expr::Let(l) => {
                self.visit_expr(&l.expr);
                self.scopes.bind(&l.pat);
            }
            cond => self.visit_expr(cond),
        }
    }

    /// A statement-level `v.push(..)`, `v.extend(..)`, `m.insert(..)` on an
    /// outer place: an update. Returns false when it is not one.
    fn update_call(&mut self, expr: &Expr) -> bool {
        let Expr::MethodCall(call) = expr else {
            return false;
        };
        let method = call.method.to_string();
        if !UPDATES.contains(&method.as_str()) || self.outer_place(&call.receiver).is_none() {
            return false;
        }
        for arg in &call.args {
            self.visit_expr(arg);
        }
        let apply = Apply::Method(call.method.clone(), call.args.len());
        self.update(expr, &call.receiver, apply);
        true
    }
}

/// One function per syntax construct that matters.
impl Walker {
    fn closure(&mut self, c: &syn::ExprClosure) {
        self.closure_depth += 1;
        self.scopes.push();
        for input in &c.inputs {
            self.scopes.bind(input);
        }
        self.visit_expr(&c.body);
        self.scopes.pop();
        self.closure_depth -= 1;
    }

    fn async_block(&mut self, a: &syn::ExprAsync) {
        self.closure_depth += 1;
        self.visit_block(&a.block);
        self.closure_depth -= 1;
    }

    fn if_expr(&mut self, i: &syn::ExprIf) {
        self.scopes.push();
        self.condition(&i.cond);
        self.visit_block(&i.then_branch);
        self.scopes.pop();
        if let Some((_, otherwise)) = &i.else_branch {
            self.visit_expr(otherwise);
        }
    }

    fn match_expr(&mut self, m: &syn::ExprMatch) {
        self.visit_expr(&m.expr);
        for arm in &m.arms {
            self.scopes.push();
            self.scopes.bind(&arm.pat);
            if let Some((_, guard)) = &arm.guard {
                self.visit_expr(guard);
            }
            self.visit_expr(&arm.body);
            self.scopes.pop();
        }
    }

    fn break_expr(&mut self, expr: &Expr, b: &syn::ExprBreak) {
        if self.leaves_body(&b.label) {
            self.error(
                expr,
                "`break` cannot leave a parallel loop: every item runs at once, so there is no point to stop at. \
                 Select the items first (e.g. `.take_while(..)` on the iterator), or drop the loop's #[parallel]",
            );
        } else if let Some(value) = &b.expr {
            self.visit_expr(value);
        }
    }

    fn continue_expr(&mut self, expr: &Expr, c: &syn::ExprContinue) {
        if c.label.is_some() && self.leaves_body(&c.label) {
            self.error(
                expr,
                "a parallel loop cannot be continued by label: its body runs as a closure per item. \
                 Use a plain `continue`",
            );
        } else if c.label.is_none() && self.loop_depth == 0 {
            match self.kind {
                Kind::Loop => self.site(expr, Site::Continue),
                Kind::Comprehension => self.error(
                    expr,
                    "`continue` has no value to give `parallel_for!`: every item's body gives one element. \
                     Filter the items first (`.filter(..)` on the iterator), or make the body an `Option`",
                ),
            }
        }
    }

    fn return_expr(&mut self, expr: &Expr) {
        self.error(
            expr,
            "`return` cannot leave a parallel loop: every item runs at once, in its own closure. \
             Use `?` to stop at an error (the first in iteration order is returned), or `continue` to skip an item",
        );
    }

    fn try_expr(&mut self, expr: &Expr, t: &syn::ExprTry) {
        self.visit_expr(&t.expr);
        if self.macro_depth == 0 {
            self.model.question = true;
        }
        self.site(expr, Site::Question);
    }

    fn compound(&mut self, expr: &Expr, b: &syn::ExprBinary) {
        self.visit_expr(&b.right);
        if self.outer_place(&b.left).is_some() {
            self.update(expr, &b.left, Apply::Compound(b.op));
        } else if let Some(root) = self.outer_root(&b.left) {
            let message = format!(
                "a parallel loop can update the outer variable `{root}` only as a whole variable or a field of one \
                 (`{root} += e`, `{root}.field += e`), not through an index or a dereference. The updates it can fold \
                 in iteration order are: {FORMS}"
            );
            self.error(&b.left, message);
        } else {
            self.visit_expr(&b.left);
        }
    }

    fn assign(&mut self, expr: &Expr, a: &syn::ExprAssign) {
        let extremum = match (&*a.right, self.outer_place(&a.left)) {
            (Expr::MethodCall(m), Some(text))
                if (m.method == "max" || m.method == "min")
                    && m.args.len() == 1
                    && place(&m.receiver).is_some_and(|(_, t)| t == text) =>
            {
                Some(m)
            }
            _ => None,
        };
        if let Some(m) = extremum {
            self.visit_expr(&m.args[0]);
            self.update(expr, &a.left, Apply::Extremum(m.method.clone()));
            return;
        }
        self.visit_expr(&a.right);
        if let Some(root) = self.outer_root(&a.left) {
            let message = format!(
                "a parallel loop cannot assign to the outer variable `{root}`: the items run at once, \
                 so the last write would win by chance. The updates it can fold in iteration order are: {FORMS}"
            );
            self.error(a, message);
        } else {
            self.visit_expr(&a.left);
        }
    }

    fn method_call(&mut self, m: &syn::ExprMethodCall) {
        let method = m.method.to_string();
        if let Some(root) = self.outer_root(&m.receiver) {
            if UPDATES.contains(&method.as_str()) {
                let message = format!(
                    "`{root}.{method}(..)` is an update this parallel loop can fold only as a statement of its own; \
                     here its value is used. Use `{root}.{method}(..);` alone"
                );
                self.error(m, message);
            } else if MUTATING.contains(&method.as_str()) {
                let message = format!(
                    "a parallel loop cannot call `{method}` on the outer variable `{root}`: it changes `{root}`, \
                     and the items run at once. The updates it can fold in iteration order are: {FORMS}"
                );
                self.error(&m.method, message);
                // Already reported: do not report the receiver as a read too.
                for arg in &m.args {
                    self.visit_expr(arg);
                }
                return;
            }
        }
        syn::visit::visit_expr_method_call(self, m);
    }

    fn mut_ref(&mut self, r: &syn::ExprReference) {
        if let Some(root) = self.outer_root(&r.expr) {
            let message = format!(
                "a parallel loop cannot borrow the outer variable `{root}` mutably: the items run at once. \
                 The updates it can fold in iteration order are: {FORMS}"
            );
            self.error(r, message);
        }
        syn::visit::visit_expr_reference(self, r);
    }

    /// A macro's arguments, when they parse as expressions: reads are
    /// checked; updates, `continue` and `?` there cannot be rewritten.
    fn macro_call(&mut self, mac: &syn::Macro) {
        let parser = Punctuated::<Expr, Token![,]>::parse_terminated;
        let Ok(args) = mac.parse_body_with(parser) else {
            return;
        };
        let outer = std::mem::replace(&mut self.site_in_macro, false);
        self.macro_depth += 1;
        for arg in &args {
            self.visit_expr(arg);
        }
        self.macro_depth -= 1;
        if std::mem::replace(&mut self.site_in_macro, outer) {
            self.macro_error(mac);
        }
    }
}

impl<'ast> Visit<'ast> for Walker {
    fn visit_block(&mut self, block: &'ast syn::Block) {
        self.scopes.push();
        for stmt in &block.stmts {
            self.visit_stmt(stmt);
        }
        self.scopes.pop();
    }

    fn visit_stmt(&mut self, stmt: &'ast syn::Stmt) {
        match stmt {
            syn::Stmt::Local(local) => {
                if let Some(init) = &local.init {
                    self.visit_expr(&init.expr);
                    if let Some((_, diverge)) = &init.diverge {
                        self.visit_expr(diverge);
                    }
                }
                self.scopes.bind(&local.pat);
            }
            syn::Stmt::Item(_) => {}
            syn::Stmt::Expr(expr, _) => {
                if !self.update_call(expr) {
                    self.visit_expr(expr);
                }
            }
            syn::Stmt::Macro(m) => self.macro_call(&m.mac),
        }
    }

    fn visit_item(&mut self, _: &'ast syn::Item) {}

    fn visit_expr(&mut self, expr: &'ast Expr) {
        let ours = self.closure_depth == 0;
        match expr {
            Expr::Path(_) | Expr::Field(_) if self.read(expr) => {}
            Expr::Closure(c) => self.closure(c),
            Expr::Async(a) => self.async_block(a),
            Expr::ForLoop(f) => {
                self.visit_expr(&f.expr);
                self.loop_body(f.label.as_ref(), Some(&f.pat), &f.body);
            }
            Expr::While(w) => {
                self.scopes.push();
                self.condition(&w.cond);
                self.loop_body(w.label.as_ref(), None, &w.body);
                self.scopes.pop();
            }
            Expr::Loop(l) => self.loop_body(l.label.as_ref(), None, &l.body),
            Expr::If(i) => self.if_expr(i),
            Expr::Match(m) => self.match_expr(m),
            Expr::Block(b) => {
                if let Some(label) = &b.label {
                    self.labels.push(label.name.ident.to_string());
                }
                self.visit_block(&b.block);
            }
            Expr::Break(b) if ours => self.break_expr(expr, b),
            Expr::Continue(c) if ours => self.continue_expr(expr, c),
            Expr::Return(_) if ours => self.return_expr(expr),
            Expr::Try(t) if ours => self.try_expr(expr, t),
            Expr::Binary(b) if super::places::is_compound(&b.op) => self.compound(expr, b),
            Expr::Assign(a) => self.assign(expr, a),
            Expr::MethodCall(m) => self.method_call(m),
            Expr::Reference(r) if r.mutability.is_some() => self.mut_ref(r),
            Expr::Macro(m) => self.macro_call(&m.mac),
            // The callee names a function, not a value the body shares.
            Expr::Call(c) if matches!(&*c.func, Expr::Path(_)) => {
                for arg in &c.args {
                    self.visit_expr(arg);
                }
            }
            _ => syn::visit::visit_expr(self, expr),
        }
    }
}

#[cfg(test)]
mod tests;
