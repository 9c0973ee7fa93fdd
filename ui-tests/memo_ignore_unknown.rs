use parjob::prelude::*;

#[memoize(dir = "target/ui-cache", ignore = [verbos])]
fn features(path: String, verbose: bool) -> Vec<f32> {
    if verbose {
        println!("{path}");
    }
    vec![path.len() as f32]
}

fn main() {
    let _ = features("a".into(), false);
}
