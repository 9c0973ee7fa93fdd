//! In-process tests of the primitives' edge cases. A thread that exits
//! holding a robust mutex is, to the kernel, a holder that died: that is
//! how these tests reach the owner-dead paths without killing a process
//! (tests/sync_processes.rs kills real workers).

use super::*;
use std::time::Duration;

/// Runs `f` on a thread that exits when it returns.
fn on_a_thread_that_exits(f: impl FnOnce() + Send) {
    std::thread::scope(|s| {
        s.spawn(f);
    });
}

#[test]
fn a_lock_whose_holder_thread_exited_is_poisoned_and_free() {
    let lock = Lock::new().unwrap();
    on_a_thread_that_exits(|| std::mem::forget(lock.lock().unwrap()));
    let guard = lock.lock_timeout(Duration::from_secs(10));
    assert!(matches!(guard, Err(std::sync::TryLockError::Poisoned(_))));
    drop(guard);
    assert!(lock.is_poisoned());
    lock.clear_poison();
    assert!(lock.try_lock().is_ok());
}

#[test]
fn a_panic_under_a_lock_poisons_it() {
    let lock = Lock::new().unwrap();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _held = lock.lock().unwrap();
        panic!("inside");
    }));
    assert!(caught.is_err());
    assert!(lock.lock().is_err());
}

#[test]
#[should_panic(expected = "already holds this lock")]
fn relocking_a_lock_on_its_thread_panics_instead_of_hanging() {
    let lock = Lock::new().unwrap();
    let _outer = lock.lock().unwrap();
    let _inner = lock.lock();
}

#[test]
fn a_timed_wait_for_a_held_lock_gives_up() {
    let lock = Lock::new().unwrap();
    let _held = lock.lock().unwrap();
    std::thread::scope(|s| {
        let other = s.spawn(|| lock.lock_timeout(Duration::from_millis(20)).is_err());
        assert!(other.join().unwrap());
    });
}

#[test]
fn a_queue_survives_a_holder_that_died_mid_put() {
    let q = Queue::<String>::with_capacity(8, 64).unwrap();
    q.put(&"first".to_string()).unwrap();
    // A producer dies after writing its record, before committing it.
    on_a_thread_that_exits(|| q.die_writing(b"torn"));
    q.put(&"second".to_string()).unwrap();
    assert_eq!(q.len(), 2);
    assert_eq!(q.get().unwrap(), "first");
    assert_eq!(q.get().unwrap(), "second");
    assert_eq!(q.try_get().unwrap(), None);
}

#[test]
fn a_queue_ring_wraps_and_bounds_items_and_bytes() {
    let q = Queue::<Vec<u8>>::with_capacity(3, 40).unwrap();
    for round in 0..50u8 {
        let item = vec![round; (round % 7) as usize];
        assert!(q.try_put(&item).unwrap());
        assert_eq!(q.get().unwrap(), item);
    }
    // Each 8-byte item takes 13 bytes of ring: two fit in 40, not three.
    assert!(q.try_put(&vec![1; 8]).unwrap());
    assert!(q.try_put(&vec![2; 8]).unwrap());
    assert!(!q.try_put(&vec![3; 20]).unwrap(), "no room in the ring");
    assert_eq!(q.get().unwrap(), vec![1; 8]);
    assert_eq!(q.get().unwrap(), vec![2; 8]);
    // Three items is the most, however small.
    for _ in 0..3 {
        assert!(q.try_put(&vec![]).unwrap());
    }
    assert!(!q.try_put(&vec![]).unwrap(), "3 items is the most");
    assert!(
        !q.put_timeout(&vec![0; 100], Duration::from_millis(5))
            .unwrap(),
        "an item larger than the ring waits for room like any other"
    );
    assert!(q
        .put_timeout(&vec![], Duration::from_millis(5))
        .is_ok_and(|put| !put));
}

/// Items of 10 to 5,000 bytes through a 64-byte ring, from two producers
/// to two consumers: each arrives whole, none interleaved with another.
#[test]
fn items_larger_than_the_ring_arrive_whole_between_many_producers_and_consumers() {
    let q = Queue::<Vec<u32>>::with_capacity(4, 64).unwrap();
    let item = |who: u32, n: u32| vec![who * 100_000 + n; 10 + (n as usize * 37) % 1250];
    let got = std::thread::scope(|s| {
        for who in 0..2 {
            let q = &q;
            s.spawn(move || (0..100).for_each(|n| q.put(&item(who, n)).unwrap()));
        }
        let consumers: Vec<_> = (0..2)
            .map(|_| s.spawn(|| (0..100).map(|_| q.get().unwrap()).collect::<Vec<_>>()))
            .collect();
        consumers
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect::<Vec<_>>()
    });
    let mut want: Vec<Vec<u32>> = (0..2)
        .flat_map(|w| (0..100).map(move |n| item(w, n)))
        .collect();
    let mut got = got;
    want.sort();
    got.sort();
    assert_eq!(got, want);
    assert_eq!(q.try_get().unwrap(), None);
}

