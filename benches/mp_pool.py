"""CPython's figures for `cargo bench --bench pool`, on this machine.

`python3 benches/mp_pool.py`

1. Pool(2).map of 100,000 tiny tasks, default chunksize: per task.
2. Pool(2).apply_async(...).get() one at a time: the round trip.
3. multiprocessing.Queue, 1 producer (this process) -> 1 consumer
   process, 64-byte items (bytes objects), best of 3.
4. multiprocessing.Lock acquire+release, uncontended, best of 3.

`python3 benches/mp_pool.py --map N` prints only Pool(2).map of N tiny
tasks, best of 3, in us per task (for `cargo bench --bench overheads`).
"""
import multiprocessing as mp
import sys
import time

TINY = 100_000
ROUND_TRIPS = 2_000
ITEMS = 200_000
LOCKS = 1_000_000


def consume(q, n, out):
    total = 0
    for _ in range(n):
        total += q.get()[0]
    out.put(total)


def square(x):
    return x * x


def timed_map(pool, n):
    """One Pool.map of n squares, checked; its time in seconds."""
    t = time.perf_counter()
    out = pool.map(square, range(n))
    d = time.perf_counter() - t
    assert out[-1] == (n - 1) ** 2
    return d


def pool_costs():
    with mp.Pool(2) as pool:
        pool.map(square, range(100))  # workers up
        best_map = best_trip = None
        for _ in range(3):
            d = timed_map(pool, TINY)
            best_map = d if best_map is None else min(best_map, d)
            t = time.perf_counter()
            for x in range(ROUND_TRIPS):
                assert pool.apply_async(square, (x,)).get() == x * x
            d = time.perf_counter() - t
            best_trip = d if best_trip is None else min(best_trip, d)
    return best_map / TINY * 1e6, best_trip / ROUND_TRIPS * 1e6


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


def pool_map(n):
    with mp.Pool(2) as pool:
        pool.map(square, range(100))  # workers up
        return min(timed_map(pool, n) for _ in range(3)) / n * 1e6


if __name__ == "__main__":
    if sys.argv[1:2] == ["--map"]:
        print(f"{pool_map(int(sys.argv[2])):.4f}")
        sys.exit(0)
    per_task, trip = pool_costs()
    print(f"Pool(2).map, 100,000 tiny tasks, default chunksize: {per_task:.3f} us/task")
    print(f"Pool(2).apply_async round trip, one at a time: {trip:.1f} us")
    print(f"multiprocessing.Queue, 1 -> 1 process, 64-byte items: {queue_rate() / 1e6:.3f}M items/s")
    print(f"multiprocessing.Lock acquire+release, uncontended: {lock_cost():.1f} ns")
