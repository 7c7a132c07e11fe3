#!/usr/bin/python3
"""Peer family: shell job runners (xargs, GNU parallel).

P6: run /bin/true N times, 2 at a time, timed from Python (subprocess wall
time, includes starting xargs/parallel itself):
  xargs         : seq N | xargs -P2 -n1 /bin/true
  gnu_parallel  : seq N | parallel --will-cite -j2 /bin/true
Each job gets one argument (the sequence number), which /bin/true ignores.

Stdlib only; any python3 works, /usr/bin/python3 is used for uniformity:
  /usr/bin/python3 bench/peers/shell_peer.py [--workloads P6] [--quick] [--reps N]
"""

import os
import shutil
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # keep bench/peers free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

WORKLOADS = ["P6"]


def tool_version(cmd):
    try:
        out = subprocess.run(cmd + ["--version"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             stdin=subprocess.DEVNULL, check=False).stdout.decode()
        return out.splitlines()[0].strip() if out else "unknown"
    except OSError:
        return "missing"


def p6(args, quick):
    n = 20 if quick else 1000
    jobs = "".join("%d\n" % i for i in range(1, n + 1)).encode()
    true = "/bin/true"
    impls = [
        ("xargs", ["xargs", "-P2", "-n1", true], "seq N | xargs -P2 -n1 /bin/true"),
        ("gnu_parallel", ["parallel", "--will-cite", "-j2", true], "seq N | parallel --will-cite -j2 /bin/true"),
    ]
    # The harness passes the meadowrun CLI it built; it reads inputs one per
    # line on stdin like xargs, so all three are timed the same way.
    mr = os.environ.get("MEADOWRUN_BIN")
    if mr:
        impls.append(("meadowrun", [mr, "map", "-j", "2", "--", true], "seq N | meadowrun map -j 2 -- /bin/true"))
    for impl, cmd, desc in impls:
        if shutil.which(cmd[0]) is None:
            raise SystemExit("%s not found on PATH: run bench/setup.sh" % cmd[0])
    vers = {impl: tool_version([cmd[0]]) if impl != "meadowrun" else "meadowrun-go (cmd/meadowrun)" for impl, cmd, _ in impls}
    # warm the page cache / perl module cache once (not timed)
    for impl, cmd, _ in impls:
        subprocess.run(cmd, input=b"1\n2\n", check=True, stdout=subprocess.DEVNULL)
    for rep in range(args.reps):
        for impl, cmd, desc in impls:
            t0 = time.perf_counter()
            subprocess.run(cmd, input=jobs, check=True, stdout=subprocess.DEVNULL)
            dt = time.perf_counter() - t0
            params = {"n": n, "concurrency": 2, "command": desc}
            C.emit("P6", impl, params, "wall_s", dt, "s", rep, vers[impl])
            C.emit("P6", impl, params, "jobs_per_s", n / dt, "jobs/s", rep, vers[impl])


def main():
    args = C.parse_args(__doc__.splitlines()[0], WORKLOADS)
    C.setup_stdout()
    for w in args.workloads:
        t0 = time.perf_counter()
        p6(args, args.quick)
        C.log("shell %s done in %.1fs" % (w, time.perf_counter() - t0))


if __name__ == "__main__":
    main()
