//! The model of a task: the function, its options, and its parameters with
//! the owned types a job stores for them.

use crate::diagnostics::Errors;
use crate::options::Opts;
use proc_macro2::TokenStream;
use syn::{FnArg, ItemFn, Type};

/// A function marked `#[parallel]`.
pub struct TaskFn {
    pub item: ItemFn,
    pub opts: Opts,
    pub params: Vec<Param>,
}

/// One parameter.
pub struct Param {
    /// The type as written.
    pub ty: Type,
    /// What the job owns: `T` itself, or for `&T` its owned form
    /// (`&str` -> `String`, `&[T]` -> `Vec<T>`, `&Path` -> `PathBuf`, a
    /// sized `&T` -> `T`).
    pub owned: Type,
    /// The parameter is a shared reference, so the call passes `&owned`.
    pub by_ref: bool,
    /// A by-value `Vec<T>` or `Box<[T]>`, stored as a `SliceArg<T>` so a
    /// slice of numbers over `max_nbytes` reaches a worker through shared
    /// memory; `None` for a parameter stored as written.
    pub by_value_slice: Option<OwnedSlice>,
    /// For a `&[T]` parameter, `T`.
    pub ref_slice: Option<Type>,
    /// An `ndarray` parameter (with the `ndarray` feature).
    pub nd: Option<NdParam>,
    /// The type whose serde impls a process task needs: the parameter's
    /// own (`Vec<T>` for `&[T]`), not the runtime's wrapper of it.
    pub wire: Type,
}

/// An `ndarray` parameter: how the function takes it, and its element and
/// dimension types.
pub struct NdParam {
    pub kind: NdKind,
    pub elem: Type,
    pub dim: TokenStream,
}

/// How a function takes an `ndarray` parameter.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum NdKind {
    /// `Array2<A>`: made owned in the worker (one copy).
    Owned,
    /// `&Array2<A>`: the same, borrowed by the call.
    RefOwned,
    /// `ArrayView2<A>`: a view of the job's data, no copy.
    View,
}

/// An owned slice parameter, by how it is written.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum OwnedSlice {
    /// `Vec<T>`.
    Vec,
    /// `Box<[T]>`.
    Boxed,
}

impl TaskFn {
    /// Parses the annotated item. Anything but a function is an error here;
    /// everything else is left to `check`.
    pub fn parse(item: TokenStream, opts: Opts, errors: &mut Errors) -> Option<TaskFn> {
        let item: ItemFn = match syn::parse2::<syn::Item>(item) {
            Ok(syn::Item::Fn(f)) => f,
            Ok(other) => {
                errors.spanned(
                    item_head(&other),
                    "#[parallel] goes on a free function, e.g. `#[parallel] fn simulate(seed: u64) -> f64 { .. }`; \
                     it cannot be put on this item",
                );
                return None;
            }
            Err(e) => {
                errors.push(e);
                return None;
            }
        };
        let private = opts.private_path();
        let params = item
            .sig
            .inputs
            .iter()
            .filter_map(|arg| match arg {
                FnArg::Typed(pat) => Some(Param::new((*pat.ty).clone(), &private)),
                FnArg::Receiver(_) => None,
            })
            .collect();
        Some(TaskFn { item, opts, params })
    }

    /// The declared output, `()` when there is none.
    pub fn output(&self) -> Type {
        match &self.item.sig.output {
            syn::ReturnType::Default => syn::parse_quote!(()),
            syn::ReturnType::Type(_, ty) => (**ty).clone(),
        }
    }
}

