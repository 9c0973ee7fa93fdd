//! The MPI backend against sequential and the process backend, in one
//! run, with 3 ranks (1 driver, 2 workers) on this machine.
//!
//! `cargo bench --features mpi --bench mpi` (it starts itself under
//! `mpirun --oversubscribe -n 3`).
//!
//! 1. 2,000 tasks of 1 ms of CPU: speedup over sequential, beside the
//!    process backend's with 2 workers (target: >= 1.8x).
//! 2. 100,000 tiny tasks: cost per task, beside the process backend's.
//! 3. joblib's slice means, an 80 MB argument and 95 tasks of 10 ms: MPI
//!    (the argument sent once per rank) against processes with shared
//!    memory (target: within 1.2x).
//! 4. The driver's message rate: 20,000 one-job batches, each a task
//!    message out and a result message back, 5 times (minimum and
//!    median), and the driver's MPI thread's CPU over a second of idling.
//!
//! Each figure is the best of 3 runs.

use parjob::prelude::*;
use parjob::{Backend, Parallel};
use std::time::{Duration, Instant};

#[parallel(backend = "process")]
fn spin(micros: u64) -> u64 {
    let until = Instant::now() + Duration::from_micros(micros);
    let mut n = 0u64;
    while Instant::now() < until {
        n = n.wrapping_add(1);
    }
    n
}

#[parallel(backend = "process")]
fn tiny(x: u64) -> u64 {
    x + 1
}

#[parallel(backend = "process")]
fn slice_mean(data: &[f64], k: usize) -> f64 {
    std::thread::sleep(Duration::from_millis(10));
    let chunk = data.len() / 95;
    let slice = &data[k * chunk..(k + 1) * chunk];
    slice.iter().sum::<f64>() / slice.len() as f64
}

fn best(runs: usize, mut f: impl FnMut() -> f64) -> f64 {
    (0..runs).map(|_| f()).fold(f64::INFINITY, f64::min)
}

fn timed(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

fn on(backend: Backend) -> Parallel {
    Parallel::new().backend(backend).n_jobs(2)
}

fn one_ms_tasks() {
    let sequential = best(3, || {
        timed(|| {
            (0..2000).for_each(|_| {
                std::hint::black_box(spin(1000));
            })
        })
    });
    let run = |backend| {
        best(3, || {
            timed(|| {
                on(backend)
                    .run((0..2000).map(|_| spin::delayed(1000)))
                    .unwrap();
            })
        })
    };
    let (mpi, process) = (run(Backend::Mpi), run(Backend::Process));
    println!(
        "| 2,000 tasks of 1 ms | sequential {sequential:.3} s | MPI {mpi:.3} s: {:.2}x | processes {process:.3} s: {:.2}x |",
        sequential / mpi,
        sequential / process
    );
}

fn tiny_tasks() {
    let per_task = |backend| {
        best(3, || {
            timed(|| {
                on(backend).run((0..100_000).map(tiny::delayed)).unwrap();
            }) / 100_000.0
                * 1e6
        })
    };
    let (mpi, process) = (per_task(Backend::Mpi), per_task(Backend::Process));
    println!("| 100,000 tiny tasks | MPI {mpi:.3} us/task | processes {process:.3} us/task |");
}

fn slice_means() {
    let data: Vec<f64> = (0..10_000_000).map(|i| (i % 1000) as f64).collect();
    let run = |backend| {
        best(3, || {
            timed(|| {
                on(backend)
                    .run((0..95).map(|k| slice_mean::delayed(&data, k)))
                    .unwrap();
            })
        })
    };
    let (mpi, process) = (run(Backend::Mpi), run(Backend::Process));
    println!(
        "| slice means, 80 MB, 95 tasks | MPI {mpi:.3} s | processes + shared memory {process:.3} s | ratio {:.2} |",
        mpi / process
    );
}

/// CPU seconds used so far by this process's thread named `name`.
fn thread_cpu(name: &str) -> f64 {
    let ticks = 100.0; // USER_HZ on Linux
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap();
            // Fields after the command's closing parenthesis: utime is the
            // 12th, stime the 13th.
            let rest = &stat[stat.rfind(')').unwrap() + 2..];
            let fields: Vec<&str> = rest.split(' ').collect();
            let utime: f64 = fields[11].parse().unwrap();
            let stime: f64 = fields[12].parse().unwrap();
            return (utime + stime) / ticks;
        }
    }
    panic!("no thread named {name}");
}

fn driver_rate() {
    let mut rates = Vec::new();
    let mut cpus = Vec::new();
    for _ in 0..5 {
        let (messages, _) = parjob::mpi::driver_sent();
        let cpu = thread_cpu("parjob-mpi");
        let seconds = timed(|| {
            on(Backend::Mpi)
                .batch_size(1)
                .pre_dispatch(64)
                .run((0..20_000).map(tiny::delayed))
                .unwrap();
        });
        let sent = parjob::mpi::driver_sent().0 - messages;
        let cpu = thread_cpu("parjob-mpi") - cpu;
        // Every task message is answered by one result message.
        let handled = 2.0 * sent as f64;
        rates.push(handled / seconds);
        cpus.push(cpu / handled * 1e6);
    }
    let (rate_min, rate_median) = min_median(&mut rates);
    let (cpu_min, cpu_median) = min_median(&mut cpus);
    println!(
        "| driver messages, one-job batches, 5 runs | min {rate_min:.0}, median {rate_median:.0} messages/s | MPI thread CPU min {cpu_min:.2}, median {cpu_median:.2} us/message: capacity about {:.0} messages/s |",
        1e6 / cpu_median
    );
    // Idle: no batch in flight for a second.
    let cpu = thread_cpu("parjob-mpi");
    std::thread::sleep(std::time::Duration::from_secs(1));
    println!(
        "| the driver's MPI thread, idle for 1 s | {:.1} ms of CPU |",
        (thread_cpu("parjob-mpi") - cpu) * 1e3
    );
}

/// Minimum and median of `xs`.
fn min_median(xs: &mut [f64]) -> (f64, f64) {
    xs.sort_by(f64::total_cmp);
    (xs[0], xs[xs.len() / 2])
}

#[parjob::main]
fn main() {
    if !parjob::mpi::launched() {
        let exe = std::env::current_exe().unwrap();
        let status = std::process::Command::new("mpirun")
            .args(["--allow-run-as-root", "--oversubscribe", "-n", "3"])
            .arg(exe)
            .args(std::env::args().skip(1))
            .status()
            .expect("mpirun (OpenMPI) must be installed");
        std::process::exit(status.code().unwrap_or(1));
    }
    // Start the workers of both backends, so no row pays for it.
    on(Backend::Process)
        .run((0..10).map(tiny::delayed))
        .unwrap();
    on(Backend::Mpi).run((0..10).map(tiny::delayed)).unwrap();
    one_ms_tasks();
    tiny_tasks();
    slice_means();
    driver_rate();
}
