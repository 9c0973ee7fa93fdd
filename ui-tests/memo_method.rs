use parjob::prelude::*;

struct Model {
    weight: f64,
}

impl Model {
    #[memoize(dir = "target/ui-cache")]
    fn predict(&self, x: f64) -> f64 {
        self.weight * x
    }
}

fn main() {
    let _ = Model { weight: 2.0 }.predict(1.0);
}
