#!/usr/bin/env bash
# Starts and stops the container engine and registry of the container
# tests (docs/testing-containers.md): a private dockerd of Debian's
# docker.io on its own socket and bridge, a registry of Debian's
# docker-registry with htpasswd authentication, and two test images pushed
# to it: FROM scratch with one static program, and a Debian 12 root made
# with debootstrap (a shell and Python 3).
#
# Usage:
#   scripts/containers.sh up DIR [ID]   start everything, state in DIR
#   scripts/containers.sh down DIR      stop everything recorded in DIR
#
# ID (0..9, default 0) keeps several copies apart on one machine: bridge
# mrdkID (10.98.ID.1/24), registry on 127.0.0.1:1930ID. After `up`,
# DIR/containers.env describes them (KEY=VALUE lines); tests find it
# through MEADOWRUN_CONTAINERS=DIR. Needs root; installs the pinned
# packages with apt-get when they are missing. The Debian root is cached
# in $MEADOWRUN_CACHE (default ~/.cache/meadowrun-test), keyed by the
# pinned debootstrap and suite, because building it takes minutes.
set -euo pipefail
# shellcheck source=lib/packages.sh
. "$(dirname "$0")/lib/packages.sh"

readonly DOCKER_VERSION=20.10.24+dfsg1-1+deb12u1+b6
readonly REGISTRY_VERSION=2.8.2+ds1-1
readonly DEBOOTSTRAP_VERSION=1.0.128+nmu2+deb12u2
readonly SUITE=bookworm
readonly MIRROR=http://deb.debian.org/debian
readonly READY_TIMEOUT_S=30
readonly REGISTRY_USER=mrtest

die() {
	echo "containers: $*" >&2
	exit 1
}

usage() {
	echo "usage: $0 up DIR [ID] | $0 down DIR" >&2
	exit 2
}

# ---------------------------------------------------------------- packages

ensure_packages() {
	local need=()
	pkg_ok docker.io "$DOCKER_VERSION" || need+=("docker.io=$DOCKER_VERSION")
	pkg_ok docker-registry "$REGISTRY_VERSION" || need+=("docker-registry=$REGISTRY_VERSION")
	pkg_ok debootstrap "$DEBOOTSTRAP_VERSION" || need+=("debootstrap=$DEBOOTSTRAP_VERSION")
	command -v ip >/dev/null || need+=(iproute2)
	[ "${#need[@]}" -eq 0 ] && return 0

	echo "containers: installing ${need[*]}"
	local rc=0
	install_without_daemons "${need[@]}" || rc=$?
	[ "$rc" -eq 0 ] || die "apt-get install ${need[*]} failed"
}

# ---------------------------------------------------------------- state

# record KEY VALUE: appends to DIR/state, which `down` reads.
record() { echo "$1=$2" >>"$DIR/state"; }

state() { # KEY: the recorded value, or nothing
	sed -n "s/^$1=//p" "$DIR/state" 2>/dev/null | tail -n 1
}

# stop_pid PID NAME: TERM, wait up to 10 s, then KILL.
stop_pid() {
	local pid=$1 name=$2 i
	[[ "$pid" =~ ^[0-9]+$ ]] || return 0
	kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for i in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	echo "containers: $name ($pid) did not stop on TERM; killing it" >&2
	kill -KILL "$pid" 2>/dev/null || true
}

# wait_for WHAT CMD...: runs CMD until it succeeds or READY_TIMEOUT_S pass.
wait_for() {
	local what=$1 i
	shift
	for i in $(seq $((READY_TIMEOUT_S * 20))); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.05
	done
	return 1
}

# asks_for_credentials PORT: true when 127.0.0.1:PORT answers /v2/ with
# 401 (bash's /dev/tcp: curl is not on every machine).
asks_for_credentials() {
	local status
	exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
	printf 'GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
	read -r -t 2 _ status _ <&3 || status=""
	exec 3<&-
	[ "$status" = 401 ]
}

# ---------------------------------------------------------------- parts

