use parjob::prelude::*;

struct Particle {
    mass: f64,
}

#[parallel(backend = "process")]
fn energy(p: Particle, scale: f64) -> f64 {
    p.mass * scale
}

fn main() {
    let _ = energy(Particle { mass: 1.0 }, 2.0);
}
