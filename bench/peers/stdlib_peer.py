#!/usr/bin/python3
"""Peer family: Python standard library process pools.

impls:
  mp_pool_chunk1  multiprocessing.Pool(k).map(f, xs, chunksize=1)      (P1, P4)
  mp_pool         multiprocessing.Pool(k) with default chunksize / apply (P1-P5)
  cf_ppe          concurrent.futures.ProcessPoolExecutor(k)            (P1-P5)

Run with Debian's interpreter for consistency with the other peers:
  /usr/bin/python3 bench/peers/stdlib_peer.py [--workloads P1,...] [--quick] [--reps N]
Start method is the Linux default (fork). Pools are created and warmed before
timing (P3 is the only workload that includes pool start-up).
"""

import os
import sys
import time

sys.dont_write_bytecode = True  # keep bench/peers free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

WORKLOADS = ["P1", "P2", "P3", "P4", "P5"]
VERSION = "python %s" % sys.version.split()[0]


def inc(x):
    return x + 1


def echo(b):
    return b


def sleep_task(s):
    time.sleep(s)
    return s


def sizes(quick):
    if quick:
        return dict(p1=[200], p2=50, p3_runs=1, p4_n=4, p4_bytes=1_000_000, p5_n=8)
    return dict(p1=[10_000, 100_000], p2=1000, p3_runs=3, p4_n=100, p4_bytes=10_000_000, p5_n=200)


def warm(pool_map, k):
    pool_map(inc, range(20 * k))


def p1(args, sz):
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    k = 2
    with mp.Pool(k) as pool, ProcessPoolExecutor(k) as ex:
        warm(pool.map, k)
        warm(lambda f, xs: list(ex.map(f, xs)), k)
        for rep in range(args.reps):
            for n in sz["p1"]:
                xs = list(range(n))
                cases = [
                    ("mp_pool_chunk1", {"n": n, "workers": k, "chunksize": 1},
                     lambda: pool.map(inc, xs, chunksize=1)),
                    ("mp_pool", {"n": n, "workers": k, "chunksize": "default"},
                     lambda: pool.map(inc, xs)),
                    ("cf_ppe", {"n": n, "workers": k, "chunksize": 1},
                     lambda: list(ex.map(inc, xs))),
                ]
                for impl, params, fn in cases:
                    t0 = time.perf_counter()
                    out = fn()
                    dt = time.perf_counter() - t0
                    assert len(out) == n and out[-1] == n
                    C.emit("P1", impl, params, "tasks_per_s", n / dt, "tasks/s", rep, VERSION)


def p2(args, sz):
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    k = 2
    calls = sz["p2"]
    with mp.Pool(k) as pool, ProcessPoolExecutor(k) as ex:
        warm(pool.map, k)
        warm(lambda f, xs: list(ex.map(f, xs)), k)
        for _ in range(50):
            pool.apply(inc, (1,))
            ex.submit(inc, 1).result()
        for rep in range(args.reps):
            lat = []
            for _ in range(calls):
                t0 = time.perf_counter()
                pool.apply(inc, (1,))
                lat.append(time.perf_counter() - t0)
            C.emit_latency("P2", "mp_pool", {"calls": calls, "workers": k, "api": "apply"}, lat, rep, VERSION)
            lat = []
            for _ in range(calls):
                t0 = time.perf_counter()
                ex.submit(inc, 1).result()
                lat.append(time.perf_counter() - t0)
            C.emit_latency("P2", "cf_ppe", {"calls": calls, "workers": k, "api": "submit().result()"}, lat, rep, VERSION)


def p3(args, sz):
    runs = sz["p3_runs"]
    me = os.path.abspath(__file__)
    for rep in range(args.reps):
        for impl in ("mp_pool", "cf_ppe"):
            first, total = C.cold_start([sys.executable, me, "--cold-child", impl], runs)
            params = {"workers": 2, "runs": runs, "stat": "median_of_runs",
                      "python": sys.executable, "measures": "spawn interpreter -> import -> create pool -> 1 result"}
            C.emit("P3", impl, params, "cold_start_ms", first, "ms", rep, VERSION)
            C.emit("P3", impl, params, "cold_exit_ms", total, "ms", rep, VERSION)


