//! The expansion: the function unchanged, a same-named struct carrying
//! `delayed`, `map` and `options`, its `Task` impl, and for process tasks
//! the registration and the serde checks, each spanned on the user's type.

use super::parse::TaskFn;
use crate::options::ReturnAs;
use proc_macro2::{Ident, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

pub fn expand(task: &TaskFn) -> TokenStream {
    let private = task.opts.private_path();
    let item = &task.item;
    let vis = &item.vis;
    let name = &item.sig.ident;
    let name_str = name.to_string();
    let output = task.output();
    let options = task.opts.to_runtime(&private);

    let args: Vec<Ident> = (0..task.params.len())
        .map(|i| format_ident!("__parjob_arg{}", i))
        .collect();
    let owned: Vec<&syn::Type> = task.params.iter().map(|p| &p.owned).collect();
    let call_args =
        task.params
            .iter()
            .zip(&args)
            .map(|(p, a)| if p.by_ref { quote!(&#a) } else { quote!(#a) });
    // One parameter: `map` takes an iterator of it; else of tuples.
    let (map_item, map_pattern) = if args.len() == 1 {
        (quote!(#(#owned)*), quote!(#(#args)*))
    } else {
        (quote!((#(#owned),*)), quote!((#(#args),*)))
    };
    let process = task.opts.is_process();
    let (adapter, map_returns) = match task.opts.return_as.unwrap_or_default() {
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
    };
    let codecs = if process {
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
    let registration = if process {
        registration(task, &private, &owned, &output)
    } else {
        TokenStream::new()
    };
    let doc_struct = format!(
        "The parjob task made of [`{name_str}`](fn@{name_str}): `{name_str}::delayed(..)` builds one job, \
         `{name_str}::map(..)` runs it over an iterator."
    );
    let doc_par_map = format!(
        "Runs `{name_str}` over an input of known length and positions: a range, a `Vec`, \
         or any rayon indexed parallel iterator (`v.par_iter().copied()`). Returns the \
         results in input order. On threads it splits the input across the pool as rayon \
         does, so tasks of nanoseconds cost what they cost in rayon; with a timeout, \
         `verbose`, a progress bar, or another backend it runs exactly as `map`."
    );
    let doc_delayed = format!(
        "One call of `{name_str}` waiting to run (joblib's `delayed({name_str})(..)`). \
         The job owns its arguments; a `&T` parameter takes `T`'s owned form."
    );
    let doc_map = format!(
        "Runs `{name_str}` over every item (a tuple for several parameters), with the \
         attribute's options, on a shared pool. Returns the results in input order \
         (`return_as = \"list\"`, the default), or an iterator of them \
         (`\"generator\"`, `\"generator_unordered\"`)."
    );

    quote! {
        #item

        #[doc = #doc_struct]
        #[allow(non_camel_case_types)]
        #vis struct #name {}

        impl #name {
            #[doc = #doc_delayed]
            #[allow(clippy::too_many_arguments)]
            pub fn delayed(#(#args: #owned),*) -> #private::Job<#output> {
                #private::Job::call::<Self>((#(#args,)*))
            }

            #[doc = #doc_map]
            pub fn map<__ParjobItems>(items: __ParjobItems) -> #map_returns
            where
                __ParjobItems: ::core::iter::IntoIterator<Item = #map_item>,
            {
                #private::map::calls::<Self, _>(
                    <Self as #private::Task>::options(),
                    ::core::iter::Iterator::map(
                        ::core::iter::IntoIterator::into_iter(items),
                        |#map_pattern| (#(#args,)*),
                    ),
                )
                .#adapter()
            }

            #[doc = #doc_par_map]
            pub fn par_map<__ParjobItems>(
                items: __ParjobItems,
            ) -> #private::Result<::std::vec::Vec<#output>>
            where
                __ParjobItems: #private::rayon::iter::IntoParallelIterator<Item = #map_item>,
                __ParjobItems::Iter: #private::rayon::iter::IndexedParallelIterator,
            {
                #private::map::indexed::<Self, _>(
                    #private::rayon::iter::ParallelIterator::map(
                        #private::rayon::iter::IntoParallelIterator::into_par_iter(items),
                        |#map_pattern| (#(#args,)*),
                    ),
                )
            }

            /// The options given in the attribute (unset ones come from the
            /// environment and the defaults when a run starts).
            pub fn options() -> #private::Options {
                <Self as #private::Task>::options()
            }
        }

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

            #codecs
        }

        #registration
    }
}

/// The `inventory` registration of a process task, and one serde check per
/// type, spanned on that type so the compiler points at it.
fn registration(
    task: &TaskFn,
    private: &TokenStream,
    owned: &[&syn::Type],
    output: &syn::Type,
) -> TokenStream {
    let name = &task.item.sig.ident;
    let arg_checks = task.params.iter().zip(owned).map(|(p, owned)| {
        let span = p.ty.span();
        quote_spanned!(span=> #private::assert_process_arg::<#owned>();)
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
