#!/usr/bin/python3
"""Peer family: Dask distributed (Debian python3-distributed).

impl "dask". Cluster: LocalCluster(processes=True, threads_per_worker=1,
host=127.0.0.1, dashboard off), n_workers=2 for P1/P2/P4 and n_workers=4 for
P5. Clusters are started and warmed up before any timing (only P3 includes
start-up). All submissions use pure=False so results are never served from
Dask's key cache.

MUST run with Debian's interpreter (python3-distributed is installed there):
  /usr/bin/python3 bench/peers/dask_peer.py [--workloads P1,...] [--quick] [--reps N]
"""

import logging
import os
import sys
import time

# Quiet Dask before it is imported (also inherited by worker processes).
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
os.environ.setdefault("DASK_DISTRIBUTED__WORKER__DAEMON", "True")

sys.dont_write_bytecode = True  # keep bench/peers free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

WORKLOADS = ["P1", "P2", "P3", "P4", "P5"]


def inc(x):
    return x + 1


def echo(b):
    return b


def sleep_task(s):
    time.sleep(s)
    return s


P1_NOTE = ("n=100000 skipped by default: Dask sustains ~450 tasks/s here (2 cores), "
           "i.e. ~230 s per rep; pass --full-p1 to include it")


def sizes(args):
    if args.quick:
        return dict(p1=[200], p2=50, p3_runs=1, p4_n=4, p4_bytes=1_000_000, p5_n=8)
    p1 = [10_000, 100_000] if args.full_p1 else [10_000]
    return dict(p1=p1, p2=1000, p3_runs=3, p4_n=100, p4_bytes=10_000_000, p5_n=200)


P2_NOTE = ("Dask's Client batches client->scheduler messages with a hard-coded 10ms "
           "BatchedSend interval (distributed/client.py), which dominates this latency")


def extra_args(p):
    p.add_argument("--full-p1", action="store_true",
                   help="also run P1 with n=100000 (~4 min per rep on 2 cores)")


def version():
    import dask
    import distributed

    return "dask %s distributed %s" % (dask.__version__, distributed.__version__)


def cluster_kwargs(n_workers):
    # Everything (scheduler, nannies, workers and their HTTP endpoints) binds to
    # loopback on ephemeral ports; no dashboard.
    return dict(
        n_workers=n_workers,
        processes=True,
        threads_per_worker=1,
        host="127.0.0.1",
        dashboard_address=None,
        scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
        worker_dashboard_address="127.0.0.1:0",
        silence_logs=logging.ERROR,
    )


def make_cluster(n_workers):
    from distributed import Client, LocalCluster

    cluster = LocalCluster(**cluster_kwargs(n_workers))
    client = Client(cluster)
    client.wait_for_workers(n_workers)
    return cluster, client


def warm(client, n_workers):
    futs = client.map(inc, range(50 * n_workers), pure=False)
    client.gather(futs)
    del futs
    for _ in range(20):
        client.submit(inc, 1, pure=False).result()


def cluster_desc(n_workers):
    return "LocalCluster(n_workers=%d, processes=True, threads_per_worker=1)" % n_workers


class Clusters:
    def __init__(self):
        self._c = {}

    def get(self, n_workers):
        if n_workers not in self._c:
            t0 = time.perf_counter()
            cluster, client = make_cluster(n_workers)
            warm(client, n_workers)
            C.log("dask cluster(%d) up+warm in %.1fs (excluded from timings)" % (n_workers, time.perf_counter() - t0))
            self._c[n_workers] = (cluster, client)
        return self._c[n_workers][1]

    def close(self):
        for cluster, client in self._c.values():
            try:
                client.close()
                cluster.close()
            except Exception as e:  # shutdown noise must not fail the run
                C.log("dask close: %r" % (e,))
        self._c.clear()


def p1(args, sz, cl, ver):
    k = 2
    client = cl.get(k)
    for rep in range(args.reps):
        for n in sz["p1"]:
            xs = list(range(n))
            t0 = time.perf_counter()
            futs = client.map(inc, xs, pure=False)
            out = client.gather(futs)
            dt = time.perf_counter() - t0
            assert len(out) == n and out[-1] == n
            del futs, out
            params = {"n": n, "workers": k, "api": "client.map+gather", "cluster": cluster_desc(k)}
            note = P1_NOTE if not args.quick and not args.full_p1 else None
            C.emit("P1", "dask", params, "tasks_per_s", n / dt, "tasks/s", rep, ver, note)


