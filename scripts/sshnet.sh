#!/usr/bin/env bash
# Starts and stops a test network of simulated machines for the SSH host
# driver tests: six real OpenSSH sshd servers, each in its own network
# namespace with its own address on a private bridge, its own home directory
# and, for some, a quirk (see docs/testing-ssh.md).
#
# Usage:
#   scripts/sshnet.sh up DIR [ID]   start the network, state and keys in DIR
#   scripts/sshnet.sh down DIR      stop everything recorded in DIR
#
# ID (0..9, default 0) keeps several copies apart on one machine: bridge
# mrbrID, namespaces mrIDh1..mrIDh6, root-side veths mrIDv1..mrIDv6, subnet
# 10.99.ID.0/24 (bridge 10.99.ID.1, host N at 10.99.ID.1N).
#
# DIR must lie outside root's home directory, because every machine mounts
# its own empty home over it while DIR holds the keys sshd reads. After `up`,
# DIR/sshnet.env describes the network (KEY=VALUE lines); tests find it
# through MEADOWRUN_SSHNET=DIR. Needs root; installs the pinned
# openssh-server, iptables and tcsh packages with apt-get when they are
# missing.
set -euo pipefail
# shellcheck source=lib/packages.sh
. "$(dirname "$0")/lib/packages.sh"

readonly OPENSSH_VERSION=1:9.2p1-2+deb12u10
readonly IPTABLES_VERSION=1.8.9-2
readonly TCSH_VERSION=6.24.07-1
readonly NHOSTS=6
readonly SSHD=/usr/sbin/sshd
readonly READY_TIMEOUT_S=15

die() {
	echo "sshnet: $*" >&2
	exit 1
}

usage() {
	echo "usage: $0 up DIR [ID] | $0 down DIR" >&2
	exit 2
}

# ---------------------------------------------------------------- packages

sshd_pids() { # every sshd process, sorted, without needing procps
	local p comm
	for p in /proc/[0-9]*; do
		comm=$(cat "$p/comm" 2>/dev/null) || continue
		if [ "$comm" = sshd ]; then echo "${p#/proc/}"; fi
	done | sort
}

ensure_packages() {
	local need=()
	pkg_ok openssh-server "$OPENSSH_VERSION" || need+=("openssh-server=$OPENSSH_VERSION")
	pkg_ok iptables "$IPTABLES_VERSION" || need+=("iptables=$IPTABLES_VERSION")
	pkg_ok tcsh "$TCSH_VERSION" || need+=("tcsh=$TCSH_VERSION")
	command -v ip >/dev/null || need+=(iproute2)
	[ "${#need[@]}" -eq 0 ] && return 0

	echo "sshnet: installing ${need[*]}"
	local before rc=0
	before=$(sshd_pids)
	install_without_daemons "${need[@]}" || rc=$?
	[ "$rc" -eq 0 ] || die "apt-get install ${need[*]} failed"
	# Belt and braces: stop a system sshd that the installation started
	# after all (a new sshd whose PID is in the system daemon's pid file),
	# and only that one: other sshds may belong to other networks.
	local pid
	pid=$(cat /run/sshd.pid 2>/dev/null || true)
	if [[ "$pid" =~ ^[0-9]+$ ]] && comm -13 <(echo "$before") <(sshd_pids) | grep -qx "$pid"; then
		echo "sshnet: stopping the system sshd ($pid) the installation started" >&2
		kill "$pid" 2>/dev/null || true
	fi
}

# ---------------------------------------------------------------- helpers

ns_name() { echo "mr${ID}h$1"; }
veth_name() { echo "mr${ID}v$1"; }
bridge_name() { echo "mrbr${ID}"; }
host_ip() { echo "10.99.${ID}.1$1"; }

# Every iptables rule this script adds, one per line, without -I/-A.
iptables_rules() {
	local br
	br=$(bridge_name)
	# Namespace to namespace: bridged frames go through FORWARD when
	# bridge-nf-call-iptables=1, where Docker sets the policy to DROP.
	echo "FORWARD -i $br -o $br -j ACCEPT"
	# Root namespace to the machines and back.
	echo "INPUT -i $br -j ACCEPT"
	echo "OUTPUT -o $br -j ACCEPT"
}

