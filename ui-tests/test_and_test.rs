#[parjob::test]
#[test]
fn runs_once() {}

fn main() {}
