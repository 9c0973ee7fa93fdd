//! The expansion of `#[memoize]`:
//!
//! ```text
//! fn f(__parjob_arg0: A, __parjob_arg1: B) -> R {     // same types, same callers
//!     let site = f::__parjob_site();
//!     let key = site.prepare(&(&__parjob_arg0,));      // the non-ignored arguments
//!     site.call(key, move || f::__parjob_compute(__parjob_arg0, __parjob_arg1))
//! }
//! struct f {}                                          // unless #[parallel] makes it
//! impl f {
//!     fn __parjob_site() -> &'static Site { static SITE: Site = ..; &SITE }
//!     fn __parjob_compute(a: A, b: B) -> R { the original body }
//!     pub fn clear(), stats(), check_call_in_cache(..), call_and_shelve(..), reduce_size(..), cache_dir()
//! }
//! ```

use super::parse::{Codec, MemoFn};
use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{FnArg, Pat};

/// The pieces of one memoized function that its expansion repeats.
struct Parts<'a> {
    private: TokenStream,
    name: &'a syn::Ident,
    args: Vec<syn::Ident>,
    types: Vec<&'a syn::Type>,
    /// The arguments the key hashes (numbers' slices as raw bytes).
    keyed: Vec<TokenStream>,
    /// `mmap_mode = "r"`: the result comes back mapped.
    mapped: bool,
}

