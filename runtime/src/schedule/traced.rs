//! The scheduler's part of a traced run (`trace = "run.json"`): it starts
//! the trace and hands it to the session, records each finished batch's
//! job times that its backend measured in this process (threads, the
//! caller's thread), the jobs in flight and this process's memory, and
//! writes the files when the run ends. Worker processes' and MPI ranks'
//! jobs are recorded by their sessions, which see their answers.

use crate::backend::{Finished, Session};
use crate::options::Plan;
use crate::task::Work;
use crate::trace::{Trace, Track};
use std::sync::Arc;

/// The trace of a run under `plan`, handed to its session; `None` when
/// tracing is off.
pub(super) fn start<W: Work>(plan: &Plan, session: &mut dyn Session<W>) -> Option<Arc<Trace>> {
    let file = plan.trace?;
    let trace = Trace::start(&file.path(), plan.verbose, plan.n_jobs);
    session.set_trace(&trace);
    Some(trace)
}

/// Records a finished batch, with `in_flight` jobs left running.
pub(super) fn finished<R>(trace: &Trace, finished: &mut Finished<R>, in_flight: usize) {
    if let Some(times) = finished.times.take() {
        trace.jobs(times);
    }
    in_flight_now(trace, in_flight);
    if trace.sample_due() {
        if let Some(rss) = crate::trace::own_resident() {
            trace.counter(Track::Scheduler, "rss", rss);
        }
    }
}

/// Records the jobs in flight.
pub(super) fn in_flight_now(trace: &Trace, jobs: usize) {
    trace.counter(Track::Scheduler, "jobs in flight", jobs as u64);
}
