use parjob::prelude::*;
use std::rc::Rc;

#[parallel]
fn count(xs: Rc<Vec<u64>>) -> usize {
    xs.len()
}

fn main() {
    let _ = count(Rc::new(vec![1]));
}