start_dockerd() {
	local br=mrdk$ID
	# Our own bridge, so that this engine touches no other network and
	# publishes ports through its userland proxy (no iptables rules).
	if ! ip link show "$br" >/dev/null 2>&1; then
		ip link add "$br" type bridge
		record BRIDGE "$br"
	fi
	ip addr replace "10.98.$ID.1/24" dev "$br"
	ip link set "$br" up
	mkdir -p "$DIR/docker"
	# The engine's own containerd lives under its exec root; short paths
	# keep its sockets under the 108-byte limit.
	dockerd --data-root "$DIR/docker/root" --exec-root "$DIR/docker/exec" \
		-H "unix://$DIR/docker.sock" --pidfile "$DIR/docker/dockerd.pid" \
		--bridge "$br" --iptables=false --ip-masq=false --ip-forward=false \
		--containerd-namespace "meadowrun-test-$ID" --containerd-plugins-namespace "meadowrun-test-$ID-plugins" \
		>"$DIR/dockerd.log" 2>&1 &
	record DOCKERD_PID $!
	export DOCKER_HOST="unix://$DIR/docker.sock"
	wait_for dockerd docker version ||
		{ tail -n 30 "$DIR/dockerd.log" >&2; die "dockerd did not answer within ${READY_TIMEOUT_S}s (log above)"; }
}

start_registry() {
	local port=$((19300 + ID)) password
	password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
	mkdir -p "$DIR/registry/data"
	go run ./testdata/containers/htpasswd "$REGISTRY_USER" "$password" >"$DIR/registry/htpasswd"
	cat >"$DIR/registry/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $DIR/registry/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
  secret: meadowrun-test-$ID
auth:
  htpasswd:
    realm: meadowrun-test
    path: $DIR/registry/htpasswd
EOF
	docker-registry serve "$DIR/registry/config.yml" >"$DIR/registry.log" 2>&1 &
	record REGISTRY_PID $!
	# Ready when it asks for credentials.
	wait_for registry asks_for_credentials "$port" ||
		{ tail -n 30 "$DIR/registry.log" >&2; die "the registry did not answer on 127.0.0.1:$port (log above)"; }
	REGISTRY=127.0.0.1:$port
	REGISTRY_PASSWORD=$password
	# The CLI's credentials stay in DIR, never in ~/.docker.
	export DOCKER_CONFIG="$DIR/docker-config"
	echo "$password" | docker login "$REGISTRY" -u "$REGISTRY_USER" --password-stdin >/dev/null 2>&1 || die "docker login $REGISTRY failed"
}

# push IMAGE: pushes and prints IMAGE's repository@digest.
push() {
	docker push -q "$1" >/dev/null
	docker image inspect --format '{{index .RepoDigests 0}}' "$1"
}

build_scratch() {
	local ctx="$DIR/build/scratch"
	mkdir -p "$ctx"
	CGO_ENABLED=0 go build -trimpath -o "$ctx/hello" ./testdata/containers/hello
	printf 'FROM scratch\nCOPY hello /hello\nENTRYPOINT ["/hello"]\n' >"$ctx/Dockerfile"
	SCRATCH_IMAGE=$REGISTRY/meadowrun-test/scratch:v1
	DOCKER_BUILDKIT=0 docker build -q -t "$SCRATCH_IMAGE" "$ctx" >"$DIR/build.log" 2>&1 ||
		{ cat "$DIR/build.log" >&2; die "docker build of the scratch image failed (log above)"; }
	SCRATCH_DIGEST=$(push "$SCRATCH_IMAGE")
	rm -rf "$ctx"
}

