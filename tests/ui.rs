//! Compile errors are features: each misuse of the macros has a case in
//! `ui-tests/` whose `.stderr` is the message the user sees.
//! Regenerate with `TRYBUILD=overwrite cargo test --test ui` and review.

#[test]
fn macro_misuse_gives_an_error_that_says_what_to_do() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("ui-tests/*.rs");
}