impl Param {
    fn new(ty: Type, private: &TokenStream) -> Param {
        if let Some(nd) = nd_param(&ty, private) {
            let (elem, dim) = (&nd.elem, &nd.dim);
            return Param {
                owned: syn::parse_quote!(#private::ndarray_arg::ArrayArg<#elem, #dim>),
                wire: syn::parse_quote!(::std::vec::Vec<#elem>),
                by_ref: false,
                by_value_slice: None,
                ref_slice: None,
                nd: Some(nd),
                ty,
            };
        }
        match &ty {
            Type::Reference(r) if r.mutability.is_none() => {
                let inner = &*r.elem;
                let owned: Type = match inner {
                    Type::Path(p) if p.qself.is_none() && p.path.is_ident("str") => {
                        syn::parse_quote!(::std::string::String)
                    }
                    // A copy, or a view of shared memory when the slice
                    // is of numbers over `max_nbytes`.
                    Type::Slice(s) => {
                        let elem = &s.elem;
                        syn::parse_quote!(#private::SliceArg<#elem>)
                    }
                    // `T` itself for a sized `T` (no `Clone` needed: the
                    // caller gives the job its own), the owned form of
                    // `Path`, `OsStr` and `CStr` otherwise.
                    _ => syn::parse_quote!(<#inner as #private::ArgOwned>::Owned),
                };
                let wire = match inner {
                    Type::Slice(s) => {
                        let elem = &s.elem;
                        syn::parse_quote!(::std::vec::Vec<#elem>)
                    }
                    _ => owned.clone(),
                };
                let ref_slice = match inner {
                    Type::Slice(s) => Some((*s.elem).clone()),
                    _ => None,
                };
                Param {
                    ty: ty.clone(),
                    owned,
                    by_ref: true,
                    by_value_slice: None,
                    ref_slice,
                    nd: None,
                    wire,
                }
            }
            _ => match owned_slice(&ty) {
                Some((kind, elem)) => Param {
                    owned: syn::parse_quote!(#private::SliceArg<#elem>),
                    ty: ty.clone(),
                    by_ref: false,
                    by_value_slice: Some(kind),
                    ref_slice: None,
                    nd: None,
                    wire: ty,
                },
                None => Param {
                    ty: ty.clone(),
                    owned: ty.clone(),
                    by_ref: false,
                    by_value_slice: None,
                    ref_slice: None,
                    nd: None,
                    wire: ty,
                },
            },
        }
    }
}

/// An `ndarray` array or view type as written (`Array2<f64>`,
/// `&ArrayD<f32>`, `ArrayView<'_, u8, Ix3>`), when the `ndarray` feature is
/// on; a type alias of one is not seen through.
fn nd_param(ty: &Type, private: &TokenStream) -> Option<NdParam> {
    if !cfg!(feature = "ndarray") {
        return None;
    }
    let (ty, by_ref) = match ty {
        Type::Reference(r) if r.mutability.is_none() => (&*r.elem, true),
        other => (other, false),
    };
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    let name = last.ident.to_string();
    let (view, rest) = match name.strip_prefix("ArrayView") {
        Some(rest) => (true, rest),
        None => (false, name.strip_prefix("Array")?),
    };
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    let types: Vec<&Type> = args
        .args
        .iter()
        .filter_map(|a| match a {
            syn::GenericArgument::Type(t) => Some(t),
            _ => None,
        })
        .collect();
    let fixed = |dim: &str| -> TokenStream {
        let dim = quote::format_ident!("{}", dim);
        quote::quote!(#private::ndarray_arg::#dim)
    };
    let (elem, dim) = match (rest, types.as_slice()) {
        ("", [elem, dim]) => ((*elem).clone(), quote::quote!(#dim)),
        ("D", [elem]) => ((*elem).clone(), fixed("IxDyn")),
        (n, [elem]) if n.len() == 1 && ("0"..="6").contains(&n) => {
            ((*elem).clone(), fixed(&format!("Ix{n}")))
        }
        _ => return None,
    };
    let kind = match (view, by_ref) {
        (true, false) => NdKind::View,
        (false, false) => NdKind::Owned,
        (false, true) => NdKind::RefOwned,
        (true, true) => return None,
    };
    Some(NdParam { kind, elem, dim })
}

/// `Vec<T>` or `Box<[T]>` as written (a type alias is not seen through),
/// with `T`.
fn owned_slice(ty: &Type) -> Option<(OwnedSlice, Type)> {
    let Type::Path(p) = ty else { return None };
    if p.qself.is_some() {
        return None;
    }
    let last = p.path.segments.last()?;
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    let [syn::GenericArgument::Type(arg)] = args.args.iter().collect::<Vec<_>>()[..] else {
        return None;
    };
    if last.ident == "Vec" {
        return Some((OwnedSlice::Vec, arg.clone()));
    }
    match arg {
        Type::Slice(s) if last.ident == "Box" => Some((OwnedSlice::Boxed, (*s.elem).clone())),
        _ => None,
    }
}

/// The tokens an error about a whole item is spanned on: its first line.
fn item_head(item: &syn::Item) -> TokenStream {
    use quote::ToTokens;
    let mut head = TokenStream::new();
    match item {
        syn::Item::Struct(s) => {
            s.struct_token.to_tokens(&mut head);
            s.ident.to_tokens(&mut head);
        }
        syn::Item::Enum(e) => {
            e.enum_token.to_tokens(&mut head);
            e.ident.to_tokens(&mut head);
        }
        syn::Item::Impl(i) => {
            i.impl_token.to_tokens(&mut head);
            i.self_ty.to_tokens(&mut head);
        }
        syn::Item::Mod(m) => {
            m.mod_token.to_tokens(&mut head);
            m.ident.to_tokens(&mut head);
        }
        other => other.to_tokens(&mut head),
    }
    head
}
