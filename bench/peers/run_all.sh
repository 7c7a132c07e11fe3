#!/usr/bin/env bash
# Run every peer script with the right interpreter and validate the output.
# All arguments are passed to each script, e.g.:
#   bench/peers/run_all.sh --quick
#   bench/peers/run_all.sh --workloads P1,P2 --reps 3 > peers.jsonl
# Scripts skip workloads they have no peer for. stdout: JSON lines only.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PY=${PEER_PYTHON:-/usr/bin/python3}   # Debian python: has dask/distributed/joblib
for s in stdlib_peer.py joblib_peer.py dask_peer.py shell_peer.py; do
  echo "run_all: $s" >&2
  "$PY" "$here/$s" "$@" | "$PY" "$here/validate.py" --allow-empty
done
