use parjob::prelude::*;

#[memoize(dir = "target/ui-cache")]
fn doubled<T: Clone>(items: Vec<T>) -> Vec<T> {
    items.iter().chain(items.iter()).cloned().collect()
}

fn main() {
    let _ = doubled(vec![1, 2]);
}