home_of_root() {
	local home
	home=$(getent passwd root | cut -d: -f6)
	[ -n "$home" ] || die "cannot find root's home directory with getent passwd root"
	echo "$home"
}

check_outside_home() {
	local home
	home=$(realpath -m "$(home_of_root)")
	case "$DIR/" in
	"$home/"*) die "DIR ($DIR) must lie outside root's home directory $home: every machine mounts its own home over it" ;;
	esac
}

# sshd_running PID N: true when PID is the sshd this network started for host N.
sshd_running() {
	local pid=$1 n=$2 cmd
	[ -r "/proc/$pid/cmdline" ] || return 1
	cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
	# sshd rewrites its command line to "sshd: ARGV [listener] ...".
	case "$cmd" in
	"$SSHD -D -f $DIR/h$n/sshd_config "* | "sshd: $SSHD -D -f $DIR/h$n/sshd_config "*) return 0 ;;
	*) return 1 ;;
	esac
}

ssh_opts() { # options of the system ssh client for the test key
	echo "-i $DIR/id_ed25519 -o UserKnownHostsFile=$DIR/known_hosts -o StrictHostKeyChecking=yes -o BatchMode=yes -o LogLevel=ERROR"
}

# ---------------------------------------------------------------- down

alive() { # PID: true while PID runs (a zombie waiting for its parent does not)
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[ "${stat%% *}" != Z ]
}

cmd_down() {
	if [ ! -f "$DIR/state" ]; then
		echo "sshnet: nothing to stop in $DIR (no state file)"
		return 0
	fi
	local start=$EPOCHREALTIME
	ID=$(sed -n 's/^ID=//p' "$DIR/state")
	[[ "$ID" =~ ^[0-9]$ ]] || die "$DIR/state: bad ID '$ID'"

	# Stop every sshd by the PID it recorded, then whatever still runs in
	# the namespaces (sessions the tests left behind). Their private mount
	# namespaces, and with them the home and cgroup tmpfs mounts, go away
	# with the last process.
	local n pid pids=()
	for n in $(seq 1 "$NHOSTS"); do
		pid=$(cat "$DIR/h$n/sshd.pid" 2>/dev/null || true)
		if [[ "$pid" =~ ^[0-9]+$ ]] && sshd_running "$pid" "$n"; then
			kill -TERM "$pid" 2>/dev/null || true
			pids+=("$pid")
		fi
		if [ -e "/run/netns/$(ns_name "$n")" ]; then
			for pid in $(ip netns pids "$(ns_name "$n")" 2>/dev/null || true); do
				kill -TERM "$pid" 2>/dev/null || true
				pids+=("$pid")
			done
		fi
	done
	local deadline=$((SECONDS + 3)) alive
	while :; do
		alive=()
		for pid in ${pids[@]+"${pids[@]}"}; do
			alive "$pid" && alive+=("$pid")
		done
		[ "${#alive[@]}" -eq 0 ] && break
		if [ "$SECONDS" -ge "$deadline" ]; then
			kill -KILL "${alive[@]}" 2>/dev/null || true
			sleep 0.1
			break
		fi
		sleep 0.05
	done

	# Delete each veth pair before its namespace: the kernel dismantles a
	# deleted namespace, and the links in it, asynchronously, so a veth
	# left to that could still exist (or vanish under our feet) when the
	# next `up` creates one of the same name.
	local links=()
	for n in $(seq 1 "$NHOSTS"); do
		links+=("$(veth_name "$n")")
	done
	links+=("$(bridge_name)")
	for n in $(seq 1 "$NHOSTS"); do
		ip link del "$(veth_name "$n")" 2>/dev/null || true
		if [ -e "/run/netns/$(ns_name "$n")" ]; then
			ip netns del "$(ns_name "$n")"
		fi
		rm -f "$DIR/h$n/sshd.pid"
	done
	ip link del "$(bridge_name)" 2>/dev/null || true
	local link left deadline=$((SECONDS + 5))
	while :; do
		left=()
		for link in "${links[@]}"; do
			if ip link show "$link" >/dev/null 2>&1; then left+=("$link"); fi
		done
		[ "${#left[@]}" -eq 0 ] && break
		[ "$SECONDS" -lt "$deadline" ] || die "links ${left[*]} are still there"
		ip link del "${left[0]}" 2>/dev/null || true
		sleep 0.05
	done
	if command -v iptables >/dev/null; then
		local rule
		while read -r rule; do
			# shellcheck disable=SC2086 # the rule is a word list
			while iptables -C $rule 2>/dev/null; do
				iptables -D $rule
			done
		done < <(iptables_rules)
	fi
	rm -f "$DIR/state" "$DIR/sshnet.env"
	echo "sshnet: down (ID $ID) in $(elapsed "$start") s"
}

