//! The expansions of marked loops and `parallel_for!`.
//!
//! On threads, a loop becomes (see the runtime's `loops` module):
//!
//! ```text
//! {
//!     enum __ParjobEffect<E0, E1> { E0(E0), E1(E1) }  // one variant per update site
//!     let mut items = IntoIterator::into_iter(ITER);
//!     let mut run = Loop::new(OPTIONS, explicit);
//!     loop {
//!         match run.step() {
//!             LoopStep::Here(n) => {                        // the original body, here
//!                 for item in items.by_ref().take(n) { let PAT = item; BODY }
//!             }
//!             LoopStep::Threads => if let Some(residual) = run.window(&mut items, &mut out,
//!                 |log, PAT| { BODY with updates logged; Ok(()) },  // on the pool
//!                 |effect| match effect { E0(v) => s += v, .. },   // here, in order
//!             ) { match residual? {} }                   // the first `?` error
//!             LoopStep::Done => break,
//!         }
//!     }
//! }
//! ```

use super::analyse::{Apply, Effect};
use super::remote::{args_tuple, lookup, Remote, Sink};
use super::rewrite::Body;
use crate::options::{Opts, ReturnAs};
use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{ExprForLoop, Pat};

/// The effect enum and the fold closure's arms.
fn effects(effects: &[Effect]) -> (TokenStream, TokenStream) {
    let params: Vec<_> = (0..effects.len())
        .map(|i| format_ident!("__ParjobE{}", i))
        .collect();
    let variants = (0..effects.len()).map(|i| format_ident!("E{}", i));
    let enum_def = quote! {
        #[allow(non_camel_case_types, dead_code)]
        enum __ParjobEffect<#(#params),*> { #(#variants(#params)),* }
    };
    let arms = effects.iter().enumerate().map(|(i, effect)| {
        let variant = format_ident!("E{}", i);
        let target = &effect.target;
        match &effect.apply {
            Apply::Compound(op) => quote! {
                __ParjobEffect::#variant(__parjob_v) => { #target #op __parjob_v; }
            },
            Apply::Method(method, arity) => {
                let args: Vec<_> = (0..*arity)
                    .map(|k| format_ident!("__parjob_a{}", k))
                    .collect();
                quote! {
                    __ParjobEffect::#variant((#(#args,)*)) => { #target.#method(#(#args),*); }
                }
            }
            Apply::Extremum(method) => quote! {
                __ParjobEffect::#variant(__parjob_v) => { #target = #target.#method(__parjob_v); }
            },
        }
    });
    (enum_def, quote!(#(#arms)*))
}

/// The residual type of the parallel body, and how the expansion re-raises
/// the first one.
fn residual(body: &Body) -> (TokenStream, TokenStream) {
    if body.question {
        (
            quote!(_),
            quote!(
                #[allow(unreachable_code)]
                match __parjob_exit? {}
            ),
        )
    } else {
        (
            quote!(::core::convert::Infallible),
            quote!(match __parjob_exit {}),
        )
    }
}

/// A loop on threads: windows on the pool, and the original body here once
/// the items prove tiny. `per_item` is what the caller runs per item then.
fn on_threads(
    for_loop: &ExprForLoop,
    body: &Body,
    opts: &Opts,
    explicit: bool,
    per_item: TokenStream,
    yields: bool,
    out: TokenStream,
) -> TokenStream {
    let private = opts.private_path();
    let options = opts.to_runtime(&private);
    let pat: &Pat = &for_loop.pat;
    let iter = &for_loop.expr;
    let parallel = &body.parallel;
    let (enum_def, arms) = effects(&body.effects);
    let (residual, reraise) = residual(body);
    let span = for_loop.for_token.span();
    let shared = body
        .captured
        .iter()
        .map(|ident| quote_spanned!(ident.span()=> #private::loops::shared_with_threads(&#ident);));
    let value = if yields {
        quote!(
            #[allow(unused_braces)]
            let __parjob_value = #parallel;
            ::core::result::Result::Ok(__parjob_value)
        )
    } else {
        quote!(#parallel; ::core::result::Result::Ok(()))
    };
    let holes = body.effects.iter().map(|_| quote!(_));
    quote_spanned! {span=>
        #enum_def
        // Never run: it makes a value the body cannot share between threads
        // an error at the value itself.
        let _ = || { #(#shared)* };
        let mut __parjob_items = ::core::iter::IntoIterator::into_iter(#iter);
        let mut __parjob_loop = #private::loops::Loop::new(#options, #explicit);
        loop {
            match __parjob_loop.step() {
                #private::loops::LoopStep::Here(__parjob_n) => {
                    let mut __parjob_taken = 0usize;
                    for __parjob_item in ::core::iter::Iterator::take(
                        ::core::iter::Iterator::by_ref(&mut __parjob_items),
                        __parjob_n,
                    ) {
                        __parjob_taken += 1;
                        let #pat = __parjob_item;
                        #per_item
                    }
                    __parjob_loop.ran_here(__parjob_taken, __parjob_n);
                }
                #private::loops::LoopStep::Threads => {
                    if let ::core::option::Option::Some(__parjob_exit) = __parjob_loop.window(
                        &mut __parjob_items,
                        #out,
                        |__parjob_log: &mut ::std::vec::Vec<__ParjobEffect<#(#holes),*>>, #pat|
                         -> ::core::result::Result<_, #residual> { #value },
                        |__parjob_effect| match __parjob_effect { #arms },
                    ) {
                        #reraise
                    }
                }
                #private::loops::LoopStep::Done => break,
            }
        }
    }
}

/// A marked loop on threads.
pub fn thread_loop(
    for_loop: &ExprForLoop,
    body: &Body,
    opts: &Opts,
    explicit: bool,
) -> TokenStream {
    let original = &for_loop.body;
    let steps = on_threads(
        for_loop,
        body,
        opts,
        explicit,
        quote!(#original),
        false,
        quote!(&mut ::std::vec::Vec::<()>::new()),
    );
    quote!({ #steps })
}

/// `parallel_for!` on threads, as a `Vec` of the body's values.
pub fn thread_list(
    for_loop: &ExprForLoop,
    body: &Body,
    opts: &Opts,
    explicit: bool,
) -> TokenStream {
    let original = &for_loop.body;
    let steps = on_threads(
        for_loop,
        body,
        opts,
        explicit,
        quote!(
            #[allow(unused_braces)]
            let __parjob_value = #original;
            __parjob_out.push(__parjob_value);
        ),
        true,
        quote!(&mut __parjob_out),
    );
    quote!({
        let mut __parjob_out = ::std::vec::Vec::new();
        #steps
        __parjob_out
    })
}

/// `parallel_for!` with `return_as = "generator"` or `"generator_unordered"`
/// on threads: jobs own what their body uses.
pub fn thread_stream(for_loop: &ExprForLoop, opts: &Opts) -> TokenStream {
    let private = opts.private_path();
    let options = opts.to_runtime(&private);
    let pat = &for_loop.pat;
    let iter = &for_loop.expr;
    let body = &for_loop.body;
    let adapter = stream_adapter(opts);
    quote!(#private::map::jobs(
        #options,
        ::core::iter::Iterator::map(
            ::core::iter::IntoIterator::into_iter(#iter),
            move |#pat| #private::Job::new(move || #body),
        ),
    ).#adapter())
}

fn stream_adapter(opts: &Opts) -> TokenStream {
    match opts.return_as.unwrap_or_default() {
        ReturnAs::GeneratorUnordered => quote!(unordered),
        _ => quote!(ordered),
    }
}

/// The items' argument tuples, evaluated here, and the task check.
fn remote_parts(
    for_loop: &ExprForLoop,
    remote: &Remote,
    private: &TokenStream,
) -> (TokenStream, TokenStream, TokenStream) {
    let (module, task) = lookup(&remote.callee, private);
    let pat = &for_loop.pat;
    let iter = &for_loop.expr;
    let args = args_tuple(remote, &task, private);
    let span = remote.callee.span();
    let check = quote_spanned!(span=> __parjob_private_check::<#task>(););
    let calls = quote!(::core::iter::Iterator::map(
        ::core::iter::IntoIterator::into_iter(#iter),
        |#pat| #args,
    ));
    (quote!(#module #check), task, calls)
}

/// A marked loop on the process backend: results stream back in order and
/// are folded here. A run's failure returns from the function with `?`.
pub fn process_loop(for_loop: &ExprForLoop, remote: &Remote, opts: &Opts) -> TokenStream {
    let private = opts.private_path();
    let options = opts.to_runtime(&private);
    let (prelude, task, calls) = remote_parts(for_loop, remote, &private);
    let fold = match &remote.sink {
        Sink::Discard => quote!(let _ = __parjob_value;),
        Sink::Compound(target, op) => quote!(#target #op __parjob_value;),
        Sink::Method(target, method) => quote!(#target.#method(__parjob_value);),
        Sink::Extremum(target, method) => quote!(#target = #target.#method(__parjob_value);),
    };
    // A failed run returns from the function, whose return type must
    // take a `parjob::Error`: said on the loop, not on a `?` nobody wrote.
    let span = for_loop.for_token.span();
    let fail =
        quote_spanned!(span=> return #private::loops::ReturnsError::from_run_error(__parjob_error));
    quote!({
        use #private::loops::process_task as __parjob_private_check;
        #prelude
        // A path call, not a method call: when the callee is not a task, the
        // one error is that, not also "the method exists but its bounds ..".
        for __parjob_result in #private::map::TaskCalls::ordered(#private::map::calls::<#task, _>(#options, #calls)) {
            let __parjob_value = match __parjob_result {
                ::core::result::Result::Ok(value) => value,
                ::core::result::Result::Err(__parjob_error) => #fail,
            };
            #fold
        }
    })
}

/// `parallel_for!` on the process backend: `parjob::Result<Vec<T>>`, or
/// the streaming iterators.
pub fn process_for(for_loop: &ExprForLoop, remote: &Remote, opts: &Opts) -> TokenStream {
    let private = opts.private_path();
    let options = opts.to_runtime(&private);
    let (prelude, task, calls) = remote_parts(for_loop, remote, &private);
    let adapter = match opts.return_as.unwrap_or_default() {
        ReturnAs::List => quote!(list),
        ReturnAs::Generator => quote!(ordered),
        ReturnAs::GeneratorUnordered => quote!(unordered),
    };
    quote!({
        use #private::loops::process_task as __parjob_private_check;
        #prelude
        #private::map::TaskCalls::#adapter(#private::map::calls::<#task, _>(#options, #calls))
    })
}
