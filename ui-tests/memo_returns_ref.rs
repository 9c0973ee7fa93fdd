use parjob::prelude::*;

#[memoize(dir = "target/ui-cache")]
fn first_word(text: &str) -> &str {
    text.split(' ').next().unwrap_or("")
}

fn main() {
    let _ = first_word("a b");
}