# ---------------------------------------------------------------- up

write_sshd_config() { # N
	local n=$1 d="$DIR/h$1"
	cat >"$d/sshd_config" <<EOF
# Simulated machine h$n of the sshnet test network (scripts/sshnet.sh).
Port 22
ListenAddress 0.0.0.0
HostKey $d/hostkey
PidFile none
AuthorizedKeysFile $DIR/authorized_keys
TrustedUserCAKeys $DIR/user_ca.pub
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
AllowStreamLocalForwarding yes
AllowTcpForwarding local
ClientAliveInterval 1
ClientAliveCountMax 3
MaxSessions 100
MaxStartups 100
Subsystem sftp internal-sftp
EOF
	if [ "$n" -eq 5 ]; then
		echo "SetEnv PATH=$DIR/fakearch:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" >>"$d/sshd_config"
	fi
}

write_fakearch() {
	mkdir -p "$DIR/fakearch"
	cat >"$DIR/fakearch/uname" <<'EOF'
#!/bin/sh
# The machine h5 pretends to be an arm64 machine (scripts/sshnet.sh).
case "$*" in
-m | --machine) echo aarch64 ;;
-sm | -ms | "-s -m" | "-m -s") echo "Linux aarch64" ;;
*) exec /bin/uname "$@" ;;
esac
EOF
	chmod 755 "$DIR/fakearch/uname"
}

start_sshd() { # N HOME
	local n=$1 home=$2 d="$DIR/h$1" size=2g cgroup="" passwd=""
	[ "$n" -eq 4 ] && size=4m
	if [ "$n" -eq 6 ]; then
		# h6 has no cgroups, and root's login shell there is tcsh, which
		# takes no sh syntax: clients must not assume a POSIX login shell.
		cgroup=1
		passwd="$d/passwd"
		sed 's|^\(root:[^:]*:[^:]*:[^:]*:[^:]*:[^:]*:\).*$|\1/usr/bin/tcsh|' /etc/passwd >"$passwd"
	fi
	# nsenter --net, not ip netns exec: the latter also mounts a fresh
	# sysfs, which would hide the cgroup file systems from every machine.
	# Every exec keeps the PID, so $! is sshd's.
	# shellcheck disable=SC2016 # expanded by the inner shell
	nsenter --net="/run/netns/$(ns_name "$n")" \
		unshare -m --propagation private \
		sh -c 'set -e
mount -t tmpfs -o "size=$2,mode=0700" tmpfs "$1"
if [ -n "$3" ]; then mount -t tmpfs -o ro,size=1m tmpfs /sys/fs/cgroup; fi
if [ -n "$7" ]; then mount --bind "$7" /etc/passwd; fi
exec "$4" -D -f "$5" -E "$6"' \
		sh "$home" "$size" "$cgroup" "$SSHD" "$d/sshd_config" "$d/sshd.log" "$passwd" \
		</dev/null >"$d/start.log" 2>&1 &
	echo "$!" >"$d/sshd.pid"
}

