//! What the user sees while a run goes: joblib-style `verbose` lines on
//! stderr and an optional progress bar.
//!
//! Both are off by default and then cost one branch per finished batch.
//! Lines are rate-limited, so even a million tiny jobs print only a few:
//! - `verbose = 1`: a line at most every 2 s, and one at the end;
//! - `verbose = 2`: every 0.5 s;
//! - `verbose = 3`: every 0.1 s, with the batch size.
//!
//! The first line says which backend runs the jobs and, for the thread
//! backend with a timeout, what the timeout can and cannot stop.
//!
//! When no batch has finished for a while ([`Reporter::patience`]: 10 s at
//! `verbose = 1`, 5 s at 2, 2 s at 3), a line names the job that has been
//! running longest, its item and, on processes, its worker's pid: what a
//! user needs to see which task hangs.

use crate::backend::LongestRunning;
use crate::options::{Backend, Plan};
use std::time::{Duration, Instant};

pub(crate) struct Reporter {
    active: Option<Box<Active>>,
}

struct Active {
    verbose: u8,
    /// `n_jobs` as asked for, shown in brackets as joblib does.
    n_jobs: i32,
    /// The plan, until the first line names what runs it.
    plan: Option<Plan>,
    started: Instant,
    last_line: Option<Instant>,
    done: usize,
    total: Option<usize>,
    #[cfg(feature = "progress")]
    bar: Option<indicatif::ProgressBar>,
}

impl Reporter {
    pub(crate) fn new(plan: &Plan, total: Option<usize>) -> Reporter {
        if plan.verbose == 0 && !plan.progress {
            return Reporter { active: None };
        }
        let active = Active {
            verbose: plan.verbose,
            n_jobs: plan.n_jobs_asked,
            plan: Some(*plan),
            started: Instant::now(),
            last_line: None,
            done: 0,
            total,
            #[cfg(feature = "progress")]
            bar: plan.progress.then(|| {
                let bar = match total {
                    Some(n) => indicatif::ProgressBar::new(n as u64),
                    None => indicatif::ProgressBar::new_spinner(),
                };
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "[parjob] {msg} {bar:40} {pos}/{len} jobs | {elapsed} elapsed | ~{eta} left",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                bar
            }),
        };
        Reporter {
            active: Some(Box::new(active)),
        }
    }

    /// The first batch went out: says which backend runs the run, where it
    /// came from, with how many workers (and, on processes, their pids),
    /// for which task.
    pub(crate) fn announce(&mut self, task: &str, pids: &[u32]) {
        let Some(a) = self.active.as_deref_mut() else {
            return;
        };
        let Some(plan) = a.plan.take() else {
            return;
        };
        #[cfg(feature = "progress")]
        if let Some(bar) = &a.bar {
            bar.set_message(bar_label(&plan, task));
        }
        if a.verbose >= 1 {
            eprintln!("{}", first_line(&plan, task, pids));
            for line in notes(&plan) {
                eprintln!("[Parallel(n_jobs={})]: {line}", plan.n_jobs_asked);
            }
        }
    }

    /// A batch of `jobs` finished; the next batch will hold `batch_size`.
    pub(crate) fn batch_done(&mut self, jobs: usize, batch_size: usize) {
        let Some(a) = self.active.as_deref_mut() else {
            return;
        };
        a.done += jobs;
        #[cfg(feature = "progress")]
        if let Some(bar) = &a.bar {
            bar.inc(jobs as u64);
        }
        if a.verbose == 0 {
            return;
        }
        let every = match a.verbose {
            1 => Duration::from_secs(2),
            2 => Duration::from_millis(500),
            _ => Duration::from_millis(100),
        };
        let now = Instant::now();
        if a.last_line.is_some_and(|t| now - t < every) {
            return;
        }
        a.last_line = Some(now);
        let elapsed = now - a.started;
        let remaining = match a.total {
            Some(total) if a.done > 0 && total >= a.done => {
                let left = elapsed.as_secs_f64() * (total - a.done) as f64 / a.done as f64;
                format!(" | remaining: ~{}", seconds(left))
            }
            _ => String::new(),
        };
        let batch = if a.verbose >= 3 {
            format!(" | batch_size: {batch_size}")
        } else {
            String::new()
        };
        eprintln!(
            "[Parallel(n_jobs={})]: Done {:>w$} tasks | elapsed: {}{remaining}{batch}",
            a.n_jobs,
            a.done,
            seconds(elapsed.as_secs_f64()),
            w = a.count_width()
        );
    }

