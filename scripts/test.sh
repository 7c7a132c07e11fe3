#!/usr/bin/env bash
# Runs every check and test of the project: formatting, vet, staticcheck,
# the whole test suite under the race detector, the conformance suite
# without it (full-size maps), and a short fuzzing run of the protocol
# decoder, with the simulated SSH machines of scripts/sshnet.sh and the
# container engine and registry of scripts/containers.sh running, then the
# Kubernetes host's tests on the single-node cluster of scripts/k8s.sh
# (needs root). Installs the pinned tools it needs. Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

STATICCHECK_VERSION=v0.8.2
# The Python environment tests make virtualenvs with Debian's python3
# (the SSH machines' interpreter): venv with ensurepip, and a pip that
# installs into another interpreter (--python).
PYTHON3_VENV_VERSION=3.11.2-1+b1
PYTHON3_PIP_VERSION=23.0.1+dfsg-1
export PATH="$(go env GOPATH)/bin:$PATH"

step() { printf '\n== %s (%s)\n' "$*" "$(date -u +%T)"; }

# Network ID 7 belongs to CI; a developer sharing a machine picks another
# with SSHNET_ID.
sshnet_id=${SSHNET_ID:-7}
sshnet_dir=$(mktemp -d)
containers_dir=$(mktemp -d)
k8s_dir=$(mktemp -d)
k8s_build_pid=
cleanup() {
  if [ -n "$k8s_build_pid" ]; then
    # The background build (its own process group, see below).
    kill -- "-$k8s_build_pid" 2>/dev/null || true
    wait "$k8s_build_pid" 2>/dev/null || true
  fi
  scripts/k8s.sh down "$k8s_dir" || true
  scripts/containers.sh down "$containers_dir" || true
  scripts/sshnet.sh down "$sshnet_dir" || true
  rm -rf "$sshnet_dir" "$containers_dir" "$k8s_dir"
}
trap cleanup EXIT

step "tools"
go version
if ! staticcheck -version 2>/dev/null | grep -q "${STATICCHECK_VERSION#v}"; then
  go install "honnef.co/go/tools/cmd/staticcheck@${STATICCHECK_VERSION}"
fi

# The Kubernetes tests' cluster runs binaries built from k8s.io/kubernetes
# (scripts/k8s.sh): 5 to 20 minutes of compiling on 2 cores when
# ${MEADOWRUN_K8S_CACHE:-~/.cache/meadowrun-k8s} does not hold them yet
# (they are kept there, keyed by scripts/k8stools' go.mod and go.sum),
# seconds when it does. The build starts now, in the background and at the
# lowest CPU priority, so that it mostly takes the CPU time the checks and
# tests below leave idle (they wait on processes, networks and sleeps)
# rather than slow them down; the Kubernetes step at the end waits for it.
# setsid makes it a process group of its own, which cleanup kills whole.
k8s_build_log=$k8s_dir/build.log
step "Kubernetes binaries: building in the background (log in $k8s_build_log)"
setsid nice -n 19 scripts/k8s.sh build >"$k8s_build_log" 2>&1 </dev/null &
k8s_build_pid=$!

step "Python packages (python3-venv, python3-pip)"
need=()
for p in "python3-venv=$PYTHON3_VENV_VERSION" "python3-pip=$PYTHON3_PIP_VERSION"; do
  dpkg-query -W -f='${Status}' "${p%%=*}" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"
fi
dpkg-query -W python3-venv python3-pip

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi

step "go vet"
go vet ./...

step "staticcheck"
staticcheck ./...

# The Google Cloud Storage tests run against fake-gcs-server, built from
# the pinned wrapper module scripts/fakegcs (cached, like the Kubernetes
# binaries), and fail rather than skip without it.
step "fake-gcs-server (scripts/fakegcs.sh)"
MEADOWRUN_FAKE_GCS=$(scripts/fakegcs.sh)
export MEADOWRUN_FAKE_GCS MEADOWRUN_REQUIRE_FAKE_GCS=1

# A count, not a duration: with a duration, Go 1.26's fuzzing coordinator
# can report its own deadline as a failure (golang/go#75804, fixed in
# 1.27). 20000 inputs take about 15 s on 2 cores.
step "fuzz the protocol decoder (20000 inputs)"
go test -run '^$' -fuzz '^FuzzReader$' -fuzztime 20000x ./internal/wire

step "conformance without the race detector (a map of one million tasks)"
go test -count=1 -run 'TestConformance' .

step "simulated SSH machines (scripts/sshnet.sh, network ID $sshnet_id)"
# The SSH tests need them (docs/testing-ssh.md); REQUIRE makes those tests
# fail rather than skip when the network is missing.
scripts/sshnet.sh up "$sshnet_dir" "$sshnet_id"
export MEADOWRUN_SSHNET="$sshnet_dir" MEADOWRUN_REQUIRE_SSHNET=1

step "container engine and registry (scripts/containers.sh, ID $sshnet_id)"
# The container tests need them (docs/testing-containers.md) and fail
# rather than skip when they are missing.
scripts/containers.sh up "$containers_dir" "$sshnet_id"
export MEADOWRUN_CONTAINERS="$containers_dir" MEADOWRUN_REQUIRE_CONTAINERS=1
# The Python worker tests fail rather than skip without python3.
export MEADOWRUN_REQUIRE_PYTHON=1
# The Python client's tests (python/) fail rather than skip when python3
# cannot import cloudpickle (preinstalled with the machine's Python).
export MEADOWRUN_REQUIRE_CLOUDPICKLE=1
# The EC2 allocation tests and the EC2 host's (conformance suite
# included) run against moto_server (preinstalled with the machine's
# Python) and fail rather than skip without it; the host's instances are
# simulated on the SSH network above (internal/ec2sim, docs/ec2.md).
export MEADOWRUN_REQUIRE_MOTO=1

# The kubernetes package runs in its own step below, on the cluster.
step "all tests but the Kubernetes host's, race detector on"
go test -race -count=1 -timeout 20m $(go list ./... | grep -v '/kubernetes$')

step "Kubernetes cluster (scripts/k8s.sh)"
build_rc=0
wait "$k8s_build_pid" || build_rc=$?
k8s_build_pid=
tail -n 5 "$k8s_build_log"
[ "$build_rc" -eq 0 ] || { echo "scripts/k8s.sh build failed ($build_rc)"; exit 1; }
scripts/k8s.sh up "$k8s_dir"
# The tests fail rather than skip without the cluster (docs/testing-kubernetes.md).
export MEADOWRUN_K8S="$k8s_dir" MEADOWRUN_REQUIRE_K8S=1

# Without the race detector: the test binary is what runs in the pods (as
# agent and workers), and built with -race its workers need more than the
# 64 MiB that the memory limit tests give them; they are killed before
# they start. So package k8shost runs without it; what it shares with the
# SSH host (agent, agentclient, coordinator) is race-tested above.
step "the Kubernetes host's tests (race detector off)"
go test -count=1 -timeout 30m ./kubernetes
