"""CPython's figures for `cargo bench --bench pool`, on this machine.

python3 benches/mp_queue.py

1. multiprocessing.Queue, 1 producer (this process) -> 1 consumer
   process, 64-byte items (bytes objects), best of 3.
2. multiprocessing.Lock acquire+release, uncontended, best of 3.
"""
import multiprocessing as mp
import time

ITEMS = 200_000
LOCKS = 1_000_000


def consume(q, n, out):
    total = 0
    for _ in range(n):
        total += q.get()[0]
    out.put(total)


def queue_rate():
    best = None
    for _ in range(3):
        q, out = mp.Queue(4096), mp.Queue()
        p = mp.Process(target=consume, args=(q, ITEMS, out))
        p.start()
        item = bytes([1]) * 64
        t = time.perf_counter()
        for _ in range(ITEMS):
            q.put(item)
        assert out.get() == ITEMS
        d = time.perf_counter() - t
        p.join()
        best = d if best is None else min(best, d)
    return ITEMS / best


def lock_cost():
    lock = mp.Lock()
    best = None
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(LOCKS):
            lock.acquire()
            lock.release()
        d = time.perf_counter() - t
        best = d if best is None else min(best, d)
    return best / LOCKS * 1e9


if __name__ == "__main__":
    print(f"multiprocessing.Queue, 1 -> 1 process, 64-byte items: {queue_rate() / 1e6:.3f}M items/s")
    print(f"multiprocessing.Lock acquire+release, uncontended: {lock_cost():.1f} ns")
