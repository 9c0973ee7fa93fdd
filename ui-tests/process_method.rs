use parjob::prelude::*;

struct Model {
    weight: f64,
}

impl Model {
    #[parallel(n_jobs = 2, backend = "process")]
    fn predict(&self, x: f64) -> f64 {
        self.weight * x
    }
}

fn main() {
    let _ = Model { weight: 2.0 }.predict(1.0);
}