pub fn expand(func: &MemoFn, source: &str, with_struct: bool) -> TokenStream {
    let item = &func.item;
    let attrs = &item.attrs;
    let vis = &item.vis;
    let output = &item.sig.output;
    let parts = parts(func);
    let Parts {
        private,
        name,
        args,
        types,
        ..
    } = &parts;
    let site_options = site_options(func, private);
    let cache_name = match &func.opts.name {
        Some(n) => quote!(#n),
        None => {
            let n = name.to_string();
            quote!(::core::concat!(::core::module_path!(), "::", #n))
        }
    };
    let inputs = &item.sig.inputs;
    let body = &item.block;
    let struct_def = if with_struct {
        TokenStream::new()
    } else {
        let doc = format!(
            "The disk cache of [`{name}`](fn@{name}): `{name}::clear()`, `{name}::stats()`, \
             `{name}::call_and_shelve(..)`, `{name}::check_call_in_cache(..)`."
        );
        quote! {
            #[doc = #doc]
            #[allow(non_camel_case_types)]
            #vis struct #name {}
        }
    };
    let methods = cache_methods(&parts, output);
    let (public_output, call) = wrapper_call(&parts, output, name);
    let output_check = output_check(output, private);
    quote! {
        #(#attrs)*
        #vis fn #name(#(#args: #types),*) #public_output {
            #call
        }

        #output_check

        #struct_def

        #[allow(dead_code)]
        impl #name {
            #[doc(hidden)]
            pub fn __parjob_site() -> &'static #private::memo::Site {
                static SITE: #private::memo::Site =
                    #private::memo::Site::new(#cache_name, #source, #site_options);
                &SITE
            }

            #[doc(hidden)]
            #[allow(clippy::too_many_arguments, clippy::needless_pass_by_value)]
            pub fn __parjob_compute(#inputs) #output #body

            #methods
        }
    }
}

fn parts(func: &MemoFn) -> Parts<'_> {
    let opts = &func.opts;
    let private = opts.private_path();
    let typed: Vec<&syn::PatType> = func
        .item
        .sig
        .inputs
        .iter()
        .filter_map(|arg| match arg {
            FnArg::Typed(t) => Some(t),
            FnArg::Receiver(_) => None,
        })
        .collect();
    let args: Vec<_> = (0..typed.len())
        .map(|i| format_ident!("__parjob_arg{}", i))
        .collect();
    let ignored = |t: &syn::PatType| match &*t.pat {
        Pat::Ident(p) => opts.ignore.contains(&p.ident),
        _ => false,
    };
    // Slices and vectors of numbers are hashed as raw bytes.
    let keyed = typed
        .iter()
        .zip(&args)
        .filter(|(t, _)| !ignored(t))
        .map(|(t, a)| {
            if numeric_sequence(&t.ty) {
                quote!(#private::memo::key::RawSlice(&#a[..]))
            } else {
                quote!(&#a)
            }
        })
        .collect();
    Parts {
        name: &func.item.sig.ident,
        types: typed.iter().map(|t| &*t.ty).collect(),
        args,
        keyed,
        private,
        mapped: func.opts.mmap_mode.is_some(),
    }
}

/// The `SiteOptions` literal: where and how results are stored.
fn site_options(func: &MemoFn, private: &TokenStream) -> TokenStream {
    let opts = &func.opts;
    let some_or_none = |value: Option<TokenStream>| match value {
        Some(v) => quote!(::core::option::Option::Some(#v)),
        None => quote!(::core::option::Option::None),
    };
    let dir = some_or_none(opts.dir.as_ref().map(|d| quote!(#d)));
    let compression = match opts.compress.unwrap_or(Codec::None) {
        Codec::None => quote!(#private::memo::Compression::None),
        Codec::Zlib(level) => quote!(#private::memo::Compression::Zlib(#level)),
        Codec::Gzip(level) => quote!(#private::memo::Compression::Gzip(#level)),
        Codec::Bz2(level) => quote!(#private::memo::Compression::Bz2(#level)),
        Codec::Xz(level) => quote!(#private::memo::Compression::Xz(#level)),
        Codec::Lzma(level) => quote!(#private::memo::Compression::Lzma(#level)),
        Codec::Lz4(level) => quote!(#private::memo::Compression::Lz4(#level)),
        Codec::Zstd(level) => quote!(#private::memo::Compression::Zstd(#level)),
    };
    let expires = some_or_none(
        opts.expires_after_ns
            .map(|ns| quote!(::core::time::Duration::from_nanos(#ns))),
    );
    let bytes_limit = some_or_none(opts.bytes_limit.map(|b| quote!(#b)));
    let verbose = opts.verbose.unwrap_or(0);
    quote! {
        #private::memo::SiteOptions {
            dir: #dir,
            compression: #compression,
            expires_after: #expires,
            bytes_limit: #bytes_limit,
            verbose: #verbose,
        }
    }
}

/// What the wrapper returns and how it calls: through the cache, or, with
/// `mmap_mode = "r"`, as a mapped `CachedArray` of the `Vec`'s numbers.
fn wrapper_call(
    parts: &Parts<'_>,
    output: &syn::ReturnType,
    name: &syn::Ident,
) -> (TokenStream, TokenStream) {
    let Parts {
        private,
        args,
        keyed,
        mapped,
        ..
    } = parts;
    let result_type = result_type(output);
    let prepare = quote! {
        let __parjob_site = #name::__parjob_site();
        let __parjob_key = __parjob_site.prepare(&(#(#keyed,)*));
    };
    let element = match output {
        syn::ReturnType::Type(_, ty) if *mapped => vec_element(ty),
        _ => None,
    };
    match element {
        Some(element) => (
            quote!(-> #private::memo::CachedArray<#element>),
            quote! {
                #prepare
                __parjob_site.call_mapped(__parjob_key, move || #name::__parjob_compute(#(#args),*))
            },
        ),
        None => (
            output.to_token_stream(),
            quote! {
                #[allow(unused_imports)]
                use #private::memo::{MemoViaNothing as _, MemoViaSerde as _};
                #prepare
                (&&#private::memo::MemoProbe::<#result_type>::NEW).cached(
                    __parjob_site,
                    __parjob_key,
                    move || #name::__parjob_compute(#(#args),*),
                )
            },
        ),
    }
}

/// joblib's `MemorizedFunc` methods, on the same-named struct.
/// A mapped result's `call_and_shelve` is a compile error that points to
/// `Memory::call_and_shelve`: the result is read by mapping, not loading.
fn cache_methods(parts: &Parts<'_>, output: &syn::ReturnType) -> TokenStream {
    let Parts {
        private,
        args,
        types,
        keyed,
        ..
    } = parts;
    let result_type = result_type(output);
    let shelve = if parts.mapped {
        let generics: Vec<syn::Ident> = (0..args.len())
            .map(|i| quote::format_ident!("__ParjobA{}", i))
            .collect();
        match generics.first() {
            Some(first) => quote! {
                /// Not available: the result is mapped, not loaded (a
                /// compile error that says what to use instead).
                #[allow(clippy::too_many_arguments, unused_variables)]
                pub fn call_and_shelve<#(#generics),*>(#(#args: #generics),*) -> ::std::convert::Infallible
                where
                    #first: #private::memo::MappedHasNoShelve,
                {
                    unreachable!()
                }
            },
            None => TokenStream::new(),
        }
    } else {
        quote! {
        /// Computes or finds the result and stores it, without loading it
        /// until `get()`.
        #[allow(clippy::too_many_arguments)]
        pub fn call_and_shelve(#(#args: #types),*) -> #private::memo::MemorizedResult<#result_type> {
            #[allow(unused_imports)]
            use #private::memo::{MemoViaNothing as _, MemoViaSerde as _};
            let __parjob_site = Self::__parjob_site();
            let __parjob_key = __parjob_site.prepare(&(#(#keyed,)*));
            (&&#private::memo::MemoProbe::<#result_type>::NEW).shelved(
                __parjob_site,
                __parjob_key,
                move || Self::__parjob_compute(#(#args),*),
            )
        }
        }
    };
    quote! {
        /// Deletes every cached result of this function.
        pub fn clear() {
            Self::__parjob_site().clear()
        }

        /// Hits, misses, and why the last miss missed, in this process.
        pub fn stats() -> #private::memo::CacheStats {
            Self::__parjob_site().stats()
        }

        /// Whether a valid result for these arguments is cached; computes nothing.
        #[allow(clippy::too_many_arguments, unused_variables)]
        pub fn check_call_in_cache(#(#args: #types),*) -> bool {
            let __parjob_site = Self::__parjob_site();
            __parjob_site.check_call_in_cache(__parjob_site.prepare(&(#(#keyed,)*)))
        }

        #shelve

        /// Deletes this function's least recently used results until the
        /// given limits hold; returns how many it deleted.
        pub fn reduce_size(
            bytes_limit: ::core::option::Option<u64>,
            items_limit: ::core::option::Option<usize>,
            age_limit: ::core::option::Option<::core::time::Duration>,
        ) -> usize {
            Self::__parjob_site().reduce_size(#private::memo::Limits {
                bytes: bytes_limit,
                items: items_limit,
                age: age_limit,
            })
        }

        /// Where this function's results are stored (`None` without a
        /// cache directory).
        pub fn cache_dir() -> ::core::option::Option<::std::path::PathBuf> {
            Self::__parjob_site().dir()
        }
    }
}

/// One error for a result that is not a serde type, on the type.
fn output_check(output: &syn::ReturnType, private: &TokenStream) -> TokenStream {
    let result_type = result_type(output);
    let span = match output {
        syn::ReturnType::Type(_, ty) => ty.span(),
        syn::ReturnType::Default => proc_macro2::Span::call_site(),
    };
    let check = quote_spanned!(span=> #private::memo::assert_memo_output::<#result_type>(););
    quote! {
        const _: () = {
            #[allow(dead_code)]
            fn __parjob_memo_check() {
                #check
            }
        };
    }
}

/// The declared result type, `()` when there is none.
fn result_type(output: &syn::ReturnType) -> TokenStream {
    match output {
        syn::ReturnType::Default => quote!(()),
        syn::ReturnType::Type(_, ty) => ty.to_token_stream(),
    }
}

/// `P` when `ty` is written `Vec<P>` with `P` a primitive number.
pub fn vec_element(ty: &syn::Type) -> Option<&syn::Type> {
    let syn::Type::Path(p) = ty else { return None };
    let last = p.path.segments.last().filter(|_| p.qself.is_none())?;
    let syn::PathArguments::AngleBracketed(a) = &last.arguments else {
        return None;
    };
    match (last.ident == "Vec", a.args.first(), a.args.len()) {
        (true, Some(syn::GenericArgument::Type(inner)), 1) if is_number(inner) => Some(inner),
        _ => None,
    }
}

const NUMBERS: &[&str] = &[
    "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128", "isize", "f32",
    "f64",
];

fn is_number(t: &syn::Type) -> bool {
    matches!(t, syn::Type::Path(p) if p.qself.is_none() && NUMBERS.iter().any(|n| p.path.is_ident(n)))
}

/// Whether `ty` is written `&[T]`, `Vec<T>` or `&Vec<T>` with `T` a
/// primitive number.
fn numeric_sequence(ty: &syn::Type) -> bool {
    let number = is_number;
    let vec_of_number = |t: &syn::Type| match t {
        syn::Type::Path(p) if p.qself.is_none() => {
            let last = p.path.segments.last();
            last.is_some_and(|s| {
                s.ident == "Vec"
                    && matches!(&s.arguments, syn::PathArguments::AngleBracketed(a)
                        if a.args.len() == 1
                            && matches!(&a.args[0], syn::GenericArgument::Type(inner) if number(inner)))
            })
        }
        _ => false,
    };
    match ty {
        syn::Type::Reference(r) if r.mutability.is_none() => match &*r.elem {
            syn::Type::Slice(s) => number(&s.elem),
            inner => vec_of_number(inner),
        },
        other => vec_of_number(other),
    }
}