/// A producer that stops in the middle of a large item (its timeout ran
/// out, or it died) costs only that item: the consumer discards its parts
/// and takes the next item whole.
#[test]
fn a_large_item_abandoned_halfway_is_discarded_and_the_next_arrives() {
    let q = Queue::<Vec<u8>>::with_capacity(8, 256).unwrap();
    // With no consumer, two of its parts fit; the rest never comes.
    assert!(!q
        .put_timeout(&vec![7; 500], Duration::from_millis(20))
        .unwrap());
    // Another producer dies halfway through its item.
    on_a_thread_that_exits(|| q.die_streaming(500));
    std::thread::scope(|s| {
        s.spawn(|| q.put(&vec![9; 300]).unwrap());
        assert_eq!(q.get().unwrap(), vec![9; 300]);
    });
    assert_eq!(q.try_get().unwrap(), None);
}

/// A consumer in the middle of an item whose producer is gone does not
/// wait for the rest for ever: it discards the parts and goes on.
#[test]
fn a_consumer_halfway_through_an_item_whose_producer_died_goes_on() {
    let q = Queue::<Vec<u8>>::with_capacity(8, 256).unwrap();
    on_a_thread_that_exits(|| q.die_streaming(500));
    assert_eq!(q.get_timeout(Duration::from_millis(100)).unwrap(), None);
    q.put(&vec![1; 3]).unwrap();
    assert_eq!(q.get().unwrap(), vec![1; 3]);
}

#[test]
fn a_pipe_carries_16_mib_both_ways() {
    let (here, there) = Pipe::new::<Vec<u8>>().unwrap();
    let big: Vec<u8> = (0..16 << 20).map(|i: u32| (i % 251) as u8).collect();
    std::thread::scope(|s| {
        s.spawn(|| {
            let got = there.recv().unwrap();
            there.send(&got).unwrap();
        });
        here.send(&big).unwrap();
        assert!(here.recv().unwrap() == big, "the echo differs");
    });
}

#[test]
fn a_closed_queue_drains_then_refuses() {
    let q = Queue::<u8>::new(4).unwrap();
    q.put(&1).unwrap();
    q.close();
    assert!(matches!(q.put(&2), Err(crate::Error::Closed("Queue"))));
    assert_eq!(q.get().unwrap(), 1);
    assert!(matches!(q.get(), Err(crate::Error::Closed(_))));
}

#[test]
fn a_queue_wakes_a_waiting_consumer_across_threads() {
    let q = Queue::<u32>::new(1).unwrap();
    std::thread::scope(|s| {
        let consumer = s.spawn(|| (0..1000).map(|_| q.get().unwrap()).sum::<u32>());
        for i in 0..1000 {
            q.put(&i).unwrap();
        }
        assert_eq!(consumer.join().unwrap(), (0..1000).sum());
    });
}

#[test]
fn a_barrier_that_waits_too_long_breaks_for_everyone_until_reset() {
    let b = Barrier::new(2).unwrap();
    let late = b.wait_timeout(Duration::from_millis(10)).unwrap_err();
    assert!(late.to_string().contains("broken"), "{late}");
    assert!(b.is_broken());
    assert!(b.wait().is_err(), "a later wait fails at once");
    b.reset();
    std::thread::scope(|s| {
        let other = s.spawn(|| b.wait().unwrap());
        let here = b.wait().unwrap();
        assert!(here ^ other.join().unwrap(), "one leader");
    });
}

#[test]
fn a_barrier_is_reusable_across_generations() {
    let b = Barrier::new(3).unwrap();
    let rounds = 200;
    std::thread::scope(|s| {
        let parties: Vec<_> = (0..3)
            .map(|_| s.spawn(|| (0..rounds).filter(|_| b.wait().unwrap()).count()))
            .collect();
        let leaders: usize = parties.into_iter().map(|p| p.join().unwrap()).sum();
        assert_eq!(leaders, rounds);
    });
}

#[test]
fn semaphores_wait_and_bounded_ones_refuse_extra_releases() {
    let s = Semaphore::new(0).unwrap();
    assert!(s.acquire_timeout(Duration::from_millis(5)).is_none());
    std::thread::scope(|scope| {
        let waiter = scope.spawn(|| s.acquire().forget());
        s.release();
        waiter.join().unwrap();
    });
    assert_eq!(s.available(), 0);
    let b = BoundedSemaphore::new(2).unwrap();
    let permit = b.acquire();
    assert_eq!(b.available(), 1);
    drop(permit);
    assert!(b.release().is_err());
    assert_eq!(b.available(), 2);
}

