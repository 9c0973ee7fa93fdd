use parjob::prelude::*;

#[memoize(dir = "target/ui-cache", location = "target/ui-cache-2")]
fn features(path: String) -> Vec<f32> {
    vec![path.len() as f32]
}

fn main() {
    let _ = features("a".into());
}