    /// How long to wait for a batch before saying what still runs; `None`
    /// when nobody is watching.
    pub(crate) fn patience(&self) -> Option<Duration> {
        match self.active.as_deref()?.verbose {
            0 => None,
            1 => Some(Duration::from_secs(10)),
            2 => Some(Duration::from_secs(5)),
            _ => Some(Duration::from_secs(2)),
        }
    }

    /// No batch finished within [`patience`](Self::patience): names the
    /// job running longest.
    pub(crate) fn still_running(&mut self, longest: Option<LongestRunning>) {
        let Some(a) = self.active.as_deref_mut() else {
            return;
        };
        let elapsed = seconds(a.started.elapsed().as_secs_f64());
        match longest {
            Some(l) => {
                let place = l.pid.map(|p| format!(" in worker {p}")).unwrap_or_default();
                eprintln!(
                    "[Parallel(n_jobs={})]: Done {} tasks | elapsed: {elapsed} | still running: \
                     task `{}` on item {} for {}{place}",
                    a.n_jobs,
                    a.done,
                    l.task,
                    l.index,
                    seconds(l.running_for.as_secs_f64())
                );
            }
            None => eprintln!(
                "[Parallel(n_jobs={})]: Done {} tasks | elapsed: {elapsed} | still waiting",
                a.n_jobs, a.done
            ),
        }
    }

    /// The run ended (`ok` is false when it ended on an error or was dropped).
    pub(crate) fn finish(&mut self, ok: bool) {
        let Some(a) = self.active.take() else {
            return;
        };
        #[cfg(feature = "progress")]
        if let Some(bar) = &a.bar {
            if ok {
                bar.finish();
            } else {
                bar.abandon();
            }
        }
        if a.verbose >= 1 {
            let how = if ok { "finished" } else { "stopped" };
            eprintln!(
                "[Parallel(n_jobs={})]: Done {:>w$} tasks | elapsed: {} {how}",
                a.n_jobs,
                a.done,
                seconds(a.started.elapsed().as_secs_f64()),
                w = a.count_width()
            );
        }
    }

    /// A task's panic reached the run: printed at `verbose >= 1`, or
    /// always when another error already ended the run (it would
    /// otherwise be seen nowhere). The worker itself prints nothing.
    pub(crate) fn caught(&self, error: &crate::error::Error, lost: bool) {
        if !matches!(error, crate::error::Error::Panic { .. }) {
            return;
        }
        match self.active.as_deref() {
            Some(a) if a.verbose >= 1 => eprintln!("[Parallel(n_jobs={})]: {error}", a.n_jobs),
            _ if lost => eprintln!("[parjob] after the run had failed: {error}"),
            _ => {}
        }
    }
}

impl Active {
    /// The width the task counts are padded to, so that the `Done` lines
    /// of one run line up (joblib's `test_parallel_pretty_print`): the
    /// total's digits, and at least 3.
    fn count_width(&self) -> usize {
        self.total.map_or(0, |t| t.to_string().len()).max(3)
    }
}

/// `Using the process backend (from the task's attribute) with 2 worker
/// processes (pids 41, 42) for task `m::f` (batch_size=auto, ...)`.
fn first_line(plan: &Plan, task: &str, pids: &[u32]) -> String {
    let batching = match plan.batch_size {
        crate::options::BatchSize::Auto => "auto".to_string(),
        crate::options::BatchSize::Fixed(n) => n.to_string(),
    };
    let pre_dispatch = if plan.pre_dispatch == usize::MAX {
        "all".to_string()
    } else {
        plan.pre_dispatch.to_string()
    };
    let n = plan.n_jobs;
    let s = if n == 1 { "" } else { "s" };
    let workers = match plan.backend {
        Backend::Process => {
            let es = if n == 1 { "" } else { "es" };
            let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
            if pids.is_empty() {
                format!("{n} worker process{es} (none started yet)")
            } else {
                format!("{n} worker process{es} (pids {})", pids.join(", "))
            }
        }
        Backend::Thread => format!("{n} thread{s} in this process (pid {})", std::process::id()),
        Backend::Sequential => format!("1 worker, this thread (pid {})", std::process::id()),
        Backend::Mpi | Backend::MpiSpawn { .. } => format!("{n} MPI worker rank{s}"),
    };
    format!(
        "[Parallel(n_jobs={})]: Using the {} backend (from {}) with {workers} for task `{task}` \
         (batch_size={batching}, pre_dispatch={pre_dispatch})",
        plan.n_jobs_asked, plan.backend, plan.backend_source
    )
}