build_debian() {
	local cache=${MEADOWRUN_CACHE:-$HOME/.cache/meadowrun-test}
	local tarball="$cache/debian-$SUITE-minbase-python3-$DEBOOTSTRAP_VERSION.tar"
	if [ ! -s "$tarball" ]; then
		local t0=$EPOCHREALTIME root="$DIR/build/debian"
		echo "containers: making a Debian $SUITE root with debootstrap (cached afterwards in $cache)"
		mkdir -p "$cache" "$root"
		debootstrap --variant=minbase --include=python3 "$SUITE" "$root" "$MIRROR" >"$DIR/debootstrap.log" 2>&1 ||
			{ tail -n 30 "$DIR/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
		rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
		tar -C "$root" --numeric-owner -cf "$tarball.tmp" .
		mv "$tarball.tmp" "$tarball"
		rm -rf "$root"
		echo "containers: Debian root made in $(elapsed "$t0") s"
	fi
	DEBIAN_IMAGE=$REGISTRY/meadowrun-test/debian:v1
	docker import -c 'CMD ["/bin/sh"]' -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
		"$tarball" "$DEBIAN_IMAGE" >/dev/null
	DEBIAN_DIGEST=$(push "$DEBIAN_IMAGE")
}

# ---------------------------------------------------------------- commands

up() {
	local t0=$EPOCHREALTIME
	[ -e "$DIR/state" ] && die "$DIR already holds a running set (run: $0 down $DIR)"
	ensure_packages
	: >"$DIR/state"
	record ID "$ID"
	# Whatever fails from here on leaves nothing running.
	trap 'if [ $? -ne 0 ]; then echo "containers: up failed; stopping what it started" >&2; down; fi' EXIT
	start_dockerd
	start_registry
	build_scratch
	build_debian
	trap - EXIT
	cat >"$DIR/containers.env" <<EOF
DOCKER_HOST=$DOCKER_HOST
REGISTRY=$REGISTRY
REGISTRY_USER=$REGISTRY_USER
REGISTRY_PASSWORD=$REGISTRY_PASSWORD
SCRATCH_IMAGE=$SCRATCH_IMAGE
SCRATCH_DIGEST=$SCRATCH_DIGEST
DEBIAN_IMAGE=$DEBIAN_IMAGE
DEBIAN_DIGEST=$DEBIAN_DIGEST
DOCKERD_PID=$(state DOCKERD_PID)
REGISTRY_PID=$(state REGISTRY_PID)
EOF
	echo "containers: up (ID $ID, $DIR/containers.env) in $(elapsed "$t0") s"
}

down() {
	local t0=$EPOCHREALTIME br
	[ -e "$DIR/state" ] || { echo "containers: nothing recorded in $DIR"; return 0; }
	if [ -S "$DIR/docker.sock" ] && kill -0 "$(state DOCKERD_PID)" 2>/dev/null; then
		# Containers first, so that no shim outlives the engine.
		DOCKER_HOST="unix://$DIR/docker.sock" docker ps -aq 2>/dev/null |
			xargs -r env DOCKER_HOST="unix://$DIR/docker.sock" docker rm -f >/dev/null 2>&1 || true
	fi
	stop_pid "$(state REGISTRY_PID)" registry
	stop_pid "$(state DOCKERD_PID)" dockerd
	br=$(state BRIDGE)
	if [ -n "$br" ]; then ip link del "$br" 2>/dev/null || true; fi
	# The engine's mounts (overlays, its exec root) go before its files.
	grep -o " $DIR/[^ ]*" /proc/mounts | sort -r | xargs -r -n 1 umount -l 2>/dev/null || true
	rm -rf "$DIR/docker" "$DIR/registry" "$DIR/build" "$DIR/docker-config" "$DIR/state" "$DIR/containers.env"
	echo "containers: down in $(elapsed "$t0") s"
}

[ "$(id -u)" -eq 0 ] || die "needs root (dockerd, a bridge)"
[ $# -ge 2 ] || usage
case "$1" in
up)
	ID=${3:-0}
	[[ "$ID" =~ ^[0-9]$ ]] || die "ID must be 0..9, not $ID"
	mkdir -p "$2"
	DIR=$(cd "$2" && pwd)
	cd "$(dirname "$0")/.."
	up
	;;
down)
	DIR=$(cd "$2" 2>/dev/null && pwd) || { echo "containers: no $2"; exit 0; }
	ID=$(state ID)
	down
	;;
*) usage ;;
esac