# probe N: what host N should answer to the readiness probe, and which
# login shell runs commands there. Run with sh, whatever the login shell.
# shellcheck disable=SC2016 # expanded on the machine
probe_cmd='exec /bin/sh -c '"'"'printf "%s|%s|%s|%s\n" "$(uname -sm)" "$(stat -f -c %T "$HOME")" "$(ls /sys/fs/cgroup | wc -l)" "$(getent passwd root | cut -d: -f7)"'"'"
probe_check() { # N OUTPUT: fails with a message when OUTPUT is not right for host N
	local n=$1 out=$2 arch fstype ncg shell
	IFS='|' read -r arch fstype ncg shell <<<"$out"
	if [ "$n" -eq 5 ]; then
		[ "$arch" = "Linux aarch64" ] || { echo "h5: uname -sm says '$arch', want 'Linux aarch64'"; return 1; }
	else
		[ "$arch" = "$(uname -sm)" ] || { echo "h$n: uname -sm says '$arch'"; return 1; }
	fi
	[ "$fstype" = tmpfs ] || { echo "h$n: home is on '$fstype', want tmpfs"; return 1; }
	if [ "$n" -eq 6 ]; then
		[ "$ncg" = 0 ] || { echo "h6: /sys/fs/cgroup holds $ncg entries, want 0"; return 1; }
		[ "$shell" = /usr/bin/tcsh ] || { echo "h6: root's login shell is '$shell', want /usr/bin/tcsh"; return 1; }
	fi
}

# wait_ready N: waits until host N answers over ssh, checking its quirks.
wait_ready() {
	local n=$1 ip out pid deadline=$((SECONDS + READY_TIMEOUT_S))
	ip=$(host_ip "$n")
	pid=$(cat "$DIR/h$n/sshd.pid")
	while :; do
		# shellcheck disable=SC2046 # ssh_opts is a word list
		if out=$(ssh $(ssh_opts) -o ConnectTimeout=1 "root@$ip" "$probe_cmd" 2>&1); then
			probe_check "$n" "$out"
			return
		fi
		if ! alive "$pid"; then
			echo "h$n: sshd ($pid) exited; $DIR/h$n/start.log and sshd.log say:"
			cat "$DIR/h$n/start.log" "$DIR/h$n/sshd.log" 2>/dev/null || true
			return 1
		fi
		if [ "$SECONDS" -ge "$deadline" ]; then
			echo "h$n ($ip) did not answer over ssh within ${READY_TIMEOUT_S} s; last: $out"
			return 1
		fi
		sleep 0.05
	done
}

up_failed() {
	local rc=$?
	[ "$rc" -eq 0 ] && return
	echo "sshnet: up failed; taking down what it started (logs stay in $DIR/h*)" >&2
	cmd_down >&2 || true
	exit "$rc"
}

