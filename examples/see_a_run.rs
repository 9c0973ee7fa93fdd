//! See a run: the README's timeline, regenerated.
//!
//! `cargo run --release --example see_a_run`
//!
//! Runs 60 simulations of uneven length on 2 worker processes with
//! `trace`, and writes `target/see-a-run/run.json` (open it in
//! <https://ui.perfetto.dev>) and `target/see-a-run/run.html` (open it in
//! any browser). One item crashes its worker on its first attempt and is
//! retried; one straggles. With Debian's `chromium` installed, it then
//! screenshots the report into `docs/see-a-run.png`, the README's picture.

use parjob::prelude::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A simulation of `seed`: uneven work, one straggler, one crash.
#[parallel(backend = "process", n_jobs = 2, retries = 1, verbose = 1)]
fn simulate(seed: u64, scratch: &Path) -> f64 {
    let marker = scratch.join(format!("{seed}.tried"));
    if seed == 21 && !marker.exists() {
        std::fs::write(&marker, b"").expect("the scratch folder is writable");
        std::process::abort();
    }
    let millis = if seed == 40 {
        180
    } else {
        5 + (seed * 37 % 11) * 3
    };
    std::thread::sleep(Duration::from_millis(millis));
    (seed as f64).sqrt()
}

#[parjob::main]
fn main() -> parjob::Result<()> {
    let out = PathBuf::from("target/see-a-run");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    let json = out.join("run.json");
    let items = (0..60u64).map(|seed| (seed, out.clone()));
    let results = simulate::with(|p| p.trace(json.as_path())).map(items)?;
    println!(
        "{} simulations; the report is {}",
        results.len(),
        out.join("run.html").display()
    );
    screenshot(&out.join("run.html"), Path::new("docs/see-a-run.png"));
    Ok(())
}

/// Screenshots `page` into `png` with headless Chromium, when it is here.
fn screenshot(page: &Path, png: &Path) {
    let page = std::fs::canonicalize(page).expect("the report was written");
    let shot = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .arg("--window-size=1200,760")
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()))
        .output();
    match shot {
        Ok(o) if o.status.success() => println!("screenshot: {}", png.display()),
        _ => println!("no screenshot: install chromium (apt-get install chromium) to make one"),
    }
}
