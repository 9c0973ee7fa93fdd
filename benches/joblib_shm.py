"""joblib's figures for `cargo bench --bench shm`, on this machine.

`python3 benches/joblib_shm.py` (needs joblib and numpy).

joblib's slice-means example: an 80 MB float64 array and 95 tasks, each
the mean of one slice and a 10 ms sleep, on 2 loky workers, with joblib's
default memmapping (max_nbytes = "1M"), then with max_nbytes = None
(pickled to every task). It prints the best of 3 runs and the peak
resident memory of the process tree over the empty pool's.
"""
import os
import threading
import time

import numpy as np
from joblib import Parallel, delayed

TASKS = 95


def slice_mean(data, k):
    time.sleep(0.010)
    chunk = len(data) // TASKS
    return float(data[k * chunk:(k + 1) * chunk].mean())


def tree_rss():
    total, stack = 0, [str(os.getpid())]
    while stack:
        pid = stack.pop()
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    stack.extend(f.read().split())
        except OSError:
            pass
    return total


def peak_while(fn):
    peak, stop = [0], [False]

    def sample():
        while not stop[0]:
            peak[0] = max(peak[0], tree_rss())
            time.sleep(0.002)

    t = threading.Thread(target=sample)
    t.start()
    out = fn()
    stop[0] = True
    t.join()
    return out, peak[0]


def best(runs, fn):
    fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    data = (np.arange(10_000_000) % 1000).astype(np.float64)
    with Parallel(n_jobs=2) as parallel:
        parallel(delayed(slice_mean)(data[:TASKS * 8], 0) for _ in range(2))
        empty = tree_rss()
        _, peak = peak_while(lambda: parallel(delayed(slice_mean)(data, k) for k in range(TASKS)))
        shm = best(3, lambda: parallel(delayed(slice_mean)(data, k) for k in range(TASKS)))
    with Parallel(n_jobs=2, max_nbytes=None) as parallel:
        copy = best(1, lambda: parallel(delayed(slice_mean)(data, k) for k in range(TASKS)))
    print(f"joblib slice means, memmapping: {shm:.3f} s")
    print(f"joblib slice means, max_nbytes=None: {copy:.3f} s")
    print(f"joblib peak tree RSS over the empty pool: {(peak - empty) / 1e6:.0f} MB "
          f"({(peak - empty) / data.nbytes:.2f}x the array)")


if __name__ == "__main__":
    main()
