//! Table-driven tests of the loop analysis: every accepted and refused form.
use super::*;
use syn::parse_quote;

/// What the analysis makes of a body: its updates, whether it uses `?`,
/// its `continue` sites, and its errors' messages.
struct Seen {
    updates: usize,
    question: bool,
    continues: usize,
    errors: Vec<String>,
    captured: Vec<String>,
}

fn seen(block: syn::Block, kind: Kind) -> Seen {
    let model = analyse(&block, &parse_quote!(x), kind);
    Seen {
        updates: model.effects.len(),
        question: model.question,
        continues: model
            .sites
            .values()
            .filter(|s| **s == Site::Continue)
            .count(),
        errors: model.errors.iter().map(ToString::to_string).collect(),
        captured: model.captured.iter().map(ToString::to_string).collect(),
    }
}

/// A body from its source text.
fn block(text: &str) -> syn::Block {
    syn::parse_str(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// Each accepted form, with how many updates it makes.
const ACCEPTED: &[(&str, usize)] = &[
    ("{ total += x; }", 1),
    ("{ stats.sum -= x; }", 1),
    ("{ bits |= 1 << x; }", 1),
    ("{ seen.push(x); }", 1),
    ("{ seen.extend([x, x]); }", 1),
    ("{ index.insert(x, x * 2); }", 1),
    ("{ best = best.max(x); }", 1),
    ("{ worst = worst.min(x); }", 1),
    ("{ let mut local = 0; local += x; local = 3; }", 0),
    ("{ for y in 0..x { total += y; } }", 1),
    ("{ let v = [x]; let n = v.len(); total += n; }", 1),
    ("{ let s = label.replace(\"a\", \"b\"); out.push(s); }", 1),
    ("{ if let Some(y) = f(x) { total += y; } }", 1),
    ("{ match x { 0 => {} y => total += y } }", 1),
    ("{ let c = |y: u64| y + 1; total += c(x); }", 1),
    ("{ loop { break; } }", 0),
    ("{ 'inner: for y in 0..3 { continue 'inner; } }", 0),
];

/// Each refused form, with a part of its message.
const REFUSED: &[(&str, &str)] = &[
    ("{ break; }", "`break` cannot leave a parallel loop"),
    ("{ return; }", "`return` cannot leave a parallel loop"),
    (
        "{ for y in 0..3 { continue 'outer; } }",
        "continued by label",
    ),
    (
        "{ total = x; }",
        "cannot assign to the outer variable `total`",
    ),
    ("{ v[0] += x; }", "only as a whole variable or a field"),
    ("{ *r += x; }", "only as a whole variable or a field"),
    (
        "{ v.sort(); }",
        "cannot call `sort` on the outer variable `v`",
    ),
    ("{ v.clear(); }", "cannot call `clear`"),
    ("{ let n = v.push(x); }", "only as a statement of its own"),
    (
        "{ let r = &mut v; }",
        "cannot borrow the outer variable `v` mutably",
    ),
    ("{ total += x; let t = total; }", "cannot read `total`"),
    (
        "{ s.a += x; let t = s; }",
        "updates `s.a`, so its body cannot read `s`",
    ),
    ("{ println!(\"{}\", f(x)?); }", "inside `println!`"),
    ("{ assert!({ total += x; true }); }", "inside `assert!`"),
];

#[test]
fn every_accepted_form_is_a_site_and_no_error() {
    for (text, updates) in ACCEPTED {
        let s = seen(block(text), Kind::Loop);
        assert!(s.errors.is_empty(), "{text}: {:?}", s.errors);
        assert_eq!(s.updates, *updates, "{text}");
    }
}

#[test]
fn continue_and_question_marks_are_sites_where_they_belong() {
    let s = seen(
        parse_quote!({
            if x > 1 {
                continue;
            }
            total += f(x)?;
        }),
        Kind::Loop,
    );
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!((s.continues, s.question, s.updates), (1, true, 1));
    let inner = seen(
        parse_quote!({
            for y in 0..x {
                continue;
            }
        }),
        Kind::Loop,
    );
    assert_eq!(inner.continues, 0);
    let in_closure = seen(
        parse_quote!({
            let g = || f(x)?;
        }),
        Kind::Loop,
    );
    assert!(!in_closure.question);
    let comprehension = seen(
        parse_quote!({
            continue;
        }),
        Kind::Comprehension,
    );
    assert!(comprehension.errors[0].contains("`continue` has no value"));
}

#[test]
fn every_refused_form_is_an_error_that_names_what_to_do() {
    for (text, expected) in REFUSED {
        let s = seen(block(text), Kind::Loop);
        assert!(
            s.errors.iter().any(|e| e.contains(expected)),
            "{text}: expected {expected:?}, got {:?}",
            s.errors
        );
    }
}

#[test]
fn calls_that_only_read_an_outer_variable_are_reads() {
    for block in [
        parse_quote!({
            let s = label.replace("a", "b");
        }),
        parse_quote!({
            let n = items.len();
        }),
        parse_quote!({
            let first = names.first().cloned();
        }),
        parse_quote!({
            let t = text.trim().to_string();
        }),
    ] {
        let text = quote::ToTokens::to_token_stream(&block).to_string();
        let s: Seen = seen(block, Kind::Loop);
        assert!(s.errors.is_empty(), "{text}: {:?}", s.errors);
        assert_eq!(s.captured.len(), 1, "{text}: {:?}", s.captured);
    }
}
