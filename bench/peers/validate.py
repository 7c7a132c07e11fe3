#!/usr/bin/python3
"""Validate peer JSON lines: stdin -> stdout (passed through unchanged).

Exits 1 if any line is not a JSON object with the required fields/types
(see _common.REQUIRED) or, unless --allow-empty, if no line was read.
  /usr/bin/python3 bench/peers/dask_peer.py --quick | /usr/bin/python3 bench/peers/validate.py
"""

import json
import math
import os
import sys

sys.dont_write_bytecode = True  # keep bench/peers free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402


def check(line):
    rec = json.loads(line)
    if not isinstance(rec, dict):
        raise ValueError("not an object")
    for k, t in C.REQUIRED.items():
        if k not in rec:
            raise ValueError("missing %r" % k)
        if not isinstance(rec[k], t) or isinstance(rec[k], bool):
            raise ValueError("%r has wrong type" % k)
    if rec["workload"] not in C.KNOWN_WORKLOADS:
        raise ValueError("unknown workload %r" % rec["workload"])
    if not math.isfinite(rec["value"]):
        raise ValueError("non-finite value")


def main():
    allow_empty = "--allow-empty" in sys.argv[1:]
    n, bad = 0, 0
    for i, line in enumerate(sys.stdin, 1):
        if not line.strip():
            continue
        try:
            check(line)
        except Exception as e:  # report every bad line
            bad += 1
            print("validate: line %d: %s: %s" % (i, e, line.strip()[:200]), file=sys.stderr)
        sys.stdout.write(line)
        n += 1
    sys.stdout.flush()
    if n == 0 and not allow_empty:
        print("validate: no JSON lines read", file=sys.stderr)
        sys.exit(1)
    if bad:
        sys.exit(1)
    print("validate: %d lines ok" % n, file=sys.stderr)


if __name__ == "__main__":
    main()