def cold_child(impl):
    # Fresh interpreter: import the pool library, create it, get one result.
    if impl == "mp_pool":
        import multiprocessing as mp
        with mp.Pool(2) as pool:
            assert pool.apply(inc, (1,)) == 2
            C.child_ready()
    elif impl == "cf_ppe":
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(2) as ex:
            assert ex.submit(inc, 1).result() == 2
            C.child_ready()
    else:
        raise SystemExit("unknown cold child %r" % impl)


def payloads(n, size):
    base = os.urandom(size)
    # distinct objects with distinct contents (first 4 bytes differ)
    return [i.to_bytes(4, "little") + base[4:] for i in range(n)]


def p4(args, sz):
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    k = 2
    n, size = sz["p4_n"], sz["p4_bytes"]
    data = payloads(n, size)
    with mp.Pool(k) as pool, ProcessPoolExecutor(k) as ex:
        warm(pool.map, k)
        warm(lambda f, xs: list(ex.map(f, xs)), k)
        for rep in range(args.reps):
            cases = [
                ("cf_ppe", 1, lambda: list(ex.map(echo, data))),
                ("mp_pool", "default", lambda: pool.map(echo, data)),
                ("mp_pool_chunk1", 1, lambda: pool.map(echo, data, chunksize=1)),
            ]
            for impl, cs, fn in cases:
                t0 = time.perf_counter()
                out = fn()
                dt = time.perf_counter() - t0
                assert len(out) == n and len(out[-1]) == size
                del out
                params = {"n": n, "bytes_per_task": size, "workers": k, "chunksize": cs,
                          "formula": "n*bytes_per_task*2/1e6/wall_s"}
                C.emit("P4", impl, params, "mb_per_s", n * size * 2 / 1e6 / dt, "MB/s", rep, VERSION)
                C.emit("P4", impl, params, "wall_s", dt, "s", rep, VERSION)


def p5(args, sz):
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    k = 4
    n, s = sz["p5_n"], 0.05
    ideal = n * s / k
    with mp.Pool(k) as pool, ProcessPoolExecutor(k) as ex:
        warm(pool.map, k)
        warm(lambda f, xs: list(ex.map(f, xs)), k)
        for rep in range(args.reps):
            cases = [
                ("cf_ppe", {"chunksize": 1}, lambda: list(ex.map(sleep_task, [s] * n))),
                ("mp_pool", {"chunksize": "default"}, lambda: pool.map(sleep_task, [s] * n)),
            ]
            for impl, extra, fn in cases:
                t0 = time.perf_counter()
                out = fn()
                dt = time.perf_counter() - t0
                assert len(out) == n
                params = {"n": n, "sleep_ms": 50, "concurrency": k, "ideal_s": ideal,
                          "config": "%d worker processes" % k}
                params.update(extra)
                C.emit("P5", impl, params, "wall_s", dt, "s", rep, VERSION)
                C.emit("P5", impl, params, "pct_over_ideal", (dt / ideal - 1) * 100, "%", rep, VERSION)


def main():
    args = C.parse_args(__doc__.splitlines()[0], WORKLOADS)
    if args.cold_child:
        cold_child(args.cold_child)
        return
    C.setup_stdout()
    sz = sizes(args.quick)
    fns = {"P1": p1, "P2": p2, "P3": p3, "P4": p4, "P5": p5}
    for w in args.workloads:
        t0 = time.perf_counter()
        fns[w](args, sz)
        C.log("stdlib %s done in %.1fs" % (w, time.perf_counter() - t0))


if __name__ == "__main__":
    main()
