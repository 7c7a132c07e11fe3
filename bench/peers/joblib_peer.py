#!/usr/bin/python3
"""Peer family: joblib (Debian python3-joblib, default loky backend).

impl "joblib": Parallel(n_jobs=k)(delayed(f)(x) for x in xs) with joblib's
automatic batching (batch_size="auto"). The loky worker pool is reusable and
is warmed up before timing.

MUST run with Debian's interpreter (python3-joblib is installed there):
  /usr/bin/python3 bench/peers/joblib_peer.py [--workloads P1,P5] [--quick] [--reps N]
"""

import os
import sys
import time

sys.dont_write_bytecode = True  # keep bench/peers free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

WORKLOADS = ["P1", "P5"]


def inc(x):
    return x + 1


def sleep_task(s):
    time.sleep(s)
    return s


def sizes(quick):
    if quick:
        return dict(p1=[200], p5_n=8)
    return dict(p1=[10_000, 100_000], p5_n=200)


def warm(Parallel, delayed, k):
    Parallel(n_jobs=k)(delayed(inc)(i) for i in range(50 * k))


def p1(args, sz, ver):
    from joblib import Parallel, delayed

    k = 2
    warm(Parallel, delayed, k)
    for rep in range(args.reps):
        for n in sz["p1"]:
            t0 = time.perf_counter()
            out = Parallel(n_jobs=k)(delayed(inc)(x) for x in range(n))
            dt = time.perf_counter() - t0
            assert len(out) == n and out[-1] == n
            params = {"n": n, "n_jobs": k, "backend": "loky", "batch_size": "auto"}
            C.emit("P1", "joblib", params, "tasks_per_s", n / dt, "tasks/s", rep, ver)


def p5(args, sz, ver):
    from joblib import Parallel, delayed

    k = 4
    n, s = sz["p5_n"], 0.05
    ideal = n * s / k
    warm(Parallel, delayed, k)
    for rep in range(args.reps):
        t0 = time.perf_counter()
        out = Parallel(n_jobs=k)(delayed(sleep_task)(s) for _ in range(n))
        dt = time.perf_counter() - t0
        assert len(out) == n
        params = {"n": n, "sleep_ms": 50, "concurrency": k, "ideal_s": ideal,
                  "config": "Parallel(n_jobs=4) loky, 4 worker processes, batch_size=auto"}
        C.emit("P5", "joblib", params, "wall_s", dt, "s", rep, ver)
        C.emit("P5", "joblib", params, "pct_over_ideal", (dt / ideal - 1) * 100, "%", rep, ver)


def main():
    args = C.parse_args(__doc__.splitlines()[0], WORKLOADS)
    C.setup_stdout()
    import joblib

    ver = "joblib %s" % joblib.__version__
    sz = sizes(args.quick)
    fns = {"P1": p1, "P5": p5}
    for w in args.workloads:
        t0 = time.perf_counter()
        fns[w](args, sz, ver)
        C.log("joblib %s done in %.1fs" % (w, time.perf_counter() - t0))


if __name__ == "__main__":
    main()