/// The progress bar's label: the task, and the backend and workers that
/// run it (`m::f on 2 worker processes`).
#[cfg(feature = "progress")]
fn bar_label(plan: &Plan, task: &str) -> String {
    let n = plan.n_jobs;
    let s = if n == 1 { "" } else { "s" };
    let workers = match plan.backend {
        Backend::Process => format!("{n} worker process{}", if n == 1 { "" } else { "es" }),
        Backend::Thread => format!("{n} thread{s}"),
        Backend::Sequential => "this thread".to_string(),
        Backend::Mpi | Backend::MpiSpawn { .. } => format!("{n} MPI rank{s}"),
    };
    format!("{task} on {workers}")
}

/// What the plan's frame limit and timeout mean on its backend.
fn notes(plan: &Plan) -> Vec<String> {
    let mut notes = Vec::new();
    if plan.backend.is_remote() {
        notes.push(format!(
            "a batch's arguments, and each result, travel in frames of at most {} MiB",
            crate::wire::MAX_FRAME >> 20
        ));
    }
    if let Some(t) = plan.timeout {
        let note = match plan.backend {
            Backend::Process => "an overdue task's worker is killed and replaced",
            Backend::Thread => {
                "an overdue task ends the run with an error, but its thread cannot be \
                 stopped: the task runs on in the background and its result is dropped"
            }
            Backend::Sequential => {
                "a task runs in this thread and cannot be stopped: an overdue task is \
                 reported when it returns"
            }
            Backend::Mpi | Backend::MpiSpawn { .. } => {
                "an overdue task ends the run with an error; MPI cannot stop one rank, so \
                 its rank finishes the task and is used again after"
            }
        };
        notes.push(format!("timeout {t:?} per task: {note}"));
    }
    notes
}

fn seconds(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        format!("{:.1}min", s / 60.0)
    }
}

#[cfg(all(test, feature = "progress"))]
mod tests {
    use super::*;
    use crate::options::{BackendSource, BatchSize};

    #[test]
    fn the_bar_names_the_task_backend_and_workers_once_the_run_starts() {
        let plan = Plan {
            n_jobs: 2,
            n_jobs_asked: -1,
            backend: Backend::Process,
            backend_source: BackendSource::Task,
            batch_size: BatchSize::Auto,
            pre_dispatch: 4,
            timeout: None,
            verbose: 0,
            progress: true,
            max_nbytes: None,
            temp_folder: None,
            initializer: None,
            inner_max_num_threads: None,
            on_error: crate::OnError::Stop,
            retries: 0,
            retry_panics: false,
            max_worker_memory: None,
            speculate: None,
            trace: None,
        };
        let mut reporter = Reporter::new(&plan, Some(10));
        reporter.announce("app::fit", &[41, 42]);
        let active = reporter.active.as_deref().expect("a bar was asked for");
        let bar = active.bar.as_ref().expect("the progress feature is on");
        assert_eq!(bar.message(), "app::fit on 2 worker processes");
        let threads = Plan {
            backend: Backend::Thread,
            ..plan
        };
        assert_eq!(bar_label(&threads, "m::g"), "m::g on 2 threads");
        // n_jobs = -2 on 2 CPUs: one worker, in sequence, and the line says so.
        let one = Plan {
            n_jobs: 1,
            n_jobs_asked: -2,
            backend: Backend::Sequential,
            backend_source: BackendSource::OneJob,
            ..plan
        };
        let line = first_line(&one, "m::g", &[]);
        assert!(
            line.starts_with(
                "[Parallel(n_jobs=-2)]: Using the sequential backend (from n_jobs = 1) with 1 worker, this thread"
            ),
            "{line}"
        );
        assert!(first_line(&plan, "app::fit", &[41, 42]).contains(
            "[Parallel(n_jobs=-1)]: Using the process backend (from the task's attribute) with 2 \
             worker processes (pids 41, 42) for task `app::fit`"
        ));
        // The first job was refused before any worker started.
        let none = first_line(&plan, "app::fit", &[]);
        assert!(
            none.contains("2 worker processes (none started yet)"),
            "{none}"
        );
        assert!(!none.contains("(pids )"), "{none}");
    }
}
