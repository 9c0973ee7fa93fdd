use parjob::prelude::*;

#[parallel]
fn parse(text: String) -> Result<u64, std::num::ParseIntError> {
    let file = std::fs::read_to_string(&text)?;
    file.trim().parse()
}

fn main() {
    let _ = parse("1".into());
}
