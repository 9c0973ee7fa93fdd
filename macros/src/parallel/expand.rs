//! The expansion: the function unchanged, a same-named struct carrying
//! `delayed`, `map` and `options`, its `Task` impl, and for process tasks
//! the registration and the serde checks, each spanned on the user's type.

use super::parse::{NdKind, OwnedSlice, TaskFn};
use crate::options::ReturnAs;
use proc_macro2::{Ident, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

/// What the pieces of one task's expansion share.
struct Parts<'a> {
    private: TokenStream,
    name: &'a Ident,
    name_str: String,
    output: syn::Type,
    /// `__parjob_arg0..`, one per parameter.
    args: Vec<Ident>,
    /// Each parameter's owned type: what a job stores.
    owned: Vec<&'a syn::Type>,
}

pub fn expand(task: &TaskFn) -> TokenStream {
    let item = &task.item;
    let vis = &item.vis;
    let name = &item.sig.ident;
    let parts = Parts {
        private: task.opts.private_path(),
        name,
        name_str: name.to_string(),
        output: task.output(),
        args: (0..task.params.len())
            .map(|i| format_ident!("__parjob_arg{}", i))
            .collect(),
        owned: task.params.iter().map(|p| &p.owned).collect(),
    };
    let name_str = &parts.name_str;
    let doc_struct = format!(
        "The parjob task made of [`{name_str}`](fn@{name_str}): `{name_str}::delayed(..)` builds one job, \
         `{name_str}::map(..)` runs it over an iterator."
    );
    let methods = methods(task, &parts);
    let task_impl = task_impl(task, &parts);
    let registration = if task.opts.is_process() {
        registration(task, &parts.private, &parts.output)
    } else {
        TokenStream::new()
    };
    quote! {
        #item

        #[doc = #doc_struct]
        #[allow(non_camel_case_types)]
        #vis struct #name {}

        #methods

        #task_impl

        #registration
    }
}

