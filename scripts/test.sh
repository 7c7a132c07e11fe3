#!/usr/bin/env bash
# Runs every check and test of the project: formatting, vet, staticcheck,
# the whole test suite under the race detector, the conformance suite
# without it (full-size maps), and a short fuzzing run of the protocol
# decoder, with the simulated SSH machines of scripts/sshnet.sh and the
# container engine and registry of scripts/containers.sh running (needs
# root). Installs the pinned tools it needs. Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

STATICCHECK_VERSION=v0.8.2
# The Python environment tests make virtualenvs with Debian's python3
# (the SSH machines' interpreter): venv with ensurepip, and a pip that
# installs into another interpreter (--python).
PYTHON3_VENV_VERSION=3.11.2-1+b1
PYTHON3_PIP_VERSION=23.0.1+dfsg-1
export PATH="$(go env GOPATH)/bin:$PATH"

step() { printf '\n== %s\n' "$*"; }

step "tools"
go version
if ! staticcheck -version 2>/dev/null | grep -q "${STATICCHECK_VERSION#v}"; then
  go install "honnef.co/go/tools/cmd/staticcheck@${STATICCHECK_VERSION}"
fi

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

# A count, not a duration: with a duration, Go 1.26's fuzzing coordinator
# can report its own deadline as a failure (golang/go#75804, fixed in
# 1.27). 20000 inputs take about 15 s on 2 cores.
step "fuzz the protocol decoder (20000 inputs)"
go test -run '^$' -fuzz '^FuzzReader$' -fuzztime 20000x ./internal/wire

step "conformance without the race detector (a map of one million tasks)"
go test -count=1 -run 'TestConformance' .

# Network ID 7 belongs to CI; a developer sharing a machine picks another
# with SSHNET_ID.
sshnet_id=${SSHNET_ID:-7}
step "simulated SSH machines (scripts/sshnet.sh, network ID $sshnet_id)"
# The SSH tests need them (docs/testing-ssh.md); REQUIRE makes those tests
# fail rather than skip when the network is missing.
sshnet_dir=$(mktemp -d)
containers_dir=$(mktemp -d)
cleanup() {
  scripts/containers.sh down "$containers_dir" || true
  scripts/sshnet.sh down "$sshnet_dir" || true
  rm -rf "$sshnet_dir" "$containers_dir"
}
trap cleanup EXIT
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

step "all tests, race detector on"
go test -race -count=1 -timeout 20m ./...
