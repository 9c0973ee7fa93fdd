// A Pool runs `#[parallel]` functions; a closure cannot cross a process
// boundary, and each misuse says so.
use parjob::pool::Pool;
use parjob::prelude::*;

#[parallel(backend = "process")]
fn square(x: u64) -> u64 {
    x * x
}

#[parjob::main]
fn main() -> parjob::Result<()> {
    let pool = Pool::new(2)?;
    let _ = pool.map(|x: u64| x * 2, 0..10u64);
    let _ = pool.apply_async(|| 3u64);
    let _ = pool.starmap(|a: u64, b: u64| a + b, [(1u64, 2u64)]);
    let _ = pool.map(square::delayed, 0..10u64);
    Ok(())
}