cmd_up() {
	[[ "$ID" =~ ^[0-9]$ ]] || die "ID must be 0..9, got '$ID'"
	local start=$EPOCHREALTIME home n br
	home=$(home_of_root)

	if [ -e "$DIR/state" ]; then
		echo "sshnet: $DIR holds a previous network; taking it down first"
		cmd_down
	fi
	ensure_packages

	br=$(bridge_name)
	if ip link show "$br" >/dev/null 2>&1; then
		die "bridge $br exists but is not recorded in $DIR: another network with ID $ID runs (or a stale one: scripts/sshnet.sh down on its DIR, or delete $br and namespaces mr${ID}h*)"
	fi
	for n in $(seq 1 "$NHOSTS"); do
		if [ -e "/run/netns/$(ns_name "$n")" ] || ip link show "$(veth_name "$n")" >/dev/null 2>&1; then
			die "namespace $(ns_name "$n") or link $(veth_name "$n") exists but is not recorded in $DIR: another network with ID $ID runs"
		fi
	done

	# From here on `down` can undo whatever got created.
	echo "ID=$ID" >"$DIR/state"
	trap up_failed EXIT

	# Keys.
	rm -f "$DIR/id_ed25519" "$DIR/id_ed25519.pub" "$DIR/wrong_key" "$DIR/wrong_key.pub" "$DIR/user_ca" "$DIR/user_ca.pub"
	ssh-keygen -q -t ed25519 -N '' -C sshnet-client -f "$DIR/id_ed25519"
	ssh-keygen -q -t ed25519 -N '' -C sshnet-wrong -f "$DIR/wrong_key"
	# Every machine accepts user certificates this CA signs.
	ssh-keygen -q -t ed25519 -N '' -C sshnet-user-ca -f "$DIR/user_ca"
	cp "$DIR/id_ed25519.pub" "$DIR/authorized_keys"
	: >"$DIR/known_hosts"
	for n in $(seq 1 "$NHOSTS"); do
		rm -rf "$DIR/h$n"
		mkdir -p "$DIR/h$n"
		ssh-keygen -q -t ed25519 -N '' -C "sshnet-h$n" -f "$DIR/h$n/hostkey"
		echo "$(host_ip "$n") $(cut -d' ' -f1,2 "$DIR/h$n/hostkey.pub")" >>"$DIR/known_hosts"
		write_sshd_config "$n"
	done
	# h1's entry carries h2's key.
	{
		echo "$(host_ip 1) $(cut -d' ' -f1,2 "$DIR/h2/hostkey.pub")"
		grep -v "^$(host_ip 1) " "$DIR/known_hosts"
	} >"$DIR/known_hosts_wrong"
	write_fakearch

	# Network.
	ip link add "$br" type bridge
	ip addr add "10.99.$ID.1/24" dev "$br"
	ip link set "$br" up
	for n in $(seq 1 "$NHOSTS"); do
		local ns veth
		ns=$(ns_name "$n")
		veth=$(veth_name "$n")
		ip netns add "$ns"
		ip link add "$veth" type veth peer name eth0 netns "$ns"
		ip link set "$veth" master "$br" up
		ip -n "$ns" addr add "$(host_ip "$n")/24" dev eth0
		ip -n "$ns" link set eth0 up
		ip -n "$ns" link set lo up
	done
	local rule
	while read -r rule; do
		# shellcheck disable=SC2086 # the rule is a word list
		iptables -C $rule 2>/dev/null || iptables -I ${rule%% *} 1 ${rule#* }
	done < <(iptables_rules)

	# Machines.
	mkdir -p /run/sshd
	for n in $(seq 1 "$NHOSTS"); do
		start_sshd "$n" "$home"
	done
	local waits=() failed=0
	for n in $(seq 1 "$NHOSTS"); do
		wait_ready "$n" >"$DIR/h$n/ready.log" 2>&1 &
		waits+=("$!")
	done
	for n in $(seq 1 "$NHOSTS"); do
		if ! wait "${waits[$((n - 1))]}"; then
			cat "$DIR/h$n/ready.log" >&2
			failed=1
		fi
	done
	[ "$failed" -eq 0 ] || die "not every machine came up"

	{
		echo "SSHNET_DIR=$DIR"
		echo "SSHNET_ID=$ID"
		echo "SSHNET_USER=root"
		echo "SSHNET_KEY=$DIR/id_ed25519"
		echo "SSHNET_WRONG_KEY=$DIR/wrong_key"
		echo "SSHNET_USER_CA=$DIR/user_ca"
		echo "SSHNET_KNOWN_HOSTS=$DIR/known_hosts"
		echo "SSHNET_KNOWN_HOSTS_WRONG=$DIR/known_hosts_wrong"
		for n in $(seq 1 "$NHOSTS"); do
			echo "SSHNET_H$n=$(host_ip "$n")"
		done
		echo "SSHNET_UNREACHABLE=10.99.$ID.99"
	} >"$DIR/sshnet.env"
	trap - EXIT
	echo "sshnet: up (ID $ID, $DIR/sshnet.env) in $(elapsed "$start") s"
}

# ---------------------------------------------------------------- main

[ "$#" -ge 2 ] || usage
[ "$(id -u)" -eq 0 ] || die "must run as root (network namespaces, mounts, iptables)"
CMD=$1
DIR=$2
ID=${3:-0}
case "$CMD" in
up)
	[ "$#" -le 3 ] || usage
	DIR=$(realpath -m "$DIR")
	check_outside_home
	mkdir -p "$DIR"
	DIR=$(cd "$DIR" && pwd -P)
	check_outside_home
	[[ "$DIR" =~ ^[A-Za-z0-9._/+-]+$ ]] || die "DIR ($DIR) may hold only letters, digits and ._/+- (it goes unquoted into sshd_config and sshnet.env)"
	cmd_up
	;;
down)
	[ "$#" -eq 2 ] || usage
	if [ ! -d "$DIR" ]; then
		echo "sshnet: nothing to stop: $DIR does not exist"
		exit 0
	fi
	DIR=$(cd "$DIR" && pwd -P)
	cmd_down
	;;
*) usage ;;
esac
