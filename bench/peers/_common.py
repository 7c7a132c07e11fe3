"""Shared helpers for the peer benchmark scripts (stdlib only, cheap to import).

Output contract: stdout carries ONLY JSON lines (one object per line, see
bench/README.md). To guarantee that, `setup_stdout()` moves the real stdout to
a private fd and points fd 1 at stderr, so anything else that prints (library
banners, worker processes inheriting fd 1, tracebacks) lands on stderr.
"""

import argparse
import json
import math
import os
import sys
import time

SCHEMA = 1
KNOWN_WORKLOADS = ["P%d" % i for i in range(1, 11)]
REQUIRED = {"schema": int, "workload": str, "impl": str, "params": dict, "metric": str,
            "value": (int, float), "unit": str, "rep": int}
_out = None


def setup_stdout():
    """Reserve the real stdout for JSON lines; send everything else to stderr."""
    global _out
    if _out is not None:
        return
    sys.stdout.flush()
    fd = os.dup(1)
    os.dup2(2, 1)
    _out = os.fdopen(fd, "w", buffering=1)
    sys.stdout = sys.stderr  # stray print() goes to stderr too


def emit(workload, impl, params, metric, value, unit, rep, version=None, note=None):
    rec = {
        "schema": SCHEMA,
        "workload": workload,
        "impl": impl,
        "params": params,
        "metric": metric,
        "value": round(float(value), 6),
        "unit": unit,
        "rep": rep,
    }
    if version:
        rec["version"] = version
    if note:
        rec["note"] = note
    out = _out if _out is not None else sys.stdout
    out.write(json.dumps(rec, sort_keys=False) + "\n")
    out.flush()


def log(*a):
    print("[peer]", *a, file=sys.stderr, flush=True)


def parse_args(description, all_workloads, argv=None, extra=None):
    p = argparse.ArgumentParser(description=description)
    if extra is not None:
        extra(p)
    p.add_argument(
        "--workloads",
        default=",".join(all_workloads),
        help="comma-separated subset of %s (default: all)" % ",".join(all_workloads),
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes for a CI smoke run")
    p.add_argument("--reps", type=int, default=1, help="repetitions; each is its own line with rep=i")
    p.add_argument("--cold-child", default=None, help=argparse.SUPPRESS)  # internal (P3)
    a = p.parse_args(argv)
    if a.cold_child is None:
        wl = [w.strip().upper() for w in a.workloads.split(",") if w.strip()]
        bad = [w for w in wl if w not in KNOWN_WORKLOADS]
        if bad:
            p.error("unknown workload(s) %s; known: %s" % (",".join(bad), ",".join(KNOWN_WORKLOADS)))
        skipped = [w for w in wl if w not in all_workloads]
        if skipped:
            log("%s: no peer for %s here, skipping" % (os.path.basename(sys.argv[0]), ",".join(skipped)))
        if a.reps < 1:
            p.error("--reps must be >= 1")
        a.workloads = [w for w in wl if w in all_workloads]
    return a


def percentile(sorted_vals, p):
    """Nearest-rank percentile (p in 0..100) of an ascending list."""
    if not sorted_vals:
        return float("nan")
    k = max(1, math.ceil(p / 100.0 * len(sorted_vals)))
    return sorted_vals[k - 1]


def median(vals):
    s = sorted(vals)
    n = len(s)
    if n == 0:
        return float("nan")
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2.0


def emit_latency(workload, impl, params, samples_s, rep, version=None, note=None):
    us = sorted(x * 1e6 for x in samples_s)
    emit(workload, impl, params, "p50_us", percentile(us, 50), "us", rep, version, note)
    emit(workload, impl, params, "p99_us", percentile(us, 99), "us", rep, version, note)
    emit(workload, impl, params, "mean_us", sum(us) / len(us), "us", rep, version, note)


def cold_start(cmd, runs):
    """Run `cmd` (a fresh interpreter) `runs` times.

    The child prints the line READY to its stdout right after it obtained its
    first result. Returns (median ms from spawn to READY, median ms from spawn
    to process exit).
    """
    import subprocess

    first, total = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        t_ready = None
        for line in proc.stdout:
            if line.strip() == b"READY":
                t_ready = time.perf_counter()
                break
        proc.stdout.read()
        rc = proc.wait()
        t_end = time.perf_counter()
        if rc != 0 or t_ready is None:
            raise RuntimeError("cold-start child failed (rc=%s): %s" % (rc, cmd))
        first.append((t_ready - t0) * 1e3)
        total.append((t_end - t0) * 1e3)
    return median(first), median(total)


def child_ready():
    """Called by a --cold-child process right after its first result."""
    os.write(1, b"READY\n")


def inc(x):
    return x + 1
