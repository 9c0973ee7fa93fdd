//! What a task function may look like, with an error for each thing it may not.

use super::parse::TaskFn;
use crate::diagnostics::Errors;
use syn::visit::Visit;
use syn::{FnArg, Type};

pub fn check(task: &TaskFn, errors: &mut Errors) {
    let sig = &task.item.sig;
    let process = task.opts.is_process();
    if let Some(asyncness) = &sig.asyncness {
        errors.spanned(
            asyncness,
            "#[parallel] tasks cannot be `async fn`: parjob runs blocking work on threads or processes. \
             Make it a plain `fn` (block on async code inside it if you must)",
        );
    }
    if let Some(unsafety) = &sig.unsafety {
        errors.spanned(
            unsafety,
            "#[parallel] tasks cannot be `unsafe fn`: parjob would call it with no one to uphold its contract. \
             Make it a safe `fn` with an `unsafe` block inside",
        );
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.spanned(
            &sig.generics,
            "#[parallel] tasks cannot be generic: a worker finds a task by name, so each task needs one concrete signature. \
             Write a non-generic wrapper (e.g. `fn simulate_f64(x: f64) -> f64 { simulate(x) }`) and mark that",
        );
    }
    if let Some(variadic) = &sig.variadic {
        errors.spanned(variadic, "#[parallel] tasks cannot be variadic");
    }
    for arg in &sig.inputs {
        match arg {
            FnArg::Receiver(receiver) => errors.spanned(
                receiver,
                "#[parallel] makes a task of a free function, and `self` cannot travel with a job. \
                 Move the work into a free function that takes what it needs from `self` as arguments, and mark that",
            ),
            FnArg::Typed(pat) => check_param(&pat.ty, process, errors),
        }
    }
    if let syn::ReturnType::Type(_, output) = &sig.output {
        let mut finder = Borrowed::default();
        finder.visit_type(output);
        if let Some(span_of) = finder.first {
            errors.spanned(
                span_of,
                "a #[parallel] task must return owned data (e.g. `String`, `Vec<T>`), because its result outlives the job",
            );
        }
        if let Type::ImplTrait(t) = &**output {
            errors.spanned(
                t,
                "a #[parallel] task must name its return type; `impl Trait` is not allowed",
            );
        }
    }
}

fn check_param(ty: &Type, process: bool, errors: &mut Errors) {
    check_send_by_name(ty, errors);
    match ty {
        Type::Reference(r) if r.mutability.is_some() => {
            let message = if process {
                "a process task cannot take `&mut`: the worker would change its own copy and the caller would never see it. \
                 Take the value by value and return the new one"
            } else {
                "a #[parallel] task cannot take `&mut`: each job owns its arguments, so the change would be lost. \
                 Take the value by value and return the new one"
            };
            errors.spanned(ty, message);
        }
        Type::Reference(r) => {
            if let Some(lifetime) = &r.lifetime {
                errors.spanned(
                    lifetime,
                    "a #[parallel] task's references cannot name a lifetime: the job owns the data it lends to the call. \
                     Remove the lifetime",
                );
            }
            check_owned_inside(&r.elem, errors);
        }
        Type::ImplTrait(t) => errors.spanned(
            t,
            "#[parallel] tasks cannot take `impl Trait`: each task needs one concrete signature. Name the type",
        ),
        other => check_owned_inside(other, errors),
    }
}

/// The types that are known by name not to be `Send`, and what to use
/// instead: a job moves its arguments to another thread (or process).
const NOT_SEND: &[(&str, &str)] = &[
    ("Rc", "`Arc`"),
    ("RefCell", "`Mutex` or `RwLock`"),
    ("Cell", "an atomic (`AtomicU64`, ...) or a `Mutex`"),
];

/// An argument of a type known not to be `Send` (an `Rc`, a `RefCell`),
/// said on the type, instead of rustc's error on the attribute naming the
/// thread pool's internals.
fn check_send_by_name(ty: &Type, errors: &mut Errors) {
    let mut finder = NotSend::default();
    finder.visit_type(ty);
    if let Some((path, name, instead)) = finder.first {
        errors.spanned(
            path,
            format!(
                "a #[parallel] task's argument must be `Send`, and `{name}` is not: each job moves its \
                 arguments to a worker thread. Use {instead} instead"
            ),
        );
    }
}

#[derive(Default)]
struct NotSend {
    first: Option<(proc_macro2::TokenStream, &'static str, &'static str)>,
}

impl<'ast> Visit<'ast> for NotSend {
    fn visit_type_path(&mut self, p: &'ast syn::TypePath) {
        let last = p.path.segments.last().map(|s| s.ident.to_string());
        let hit = NOT_SEND
            .iter()
            .find(|(name, _)| last.as_deref() == Some(*name));
        match (hit, &self.first) {
            (Some(&(name, instead)), None) => {
                self.first = Some((quote::ToTokens::to_token_stream(p), name, instead));
            }
            _ => syn::visit::visit_type_path(self, p),
        }
    }
}

/// References below the top level (`Vec<&str>`) cannot be owned by a job.
fn check_owned_inside(ty: &Type, errors: &mut Errors) {
    let mut finder = Borrowed::default();
    finder.visit_type(ty);
    if let Some(borrowed) = finder.first {
        errors.spanned(
            borrowed,
            "a #[parallel] task's arguments must be owned or a plain `&T`: a job owns its data, so a borrow inside a type \
             (like `Vec<&str>`) cannot be stored. Use the owned form (e.g. `Vec<String>`)",
        );
    }
}

#[derive(Default)]
struct Borrowed {
    first: Option<proc_macro2::TokenStream>,
}

impl<'ast> Visit<'ast> for Borrowed {
    fn visit_type_reference(&mut self, r: &'ast syn::TypeReference) {
        let is_static = r.lifetime.as_ref().is_some_and(|l| l.ident == "static");
        if is_static {
            syn::visit::visit_type(self, &r.elem);
        } else if self.first.is_none() {
            self.first = Some(quote::ToTokens::to_token_stream(r));
        }
    }

    fn visit_lifetime(&mut self, l: &'ast syn::Lifetime) {
        if self.first.is_none() && l.ident != "static" {
            self.first = Some(quote::ToTokens::to_token_stream(l));
        }
    }
}
