//! What a loop body's expressions name: the scopes of its patterns, the
//! places (`x`, `x.a`, `self.a.b`) and root variables of expressions, and
//! the method names that update or mutate a receiver. `analyse` uses these
//! to tell outer variables from locals and recognised updates from other
//! mutation.

use quote::ToTokens;
use syn::{BinOp, Expr, Pat};

/// Methods of std types that change their receiver; called on an outer
/// variable in a parallel body, they are an error. A name that some common
/// std type also uses for a method that only reads (`str::replace`,
/// `Iterator::take`, `Cell::set`, `Cell::swap`) is not listed: the macro
/// cannot see types, and such a call that does mutate is still refused by
/// the compiler, since the body borrows outer variables shared.
pub const MUTATING: &[&str] = &[
    "append",
    "as_mut",
    "clear",
    "dedup",
    "dedup_by",
    "dedup_by_key",
    "drain",
    "entry",
    "fill",
    "get_mut",
    "insert_str",
    "iter_mut",
    "pop",
    "pop_back",
    "pop_front",
    "push_back",
    "push_front",
    "push_str",
    "remove",
    "resize",
    "retain",
    "retain_mut",
    "reverse",
    "sort",
    "sort_by",
    "sort_by_key",
    "sort_unstable",
    "sort_unstable_by",
    "split_off",
    "swap_remove",
    "truncate",
    "values_mut",
];

/// The methods that are recognised updates when their value is unused.
pub const UPDATES: &[&str] = &["push", "extend", "insert"];

/// Names bound by patterns, innermost scope last.
#[derive(Default)]
pub struct Scopes(Vec<Vec<String>>);

impl Scopes {
    pub fn push(&mut self) {
        self.0.push(Vec::new());
    }

    pub fn pop(&mut self) {
        self.0.pop();
    }

    pub fn bind(&mut self, pat: &Pat) {
        struct Names<'a>(&'a mut Vec<String>);
        impl<'ast> syn::visit::Visit<'ast> for Names<'_> {
            fn visit_pat_ident(&mut self, p: &'ast syn::PatIdent) {
                self.0.push(p.ident.to_string());
                syn::visit::visit_pat_ident(self, p);
            }
        }
        if let Some(scope) = self.0.last_mut() {
            syn::visit::Visit::visit_pat(&mut Names(scope), pat);
        }
    }

    pub fn is_local(&self, name: &str) -> bool {
        self.0.iter().any(|scope| scope.iter().any(|n| n == name))
    }
}

/// `x`, `x.a`, `self.a.b`: the root variable and the place's text.
pub fn place(expr: &Expr) -> Option<(String, String)> {
    match expr {
        Expr::Path(p) if p.qself.is_none() && p.path.segments.len() == 1 => {
            let segment = &p.path.segments[0];
            if !segment.arguments.is_none() {
                return None;
            }
            let name = segment.ident.to_string();
            Some((name.clone(), name))
        }
        Expr::Field(f) => {
            let (root, text) = place(&f.base)?;
            let member = f.member.to_token_stream().to_string();
            Some((root, format!("{text}.{member}")))
        }
        Expr::Paren(p) => place(&p.expr),
        _ => None,
    }
}

/// The variable an lvalue-like expression starts from: `a` in `a[i].x`,
/// `*a`, `a.b`.
pub fn root(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Field(f) => root(&f.base),
        Expr::Index(i) => root(&i.expr),
        Expr::Unary(u) => root(&u.expr),
        Expr::Paren(p) => root(&p.expr),
        other => place(other).map(|(root, _)| root),
    }
}

/// `e` without the parentheses around it: it is about to become a call's
/// argument, where they would draw an `unused_parens` warning.
pub fn bare(expr: &Expr) -> &Expr {
    match expr {
        Expr::Paren(p) => bare(&p.expr),
        other => other,
    }
}

/// Whether `op` is a compound assignment (`+=`, `<<=`, ...).
pub fn is_compound(op: &BinOp) -> bool {
    matches!(
        op,
        BinOp::AddAssign(_)
            | BinOp::SubAssign(_)
            | BinOp::MulAssign(_)
            | BinOp::DivAssign(_)
            | BinOp::RemAssign(_)
            | BinOp::BitXorAssign(_)
            | BinOp::BitAndAssign(_)
            | BinOp::BitOrAssign(_)
            | BinOp::ShlAssign(_)
            | BinOp::ShrAssign(_)
    )
}
