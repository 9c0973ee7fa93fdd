use parjob::prelude::*;

#[memoize(dir = "target/ui-cache", expires_after = "7 days", bytes_limit = "10 parsecs")]
fn features(path: String) -> Vec<f32> {
    vec![path.len() as f32]
}

fn main() {
    let _ = features("a".into());
}
