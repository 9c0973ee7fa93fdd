//! Collecting errors, and suggesting the name the user probably meant.

use proc_macro2::TokenStream;
use quote::ToTokens;
use std::fmt::Display;

/// Errors gathered while parsing and checking, emitted together.
#[derive(Default)]
pub struct Errors(Option<syn::Error>);

impl Errors {
    /// Records an error spanned on `tokens`.
    pub fn spanned(&mut self, tokens: impl ToTokens, message: impl Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    /// Records an error.
    pub fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    /// How many errors there are.
    pub fn count(&self) -> usize {
        self.0.as_ref().map_or(0, |e| e.clone().into_iter().count())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The errors as `compile_error!` invocations.
    pub fn to_compile_errors(&self) -> TokenStream {
        self.0
            .as_ref()
            .map(syn::Error::to_compile_error)
            .unwrap_or_default()
    }
}

/// The closest of `candidates` to `typo`, if it is close enough to be a typo.
pub fn closest<'a>(typo: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(typo, c), *c))
        // Short names ("mpi") take one edit: two would match anything.
        .filter(|(d, c)| *d <= (c.len() / 3).max(1) + usize::from(c.len() > 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut diagonal = row[0];
        row[0] = i;
        for j in 1..=b.len() {
            let above = row[j];
            let cost = usize::from(a[i - 1] != b[j - 1]);
            row[j] = (row[j] + 1).min(row[j - 1] + 1).min(diagonal + cost);
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_names_only() {
        let known = ["n_jobs", "backend", "crate"];
        assert_eq!(closest("njobs", &known), Some("n_jobs"));
        assert_eq!(closest("backnd", &known), Some("backend"));
        assert_eq!(closest("timeout", &known), None);
    }
}
