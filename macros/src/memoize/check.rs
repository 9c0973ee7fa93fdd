//! What a memoized function may look like, with an error for each thing it
//! may not.

use super::parse::{Codec, MemoFn};
use crate::diagnostics::{closest, Errors};
use quote::ToTokens;
use syn::visit::Visit;
use syn::{FnArg, Pat, ReturnType, Type};

/// The names of the function's parameters (those bound by a plain name).
pub fn param_names(func: &MemoFn) -> Vec<String> {
    func.item
        .sig
        .inputs
        .iter()
        .filter_map(|arg| match arg {
            FnArg::Typed(t) => match &*t.pat {
                Pat::Ident(p) => Some(p.ident.to_string()),
                _ => None,
            },
            FnArg::Receiver(_) => None,
        })
        .collect()
}

/// `mmap_mode = "r"` maps an uncompressed array of numbers: the function
/// must return `Vec<P>` of a primitive number, and not compress.
fn check_mmap_mode(func: &MemoFn, errors: &mut Errors) {
    let Some(span) = func.opts.mmap_mode else {
        return;
    };
    if func.opts.compress.is_some_and(|c| c != Codec::None) {
        errors.push(syn::Error::new(
            span,
            "mmap_mode maps the entry's file, which a codec would have compressed: drop `compress` (joblib cannot map a compressed file either)",
        ));
    }
    let returns_numbers = match &func.item.sig.output {
        ReturnType::Type(_, ty) => super::expand::vec_element(ty).is_some(),
        ReturnType::Default => false,
    };
    if !returns_numbers {
        let message = "mmap_mode = \"r\" maps a cached array of numbers: the function must return `Vec<P>` of a primitive number (`Vec<f64>`, `Vec<u8>`, ...), and callers get a `parjob::CachedArray<P>`, which derefs to `[P]`";
        match &func.item.sig.output {
            ReturnType::Type(_, ty) => errors.spanned(ty, message),
            ReturnType::Default => errors.push(syn::Error::new(span, message)),
        }
    }
}

pub fn check(func: &MemoFn, errors: &mut Errors) {
    check_mmap_mode(func, errors);
    let sig = &func.item.sig;
    if let Some(asyncness) = &sig.asyncness {
        errors.spanned(
            asyncness,
            "#[memoize] cannot cache an `async fn`: make it a plain `fn` that blocks, or cache the work it awaits",
        );
    }
    if let Some(constness) = &sig.constness {
        errors.spanned(
            constness,
            "#[memoize] cannot cache a `const fn`: reading the cache is not a const operation",
        );
    }
    if let Some(unsafety) = &sig.unsafety {
        errors.spanned(
            unsafety,
            "#[memoize] cannot cache an `unsafe fn`: make it a safe `fn` with an `unsafe` block inside",
        );
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.spanned(
            &sig.generics,
            "#[memoize] cannot cache a generic function: its cache key and stored result need one concrete type each. \
             Write a non-generic wrapper (e.g. `fn features_f32(x: Vec<f32>) -> Vec<f32> { features(x) }`) and memoize that",
        );
    }
    for arg in &sig.inputs {
        match arg {
            FnArg::Receiver(receiver) => errors.spanned(
                receiver,
                "#[memoize] caches a free function: `self` is not part of the cache key, so a method's result could \
                 come from another object. Move the work into a free function that takes what it needs from `self` \
                 as arguments, and memoize that",
            ),
            FnArg::Typed(t) => {
                if let Type::ImplTrait(i) = &*t.ty {
                    errors.spanned(i, "#[memoize] cannot cache a function with an `impl Trait` parameter: name the type");
                }
            }
        }
    }
    if let ReturnType::Type(_, output) = &sig.output {
        let mut finder = Borrow::default();
        finder.visit_type(output);
        if let Some(borrow) = finder.first {
            errors.spanned(
                borrow,
                "#[memoize] stores the result on disk and loads it in later runs, so it must be owned data: \
                 return an owned type (e.g. `String` for `&str`, `Vec<T>` for `&[T]`)",
            );
        }
    }
    let names = param_names(func);
    let candidates: Vec<&str> = names.iter().map(String::as_str).collect();
    for ignored in &func.opts.ignore {
        let name = ignored.to_string();
        if !names.contains(&name) {
            let message = match closest(&name, &candidates) {
                Some(near) => format!("`ignore` names `{name}`, which is not a parameter of this function; did you mean `{near}`?"),
                None => format!(
                    "`ignore` names `{name}`, which is not a parameter of this function; its parameters are {}",
                    if names.is_empty() { "none".to_string() } else { names.join(", ") }
                ),
            };
            errors.spanned(ignored, message);
        }
    }
}

#[derive(Default)]
struct Borrow {
    first: Option<proc_macro2::TokenStream>,
}

impl<'ast> Visit<'ast> for Borrow {
    fn visit_type_reference(&mut self, r: &'ast syn::TypeReference) {
        if self.first.is_none() {
            self.first = Some(r.to_token_stream());
        }
    }
}