def p2(args, sz, cl, ver):
    k = 2
    client = cl.get(k)
    calls = sz["p2"]
    for _ in range(50):
        client.submit(inc, 1, pure=False).result()
    for rep in range(args.reps):
        lat = []
        for _ in range(calls):
            t0 = time.perf_counter()
            client.submit(inc, 1, pure=False).result()
            lat.append(time.perf_counter() - t0)
        params = {"calls": calls, "workers": k, "api": "submit().result()", "cluster": cluster_desc(k)}
        C.emit_latency("P2", "dask", params, lat, rep, ver, P2_NOTE)


def p3(args, sz, cl, ver):
    runs = sz["p3_runs"]
    me = os.path.abspath(__file__)
    for rep in range(args.reps):
        first, total = C.cold_start([sys.executable, me, "--cold-child", "dask"], runs)
        params = {"workers": 2, "runs": runs, "stat": "median_of_runs", "python": sys.executable,
                  "cluster": cluster_desc(2),
                  "measures": "spawn interpreter -> import distributed -> LocalCluster+Client -> 1 result"}
        C.emit("P3", "dask", params, "cold_start_ms", first, "ms", rep, ver)
        C.emit("P3", "dask", params, "cold_exit_ms", total, "ms", rep, ver)


def cold_child():
    from distributed import Client, LocalCluster

    with LocalCluster(**cluster_kwargs(2)) as cluster:
        with Client(cluster) as client:
            assert client.submit(inc, 1, pure=False).result() == 2
            C.child_ready()


def p4(args, sz, cl, ver):
    k = 2
    client = cl.get(k)
    n, size = sz["p4_n"], sz["p4_bytes"]
    base = os.urandom(size)
    data = [i.to_bytes(4, "little") + base[4:] for i in range(n)]
    for rep in range(args.reps):
        t0 = time.perf_counter()
        inputs = client.scatter(data, hash=False)
        futs = client.map(echo, inputs, pure=False)
        out = client.gather(futs)
        dt = time.perf_counter() - t0
        assert len(out) == n and len(out[-1]) == size
        del inputs, futs, out
        params = {"n": n, "bytes_per_task": size, "workers": k, "api": "scatter+map+gather",
                  "cluster": cluster_desc(k), "formula": "n*bytes_per_task*2/1e6/wall_s"}
        C.emit("P4", "dask", params, "mb_per_s", n * size * 2 / 1e6 / dt, "MB/s", rep, ver)
        C.emit("P4", "dask", params, "wall_s", dt, "s", rep, ver)


def p5(args, sz, cl, ver):
    k = 4
    client = cl.get(k)
    n, s = sz["p5_n"], 0.05
    ideal = n * s / k
    for rep in range(args.reps):
        t0 = time.perf_counter()
        futs = client.map(sleep_task, [s] * n, pure=False)
        out = client.gather(futs)
        dt = time.perf_counter() - t0
        assert len(out) == n
        del futs, out
        params = {"n": n, "sleep_ms": 50, "concurrency": k, "ideal_s": ideal,
                  "config": cluster_desc(k), "api": "client.map+gather"}
        C.emit("P5", "dask", params, "wall_s", dt, "s", rep, ver)
        C.emit("P5", "dask", params, "pct_over_ideal", (dt / ideal - 1) * 100, "%", rep, ver)


def main():
    args = C.parse_args(__doc__.splitlines()[0], WORKLOADS, extra=extra_args)
    if args.cold_child:
        cold_child()
        return
    C.setup_stdout()
    logging.getLogger("distributed").setLevel(logging.ERROR)
    ver = version()
    sz = sizes(args)
    fns = {"P1": p1, "P2": p2, "P3": p3, "P4": p4, "P5": p5}
    cl = Clusters()
    try:
        # P3 first when requested: measure cold start before our own clusters load the machine.
        order = sorted(args.workloads, key=lambda w: (w != "P3", w))
        for w in order:
            t0 = time.perf_counter()
            fns[w](args, sz, cl, ver)
            C.log("dask %s done in %.1fs" % (w, time.perf_counter() - t0))
    finally:
        cl.close()


if __name__ == "__main__":
    main()
