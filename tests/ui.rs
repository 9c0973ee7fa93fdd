//! Compile errors are features: each misuse of the macros has a case in
//! `ui-tests/` whose `.stderr` is the message the user sees.
//! Regenerate with `TRYBUILD=overwrite cargo test --test ui` and review.

#[test]
#[rustversion::attr(
    not(stable(1.95)),
    ignore = "the .stderr files are written by rustc 1.95; other compilers word errors differently (Contributing in the README; .ci/run refuses other compilers)"
)]
fn macro_misuse_gives_an_error_that_says_what_to_do() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("ui-tests/*.rs");
}