#[test]
fn events_wake_every_waiter() {
    let e = Event::new().unwrap();
    std::thread::scope(|s| {
        let waiters: Vec<_> = (0..4)
            .map(|_| s.spawn(|| e.wait_timeout(Duration::from_secs(30))))
            .collect();
        e.set();
        assert!(waiters.into_iter().all(|w| w.join().unwrap()));
    });
}

#[test]
fn a_condition_waits_with_a_timeout_and_reports_it() {
    let c = Condition::new().unwrap();
    let held = c.lock().unwrap();
    let (held, timed_out) = c.wait_timeout(held, Duration::from_millis(5)).unwrap();
    assert!(timed_out);
    drop(held);
    assert!(c.lock().is_ok(), "the lock was given back");
}

#[test]
fn arrays_and_values_keep_their_numbers() {
    let a = Array::from_slice(&[1.5f64, 2.5]).unwrap();
    a.set(1, 4.0).unwrap();
    assert!(a.set(2, 0.0).is_err());
    assert_eq!(a.to_vec(), [1.5, 4.0]);
    assert_eq!(a.get(2), None);
    let v = Value::new(i128::MIN).unwrap();
    assert_eq!(v.clone().get(), i128::MIN, "clones share the number");
    *v.lock().unwrap() += 1;
    assert_eq!(v.get(), i128::MIN + 1);
}

#[test]
fn lists_and_maps_fill_up_with_a_clear_error_and_survive_a_dead_writer() {
    use crate::shared::{List, Map};
    let list = List::<u64>::with_capacity(64).unwrap();
    let full = (0..100u64)
        .find_map(|i| list.push(&i).err())
        .expect("64 bytes fill up");
    assert!(full.to_string().contains("List::with_capacity"), "{full}");
    let pushed = list.len() as u64;
    assert!(pushed > 4);
    list.clear();
    list.push(&7).unwrap();
    on_a_thread_that_exits(|| list.die_appending(b"torn"));
    list.push(&8).unwrap();
    assert_eq!(list.to_vec().unwrap(), [7, 8]);
    list.clear();
    assert!(list.is_empty());

    let map = Map::<String, u32>::new().unwrap();
    map.insert(&"a".into(), &1).unwrap();
    map.insert(&"b".into(), &2).unwrap();
    map.insert(&"a".into(), &3).unwrap();
    map.remove(&"b".into()).unwrap();
    assert_eq!(map.get(&"a".into()).unwrap(), Some(3));
    assert_eq!(map.get(&"b".into()).unwrap(), None);
    assert_eq!(map.to_vec().unwrap(), [("a".to_string(), 3)]);
    assert_eq!(map.len().unwrap(), 1);
}

#[test]
fn a_handle_encoded_anywhere_but_to_a_worker_is_refused() {
    let q = Queue::<u8>::new(1).unwrap();
    let err = crate::wire::codec::encode(&q).unwrap_err().to_string();
    assert!(
        err.contains("a Queue can only be sent to a worker process"),
        "{err}"
    );
}

/// Runs `f` on its own thread; panics if it has not returned within 60 s
/// (a lost wakeup shows as a hang, which this turns into a failure).
fn within_a_minute(f: impl FnOnce() + Send + 'static) {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        f();
        let _ = done.send(());
    });
    finished
        .recv_timeout(Duration::from_secs(60))
        .expect("still waiting after a minute: a wakeup was lost");
}

#[test]
fn a_one_item_queue_hands_over_200k_items_between_four_threads() {
    within_a_minute(|| {
        let q = Queue::<u64>::new(1).unwrap();
        let total: u64 = std::thread::scope(|s| {
            for p in 0..2u64 {
                let q = &q;
                s.spawn(move || (0..100_000).for_each(|i| q.put(&(2 * i + p)).unwrap()));
            }
            let takers: Vec<_> = (0..2)
                .map(|_| s.spawn(|| (0..100_000).map(|_| q.get().unwrap()).sum::<u64>()))
                .collect();
            takers.into_iter().map(|t| t.join().unwrap()).sum()
        });
        assert_eq!(total, (0..200_000u64).sum());
    });
}

#[test]
fn condition_ping_pong_loses_no_wakeup() {
    within_a_minute(|| {
        let cond = Condition::new().unwrap();
        let turn = Value::new(0u64).unwrap();
        std::thread::scope(|s| {
            for me in 0..2u64 {
                let (cond, turn) = (&cond, &turn);
                s.spawn(move || {
                    for round in 0..50_000u64 {
                        let held = cond.lock().unwrap();
                        let held = cond
                            .wait_while(held, || turn.get() != 2 * round + me)
                            .unwrap();
                        turn.set(2 * round + me + 1);
                        cond.notify_all();
                        drop(held);
                    }
                });
            }
        });
        assert_eq!(turn.get(), 100_000);
    });
}
