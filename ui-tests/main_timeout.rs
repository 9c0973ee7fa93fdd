#[parjob::main(timeout = 5)]
fn main() {}
