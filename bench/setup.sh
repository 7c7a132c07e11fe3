#!/usr/bin/env bash
# bench/setup.sh — install the peer frameworks used by the benchmark harness.
#
# Idempotent: packages already installed at the pinned version are left alone,
# and `apt-get update` runs at most once, only when a pinned package cannot be
# found in the local apt lists. Safe under CI=true with no stdin.
#
# Pins are the Debian 12 (bookworm) versions. If the archive no longer carries
# the exact pinned version (e.g. a later bookworm point/security release
# superseded it), the script falls back to the current bookworm candidate,
# says so loudly, and records the version actually installed.
#
# Peers installed (all for Debian's /usr/bin/python3, NOT pyenv's python3):
#   python3-distributed  Dask distributed (LocalCluster/Client)
#   python3-dask         Dask core (dependency of distributed; pinned too)
#   python3-joblib       joblib (loky backend)
#   parallel             GNU parallel
#   findutils            xargs (Essential: always present; verified only)
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
export APT_LISTCHANGES_FRONTEND=none
exec </dev/null

# package=bookworm-version
PINS=(
  "python3-distributed=2022.12.1+ds.1-3"
  "python3-dask=2022.12.1+dfsg-2"
  "python3-joblib=1.2.0-4+deb12u1"
  "parallel=20221122+ds-2"
  "findutils=4.9.0-4"
)

die() { echo "bench/setup.sh: ERROR: $*" >&2; exit 1; }
log() { echo "bench/setup.sh: $*" >&2; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || die "must run as root (or have sudo) to apt-get install"
  SUDO="sudo -n"
fi
command -v apt-get >/dev/null 2>&1 || die "apt-get not found: this script supports Debian 12 only"

if [ -r /etc/os-release ]; then
  # shellcheck disable=SC1091
  . /etc/os-release
  if [ "${ID:-}" != "debian" ] || [ "${VERSION_ID:-}" != "12" ]; then
    log "WARNING: expected Debian 12, found ${PRETTY_NAME:-unknown}; pins may not resolve"
  fi
fi

installed_version() { # pkg -> version or empty
  dpkg-query -W -f='${db:Status-Abbrev} ${Version}\n' "$1" 2>/dev/null \
    | awk '$1=="ii" {print $2}' || true
}
candidate_has() { # pkg ver -> 0 if apt knows pkg at exactly ver
  apt-cache madison "$1" 2>/dev/null | awk -F'|' '{gsub(/ /,"",$2); print $2}' | grep -xF "$2" >/dev/null
}
candidate_any() { # pkg -> candidate version or empty
  apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}' | grep -v '(none)' || true
}

# 1. What is missing?
todo=()
for pin in "${PINS[@]}"; do
  pkg=${pin%%=*}; ver=${pin#*=}
  have=$(installed_version "$pkg")
  if [ "$have" = "$ver" ]; then
    log "ok: $pkg $have already installed"
  else
    [ -n "$have" ] && log "note: $pkg installed at $have, pinned $ver"
    todo+=("$pin")
  fi
done

# 2. Install what is missing (apt-get update once, only if needed).
if [ "${#todo[@]}" -gt 0 ]; then
  need_update=0
  for pin in "${todo[@]}"; do
    pkg=${pin%%=*}
    [ -n "$(candidate_any "$pkg")" ] || need_update=1
  done
  if [ "$need_update" -eq 1 ]; then
    log "running apt-get update (some packages unknown to the local apt lists)"
    $SUDO apt-get update -q || die "apt-get update failed"
  fi

  args=()
  for pin in "${todo[@]}"; do
    pkg=${pin%%=*}; ver=${pin#*=}
    have=$(installed_version "$pkg")
    if candidate_has "$pkg" "$ver"; then
      # Do not downgrade a newer installed version: only pin when absent or older.
      if [ -n "$have" ] && dpkg --compare-versions "$have" gt "$ver"; then
        log "WARNING: $pkg $have is newer than pin $ver; keeping $have"
        continue
      fi
      args+=("$pkg=$ver")
    else
      cand=$(candidate_any "$pkg")
      [ -n "$cand" ] || die "package $pkg not available from apt (is this Debian 12 with main enabled?)"
      if [ -n "$have" ]; then
        log "WARNING: pinned $pkg=$ver not in archive; keeping installed $have"
        continue
      fi
      log "WARNING: pinned $pkg=$ver not in archive; installing bookworm candidate $cand"
      args+=("$pkg=$cand")
    fi
  done
  if [ "${#args[@]}" -gt 0 ]; then
    log "apt-get install ${args[*]}"
    $SUDO apt-get install -y -q --no-install-recommends \
      -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
      "${args[@]}" || die "apt-get install failed for: ${args[*]}"
  fi
fi

# 3. Report chosen/installed versions.
echo "== apt-cache policy (chosen versions) =="
for pin in "${PINS[@]}"; do
  pkg=${pin%%=*}
  apt-cache policy "$pkg" | sed -n '1,3p'
done

# 4. Verify the peers actually work.
PY=/usr/bin/python3
[ -x "$PY" ] || die "$PY not found (Debian python3 is required for the Dask/joblib peers)"
"$PY" - <<'EOF' || die "Debian python3 cannot import dask/distributed/joblib"
import sys, dask, distributed, joblib
print("== python peer versions ==")
print("python", sys.version.split()[0], sys.executable)
print("dask", dask.__version__)
print("distributed", distributed.__version__)
print("joblib", joblib.__version__)
EOF
command -v parallel >/dev/null 2>&1 || die "GNU parallel not on PATH"
command -v xargs >/dev/null 2>&1 || die "xargs not on PATH"
parallel --version </dev/null 2>/dev/null | head -n1 | grep -q 'GNU parallel' || die "parallel is not GNU parallel"
echo "== tool versions =="
parallel --version </dev/null | head -n1
xargs --version | head -n1
echo "== installed package versions =="
for pin in "${PINS[@]}"; do
  pkg=${pin%%=*}
  printf '%s %s\n' "$pkg" "$(installed_version "$pkg")"
done
echo "bench/setup.sh: OK"
