# Shared by the test component scripts (sourced, not run): pinned Debian
# packages installed without starting their daemons, and timing.

# pkg_ok NAME VERSION: true when exactly that version is installed.
pkg_ok() {
	[ "$(dpkg-query -W -f='${Status} ${Version}' "$1" 2>/dev/null || true)" = "install ok installed $2" ]
}

# install_without_daemons PACKAGE...: apt-get update and install. The
# packages' maintainer scripts would start system daemons (sshd on every
# address, dockerd, a registry); policy-rc.d exit status 101 forbids that.
# Any policy already in place is restored afterwards. Returns apt-get's
# status.
install_without_daemons() {
	local policy=/usr/sbin/policy-rc.d saved="" rc=0
	if [ -e "$policy" ]; then
		saved=$(mktemp)
		cp -p "$policy" "$saved"
	fi
	printf '#!/bin/sh\nexit 101\n' >"$policy"
	chmod 755 "$policy"
	{
		DEBIAN_FRONTEND=noninteractive apt-get update -q &&
			DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
	} || rc=$?
	if [ -n "$saved" ]; then
		cp -p "$saved" "$policy"
		rm -f "$saved"
	else
		rm -f "$policy"
	fi
	return "$rc"
}

# elapsed START: seconds since START (an $EPOCHREALTIME), like 1.23.
elapsed() {
	local us=$((${EPOCHREALTIME/./} - ${1/./}))
	printf '%d.%02d' $((us / 1000000)) $((us % 1000000 / 10000))
}
