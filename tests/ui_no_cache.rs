//! The build without the `cache` feature: `#[memoize]` is one error that
//! says how to turn the feature on. CI runs it as
//! `cargo test --no-default-features --test ui_no_cache`.

#[test]
#[cfg_attr(
    feature = "cache",
    ignore = "checks a build without the cache feature: cargo test --no-default-features --test ui_no_cache"
)]
#[rustversion::attr(
    not(stable(1.95)),
    ignore = "the .stderr files are written by rustc 1.95"
)]
fn memoize_without_the_cache_feature_says_how_to_enable_it() {
    trybuild::TestCases::new().compile_fail("ui-tests/no-cache/*.rs");
}
