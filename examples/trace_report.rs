//! Rebuilds the one-page HTML report of a trace from its JSON file:
//! `run.json` gives `run.html` beside it.
//!
//! `cargo run --example trace_report -- run.json`
//!
//! A traced run (`trace = "run.json"`) writes both files itself; this is
//! for a JSON file copied from elsewhere, or one kept from an older run.

fn main() {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: cargo run --example trace_report -- run.json");
        std::process::exit(2);
    };
    match parjob::trace::rebuild_report(std::path::Path::new(&path)) {
        Ok(page) => println!("wrote {}", page.display()),
        Err(e) => {
            eprintln!("trace_report: {e}");
            std::process::exit(1);
        }
    }
}
