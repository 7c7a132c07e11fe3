#!/usr/bin/env bash
# Builds fake-gcs-server, the emulator of Google Cloud Storage the storage
# bucket tests use (internal/fakegcs), from the wrapper module
# scripts/fakegcs, once per version of its go.mod and go.sum, into
# ${MEADOWRUN_FAKE_GCS_CACHE:-$HOME/.cache/meadowrun-fakegcs}, and prints
# the program's path (what $MEADOWRUN_FAKE_GCS names for the tests).
#
# Usage: scripts/fakegcs.sh
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly HERE
want=$(cat "$HERE/fakegcs/go.mod" "$HERE/fakegcs/go.sum" | sha256sum | cut -c1-16)
out=${MEADOWRUN_FAKE_GCS_CACHE:-$HOME/.cache/meadowrun-fakegcs}/$want
if [ ! -x "$out/fake-gcs-server" ]; then
	mkdir -p "$out"
	(cd "$HERE/fakegcs" && GOFLAGS=-buildvcs=false CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" \
		-o "$out/fake-gcs-server.tmp" github.com/fsouza/fake-gcs-server) >&2
	mv -f "$out/fake-gcs-server.tmp" "$out/fake-gcs-server"
fi
echo "$out/fake-gcs-server"