/// What `f::map` returns for the attribute's `return_as`, and the adapter
/// of the runtime's one entry that makes it.
fn map_shape(
    task: &TaskFn,
    private: &TokenStream,
    output: &syn::Type,
) -> (TokenStream, TokenStream) {
    match task.opts.return_as.unwrap_or_default() {
        ReturnAs::List => (
            quote!(list),
            quote!(#private::Result<::std::vec::Vec<#output>>),
        ),
        ReturnAs::Generator => (
            quote!(ordered),
            quote!(impl ::core::iter::Iterator<Item = #private::Result<#output>>),
        ),
        ReturnAs::GeneratorUnordered => (
            quote!(unordered),
            quote!(impl ::core::iter::Iterator<Item = #private::Result<(usize, #output)>>),
        ),
    }
}

/// How a caller's values become a job's arguments: per parameter, the
/// type a caller passes (a `&T` parameter takes anything that a job can
/// own as `T`, through a generic) and the conversion.
struct Items {
    /// `__ParjobA0..`, one per `&T` parameter.
    generics: Vec<TokenStream>,
    /// What a caller passes for each parameter.
    types: Vec<TokenStream>,
    /// Each argument made owned.
    convert: Vec<TokenStream>,
    /// One item of `f::map`: the argument, or a tuple of them.
    item: TokenStream,
    /// The pattern that takes an item apart.
    pattern: TokenStream,
    /// Per parameter, for `CallItem`: bounds that let a `&T` parameter
    /// borrow from its item, and the arguments that borrow.
    borrow_generics: Vec<TokenStream>,
    borrowed: Vec<TokenStream>,
}

/// How a `&T` parameter borrows from an item: through `AsRef` for the
/// unsized referents (`str`, slices, paths; so `String`, `&Vec<T>`,
/// `PathBuf` all work), through `Borrow` for a sized `T` (`T` or `&T`).
fn borrow_bound(param_ty: &syn::Type) -> (TokenStream, bool) {
    let syn::Type::Reference(r) = param_ty else {
        unreachable!("only reference parameters borrow")
    };
    let referent = &*r.elem;
    let unsized_name = matches!(referent, syn::Type::Slice(_))
        || matches!(referent, syn::Type::Path(p) if p.qself.is_none()
        && p.path.segments.last().is_some_and(|s| {
            ["str", "Path", "OsStr", "CStr"].iter().any(|n| s.ident == n)
        }));
    if unsized_name {
        (quote!(::core::convert::AsRef<#referent>), true)
    } else {
        (quote!(::core::borrow::Borrow<#referent>), false)
    }
}

fn items(task: &TaskFn, parts: &Parts<'_>) -> Items {
    let private = &parts.private;
    let mut out = Items {
        generics: Vec::new(),
        types: Vec::new(),
        convert: Vec::new(),
        item: TokenStream::new(),
        pattern: TokenStream::new(),
        borrow_generics: Vec::new(),
        borrowed: Vec::new(),
    };
    for (i, ((param, arg), owned)) in task
        .params
        .iter()
        .zip(&parts.args)
        .zip(&parts.owned)
        .enumerate()
    {
        if let Some(nd) = &param.nd {
            let generic = format_ident!("__ParjobA{}", i);
            let (elem, dim) = (&nd.elem, &nd.dim);
            let into = quote!(#private::ndarray_arg::IntoArrayArg::<#elem, #dim>::into_array_arg);
            out.generics
                .push(quote!(#generic: #private::ndarray_arg::IntoArrayArg<#elem, #dim>));
            out.borrow_generics
                .push(quote!(#generic: #private::ndarray_arg::IntoArrayArg<#elem, #dim>));
            out.types.push(quote!(#generic));
            out.convert.push(quote!(#into(#arg)));
            // The temporary lives to the end of the call's statement.
            out.borrowed.push(match nd.kind {
                NdKind::View => quote!(#into(#arg).view()),
                NdKind::Owned => quote!(#into(#arg).into_owned()),
                NdKind::RefOwned => quote!(&#into(#arg).into_owned()),
            });
        } else if param.by_ref {
            let generic = format_ident!("__ParjobA{}", i);
            if let Some(elem) = &param.ref_slice {
                out.generics
                    .push(quote!(#generic: #private::IntoSliceArg<#elem>));
                out.convert
                    .push(quote!(#private::IntoSliceArg::<#elem>::into_slice_arg(#arg)));
            } else {
                out.generics
                    .push(quote!(#generic: #private::IntoOwnedArg<#owned>));
                out.convert
                    .push(quote!(#private::IntoOwnedArg::<#owned>::into_owned_arg(#arg)));
            }
            out.types.push(quote!(#generic));
            let (bound, as_ref) = borrow_bound(&param.ty);
            out.borrow_generics.push(quote!(#generic: #bound));
            out.borrowed.push(if as_ref {
                quote!(::core::convert::AsRef::as_ref(&#arg))
            } else {
                quote!(::core::borrow::Borrow::borrow(&#arg))
            });
        } else {
            let written = &param.ty;
            out.types.push(quote!(#written));
            out.convert.push(match param.by_value_slice {
                None => quote!(#arg),
                Some(OwnedSlice::Vec) => quote!(#private::SliceArg::Owned(#arg)),
                Some(OwnedSlice::Boxed) => {
                    quote!(#private::SliceArg::Owned(::std::vec::Vec::from(#arg)))
                }
            });
            out.borrowed.push(quote!(#arg));
        }
    }
    let (types, args) = (&out.types, &parts.args);
    // One parameter: an item is the argument; else a tuple of them.
    (out.item, out.pattern) = if args.len() == 1 {
        (quote!(#(#types)*), quote!(#(#args)*))
    } else {
        (quote!((#(#types,)*)), quote!((#(#args,)*)))
    };
    out
}

/// The doc comments of a task's methods.
struct Docs {
    par_map: String,
    delayed: String,
    map: String,
    with: String,
}

impl Docs {
    fn new(name_str: &str) -> Docs {
        let par_map = format!(
            "Runs `{name_str}` over an input of known length and positions: a range, a `Vec`, \
         or any rayon indexed parallel iterator (`v.par_iter().copied()`). Returns the \
         results in input order. On threads it splits the input across the pool as rayon \
         does, so tasks of nanoseconds cost what they cost in rayon, and a `&T` parameter \
         borrows from its item: `{name_str}::par_map(&rows)` copies no row. With a timeout, \
         `verbose`, a progress bar, or another backend it runs exactly as `map`, each item \
         cloned into its job."
        );
        let delayed = format!(
            "One call of `{name_str}` waiting to run (joblib's `delayed({name_str})(..)`). \
         The job owns its arguments: a `&T` parameter takes a `T` (moved) or a `&T` \
         (cloned once into the job)."
        );
        let map = format!(
            "Runs `{name_str}` over every item (a tuple for several parameters), with the \
         attribute's options, on a shared pool. Returns the results in input order \
         (`return_as = \"list\"`, the default), or an iterator of them \
         (`\"generator\"`, `\"generator_unordered\"`). For a `&T` parameter an item \
         may be a `T` or a `&T` (cloned into the job): `{name_str}::map(&xs)`."
        );
        let with = format!(
        "`{name_str}` with per-call options: `{name_str}::with(|p| p.n_jobs(4).timeout(d)).map(items)`. \
         They win over a scoped `config()`, the attribute and the environment; \
         `.map`, `.iter` and `.iter_unordered` pick the shape of the results."
    );
        Docs {
            par_map,
            delayed,
            map,
            with,
        }
    }
}

/// `FromItem` (an item made the owned argument tuple) and `CallItem` (the
/// function called with an item, borrowing what `&T` parameters need).
fn item_impls(parts: &Parts<'_>, items: &Items) -> TokenStream {
    let Parts {
        private,
        name,
        output,
        owned,
        ..
    } = parts;
    let Items {
        generics,
        convert,
        item,
        pattern,
        borrow_generics,
        borrowed,
        ..
    } = items;
    quote! {
        impl<#(#generics),*> #private::FromItem<#item> for #name {
            #[inline]
            #[allow(clippy::unused_unit)]
            fn from_item(#pattern: #item) -> (#(#owned,)*) {
                (#(#convert,)*)
            }
        }

        impl<#(#borrow_generics),*> #private::CallItem<#item> for #name {
            #[inline]
            fn call_item(#pattern: #item) -> #output {
                #name(#(#borrowed),*)
            }
        }
    }
}

/// `f::repeat(n)`, for a task of no arguments.
fn repeat_method(task: &TaskFn, parts: &Parts<'_>) -> TokenStream {
    let Parts {
        private,
        name_str,
        output,
        args,
        ..
    } = parts;
    let (adapter, map_returns) = map_shape(task, private, output);
    if !args.is_empty() {
        return TokenStream::new();
    }
    let doc_repeat = format!(
        "Runs `{name_str}`, which takes no arguments, `n` times (joblib's \
         `Parallel()(delayed({name_str})() for _ in range(n))`)."
    );
    quote! {
        #[doc = #doc_repeat]
        pub fn repeat(n: usize) -> #map_returns {
            #private::map::calls::<Self, _>(
                #private::Options::new(),
                ::core::iter::repeat_n((), n),
            )
            .#adapter()
        }
    }
}

/// `delayed`, `map`, `with`, `par_map`, `repeat` and `options` on the
/// same-named struct, and its `FromItem` impl.
fn methods(task: &TaskFn, parts: &Parts<'_>) -> TokenStream {
    let Parts {
        private,
        name,
        name_str,
        output,
        args,
        ..
    } = parts;
    let items = items(task, parts);
    let item_impls = item_impls(parts, &items);
    let Items {
        generics,
        types,
        convert,
        ..
    } = items;
    let (adapter, map_returns) = map_shape(task, private, output);
    let Docs {
        par_map: doc_par_map,
        delayed: doc_delayed,
        map: doc_map,
        with: doc_with,
    } = Docs::new(name_str);
    let repeat = repeat_method(task, parts);
    quote! {
        #item_impls

        impl #name {
            /// This task, for a `Pool`'s map-like calls:
            /// `pool.map(f::task, items)` makes each item the task's
            /// arguments directly, with no `Job` allocated for each.
            #[allow(non_upper_case_globals)]
            pub const task: #private::TaskRef<Self> = #private::TaskRef::new();

            #[doc = #doc_delayed]
            #[allow(clippy::too_many_arguments)]
            pub fn delayed<#(#generics),*>(#(#args: #types),*) -> #private::Job<#output> {
                #private::Job::call::<Self>((#(#convert,)*))
            }

            #[doc = #doc_map]
            pub fn map<__ParjobItems>(items: __ParjobItems) -> #map_returns
            where
                __ParjobItems: ::core::iter::IntoIterator,
                Self: #private::FromItem<__ParjobItems::Item>,
            {
                #private::map::calls::<Self, _>(
                    #private::Options::new(),
                    ::core::iter::Iterator::map(
                        ::core::iter::IntoIterator::into_iter(items),
                        <Self as #private::FromItem<__ParjobItems::Item>>::from_item,
                    ),
                )
                .#adapter()
            }

            /// Runs the task over every item, whatever fails, and returns
            /// each item's outcome in input order (`on_error = "continue"`
            /// for this call). The outer `Err` is for what ends a run as a
            /// whole, such as a configuration error.
            pub fn map_results<__ParjobItems>(
                items: __ParjobItems,
            ) -> #private::Result<::std::vec::Vec<#private::Result<#output>>>
            where
                __ParjobItems: ::core::iter::IntoIterator,
                Self: #private::FromItem<__ParjobItems::Item>,
            {
                #private::map::calls::<Self, _>(
                    #private::Options::new().with_on_error(#private::OnError::Continue),
                    ::core::iter::Iterator::map(
                        ::core::iter::IntoIterator::into_iter(items),
                        <Self as #private::FromItem<__ParjobItems::Item>>::from_item,
                    ),
                )
                .results()
            }

            #[doc = #doc_with]
            pub fn with(
                configure: impl ::core::ops::FnOnce(#private::TaskRun<Self>) -> #private::TaskRun<Self>,
            ) -> #private::TaskRun<Self> {
                configure(#private::TaskRun::new())
            }

            #repeat

            #[doc = #doc_par_map]
            pub fn par_map<__ParjobItems>(
                items: __ParjobItems,
            ) -> #private::Result<::std::vec::Vec<#output>>
            where
                __ParjobItems: #private::rayon::iter::IntoParallelIterator,
                __ParjobItems::Iter: #private::rayon::iter::IndexedParallelIterator,
                Self: #private::FromItem<__ParjobItems::Item>
                    + #private::CallItem<__ParjobItems::Item>,
            {
                #private::map::indexed::<Self, _>(items)
            }

            /// The options given in the attribute (unset ones come from
            /// scoped defaults, the environment and the defaults when a run
            /// starts).
            pub fn options() -> #private::Options {
                <Self as #private::Task>::options()
            }
        }
    }
}

/// `impl Task`, with the codec table for a process task.
fn task_impl(task: &TaskFn, parts: &Parts<'_>) -> TokenStream {
    let (private, name, name_str) = (&parts.private, parts.name, &parts.name_str);
    let (output, args, owned) = (&parts.output, &parts.args, &parts.owned);
    let options = task.opts.to_runtime(private);
    let call_args = task.params.iter().zip(args).map(|(p, a)| {
        match p.nd.as_ref().map(|nd| nd.kind) {
            Some(NdKind::View) => return quote!(#a.view()),
            Some(NdKind::Owned) => return quote!(#a.into_owned()),
            Some(NdKind::RefOwned) => return quote!(&#a.into_owned()),
            None => {}
        }
        if p.by_ref {
            return quote!(&#a);
        }
        match p.by_value_slice {
            None => quote!(#a),
            Some(OwnedSlice::Vec) => quote!(#a.into_vec()),
            Some(OwnedSlice::Boxed) => quote!(#a.into_vec().into_boxed_slice()),
        }
    });
    let codecs = if task.opts.is_process() {
        quote! {
            fn codecs() -> ::core::option::Option<#private::TaskCodecs<(#(#owned,)*), #output>> {
                #[allow(unused_imports)]
                use #private::{ViaNothing as _, ViaSerde as _};
                ::core::option::Option::Some(#private::TaskCodecs {
                    args: (&&#private::Probe::<(#(#owned,)*)>::NEW).serde_fns(),
                    output: (&&#private::Probe::<#output>::NEW).serde_fns(),
                })
            }
        }
    } else {
        TokenStream::new()
    };
    let crossing = quote! {
        impl #private::Crossing<(#(#owned,)*), #output> for #name {
            #codecs

            fn copier() -> ::core::option::Option<fn(&(#(#owned,)*)) -> (#(#owned,)*)> {
                #[allow(unused_imports)]
                use #private::{ViaClone as _, ViaNoClone as _};
                (&&#private::CopyProbe::<(#(#owned,)*)>::NEW).copier()
            }
        }
    };
    quote! {
        impl #private::Task for #name {
            const NAME: &'static str = ::core::concat!(::core::module_path!(), "::", #name_str);
            type Args = (#(#owned,)*);
            type Output = #output;

            fn call(args: Self::Args) -> #output {
                let (#(#args,)*) = args;
                #name(#(#call_args),*)
            }

            fn options() -> #private::Options {
                #options
            }
        }
        #crossing
    }
}

/// The `inventory` registration of a process task, and one serde check per
/// type, spanned on that type so the compiler points at it.
fn registration(task: &TaskFn, private: &TokenStream, output: &syn::Type) -> TokenStream {
    let name = &task.item.sig.ident;
    let arg_checks = task.params.iter().map(|p| {
        let (span, wire) = (p.ty.span(), &p.wire);
        quote_spanned!(span=> #private::assert_process_arg::<#wire>();)
    });
    let output_span = match &task.item.sig.output {
        syn::ReturnType::Type(_, ty) => ty.span(),
        syn::ReturnType::Default => Span::call_site(),
    };
    let output_check = quote_spanned!(output_span=> #private::assert_process_output::<#output>(););
    quote! {
        const _: () = {
            #[allow(dead_code)]
            fn __parjob_serde_checks() {
                #(#arg_checks)*
                #output_check
            }
            impl #private::ProcessTask for #name {}
            #private::inventory::submit! {
                #private::TaskEntry::new::<#name>()
            }
        };
    }
}
