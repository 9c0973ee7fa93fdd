//! Unit tests of the MPI backend's pieces that need no MPI job; the
//! backend itself is tested under `mpirun` by `tests/mpi`.

use super::link::Backoff;
use super::rank::whole_frames;
use crate::wire;
use std::time::Duration;

#[test]
fn a_result_message_counts_the_batches_it_ends() {
    let mut bytes = Vec::new();
    wire::write_value(&mut bytes, 7, &1u32).unwrap();
    wire::write_done(&mut bytes, 7, 1, 10).unwrap();
    wire::write_value(&mut bytes, 8, &2u32).unwrap();
    wire::write_done(&mut bytes, 8, 1, 10).unwrap();
    assert_eq!(super::rank::count_done(&bytes), 2);
    // A torn tail counts only what is whole.
    assert_eq!(super::rank::count_done(&bytes[..bytes.len() - 3]), 1);
}

#[test]
fn only_whole_frames_leave_a_rank() {
    let mut bytes = Vec::new();
    wire::write_value(&mut bytes, 1, &"first".to_string()).unwrap();
    let one = bytes.len();
    wire::write_done(&mut bytes, 1, 1, 0).unwrap();
    assert_eq!(whole_frames(&bytes), bytes.len());
    assert_eq!(whole_frames(&bytes[..bytes.len() - 1]), one);
    assert_eq!(whole_frames(&bytes[..5]), 0);
    assert_eq!(whole_frames(&[]), 0);
}

#[test]
fn a_result_message_stops_at_its_size_but_always_takes_one_frame() {
    let big = vec![7u8; super::rank::MESSAGE_FRAMES];
    let mut bytes = Vec::new();
    wire::write_raw_value(&mut bytes, 1, &big).unwrap();
    let first = bytes.len();
    wire::write_done(&mut bytes, 1, 1, 0).unwrap();
    // The big frame alone is over the size: it goes by itself.
    assert_eq!(whole_frames(&bytes), first);
    assert_eq!(whole_frames(&bytes[first..]), bytes.len() - first);
}

#[test]
fn backoff_polls_at_once_then_sleeps_up_to_its_maximum() {
    use super::link::{backoff_after, SPIN};
    let mut b = Backoff::new(Duration::from_millis(1));
    // Inside the spin window after activity: poll again at once.
    assert!(backoff_after(&mut b, SPIN / 2, None).is_zero());
    let waits: Vec<Duration> = (0..20)
        .map(|_| backoff_after(&mut b, SPIN * 2, None))
        .collect();
    assert_eq!(waits[0], Duration::from_micros(10));
    assert_eq!(*waits.last().unwrap(), Duration::from_millis(1));
    assert!(waits.windows(2).all(|w| w[0] <= w[1]));
    // While an answer is expected, the waits stay under the cap.
    let cap = Some(Duration::from_micros(50));
    assert_eq!(backoff_after(&mut b, SPIN * 2, cap), Duration::from_micros(50));
    b.reset();
    assert!(b.next(None).is_zero());
}

#[test]
fn a_rank_error_names_the_rank() {
    let e = super::session::on_rank(
        crate::Error::Panic {
            task: "t".into(),
            index: 3,
            message: "boom".into(),
            location: None,
        },
        "rank 2 on node7 (pid 9)",
    );
    assert!(
        e.to_string()
            .contains("boom (on MPI rank 2 on node7 (pid 9))"),
        "{e}"
    );
}

#[test]
fn rank_cpus_follow_slurm_when_it_asks_for_fewer() {
    use super::cpus_for;
    assert_eq!(cpus_for(Some("4"), 32), 4);
    assert_eq!(cpus_for(Some(" 8 "), 32), 8);
    // Never more than the affinity and cgroup allow.
    assert_eq!(cpus_for(Some("64"), 32), 32);
    // Unset, zero or garbage: what is available.
    assert_eq!(cpus_for(None, 32), 32);
    assert_eq!(cpus_for(Some("0"), 32), 32);
    assert_eq!(cpus_for(Some("four"), 32), 32);
    let all = std::thread::available_parallelism().unwrap().get();
    assert!((1..=all).contains(&super::rank_cpus()));
}
