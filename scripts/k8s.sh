#!/usr/bin/env bash
# Starts and stops a real single-node Kubernetes cluster for the tests of
# the Kubernetes host (docs/testing-kubernetes.md): kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet and kube-proxy built from
# the k8s.io/kubernetes Go module (the wrapper module scripts/k8stools pins
# the version), etcd, containerd, runc and the CNI plugins from Debian, and
# the pods' images built FROM scratch and imported into containerd.
#
# Usage:
#   scripts/k8s.sh build           build the binaries (cached) and nothing else
#   scripts/k8s.sh up DIR          build if needed, start the cluster, state in DIR
#   scripts/k8s.sh down DIR        stop everything recorded in DIR, by PID
#
# The binaries are cached in ${MEADOWRUN_K8S_CACHE:-$HOME/.cache/meadowrun-k8s}/VERSION
# and rebuilt only when scripts/k8stools changes. After `up`, DIR/k8s.env
# describes the cluster (KEY=VALUE lines: KUBECONFIG, CONTEXT, NAMESPACE,
# NODE, IMAGE, ...); tests find it through MEADOWRUN_K8S=DIR. The cluster's
# containerd is a separate instance (own socket, root and state under DIR)
# from any Docker engine on the machine. Needs root; installs the pinned
# Debian packages with apt-get when they are missing.
set -euo pipefail
# shellcheck source=lib/packages.sh
. "$(dirname "$0")/lib/packages.sh"

readonly K8S_VERSION=1.37.2
readonly CONTAINERD_VERSION=1.6.20~ds1-1+deb12u3
readonly RUNC_VERSION=1.1.5+ds1-1+deb12u1
readonly CNI_VERSION=1.1.1+ds1-3+b5
readonly ETCD_VERSION=3.4.23-4+b4
readonly BUSYBOX_VERSION=1:1.35.0-4+deb12u1+b1
readonly IPTABLES_VERSION=1.8.9-2
readonly NAMESPACE=meadowrun-test
# The fake GPUs the node advertises, so that scheduling of GPU requests is
# tested without a GPU.
readonly FAKE_GPUS=2

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly HERE
readonly TOOLS=$HERE/k8stools
CACHE=${MEADOWRUN_K8S_CACHE:-$HOME/.cache/meadowrun-k8s}/v$K8S_VERSION
readonly CACHE
readonly BIN=$CACHE/bin

die() {
	echo "k8s: $*" >&2
	exit 1
}
log() { echo "k8s: [$(date +%T)] $*"; }

usage() {
	echo "usage: $0 build | $0 up DIR | $0 down DIR" >&2
	exit 2
}

# ---------------------------------------------------------------- packages

ensure_packages() {
	local need=()
	pkg_ok containerd "$CONTAINERD_VERSION" || need+=("containerd=$CONTAINERD_VERSION")
	pkg_ok runc "$RUNC_VERSION" || need+=("runc=$RUNC_VERSION")
	pkg_ok containernetworking-plugins "$CNI_VERSION" || need+=("containernetworking-plugins=$CNI_VERSION")
	pkg_ok etcd-server "$ETCD_VERSION" || need+=("etcd-server=$ETCD_VERSION")
	pkg_ok etcd-client "$ETCD_VERSION" || need+=("etcd-client=$ETCD_VERSION")
	pkg_ok busybox-static "$BUSYBOX_VERSION" || need+=("busybox-static=$BUSYBOX_VERSION")
	pkg_ok iptables "$IPTABLES_VERSION" || need+=("iptables=$IPTABLES_VERSION")
	# The Python pods' image copies the machine's own python3 (Debian's,
	# whatever its version: the SSH machines run it too).
	dpkg-query -W python3.11-minimal libpython3.11-stdlib >/dev/null 2>&1 || need+=(python3.11-minimal libpython3.11-stdlib)
	command -v ip >/dev/null || need+=(iproute2)
	command -v openssl >/dev/null || need+=(openssl)
	command -v curl >/dev/null || need+=(curl)
	[ "${#need[@]}" -eq 0 ] && return 0
	log "installing ${need[*]}"
	# The packages' maintainer scripts would start system etcd and
	# containerd services: install_without_daemons forbids that.
	local rc=0
	install_without_daemons "${need[@]}" || rc=$?
	[ "$rc" -eq 0 ] || die "apt-get install failed"
}

# ------------------------------------------------------------------ build

# build compiles the five binaries from the wrapper module, once per
# version of the module's go.mod and go.sum.
build() {
	local stamp want
	want=$(cat "$TOOLS/go.mod" "$TOOLS/go.sum" | sha256sum | cut -c1-16)
	stamp=$BIN/.built-$want
	[ -f "$stamp" ] && return 0
	log "building Kubernetes v$K8S_VERSION (about 5 minutes on 2 cores, once)"
	local t0 ld="" p
	t0=$(date +%s)
	for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ld="$ld -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=${K8S_VERSION%%.*} -X $p.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2)"
		ld="$ld -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
	done
	mkdir -p "$BIN"
	rm -f "$BIN"/.built-*
	(cd "$TOOLS" && GOFLAGS=-buildvcs=false CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $ld" -o "$BIN/" \
		k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
		k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy)
	touch "$stamp"
	log "built in $(($(date +%s) - t0))s"
}

# ----------------------------------------------------------------- images

# oci_image REF ROOTFS OUT.tar [ENTRYPOINT]: a single-layer OCI image
# archive of the directory ROOTFS, for `ctr images import`.
oci_image() {
	local ref=$1 root=$2 out=$3 entry=${4:-} w
	w=$(mktemp -d)
	mkdir -p "$w/blobs/sha256"
	tar -C "$root" --numeric-owner --owner=0 --group=0 --sort=name --mtime=@0 -cf "$w/layer.tar" .
	local ld ls cfg cd cs man md ms
	ld=$(sha256sum "$w/layer.tar" | cut -d' ' -f1)
	ls=$(stat -c %s "$w/layer.tar")
	mv "$w/layer.tar" "$w/blobs/sha256/$ld"
	local ep=""
	[ -n "$entry" ] && ep=",\"Entrypoint\":[\"$entry\"]"
	cfg="{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Env\":[\"PATH=/bin\"]$ep},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"sha256:$ld\"]}}"
	printf '%s' "$cfg" >"$w/cfg"
	cd=$(sha256sum "$w/cfg" | cut -d' ' -f1)
	cs=$(stat -c %s "$w/cfg")
	mv "$w/cfg" "$w/blobs/sha256/$cd"
	man="{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$cd\",\"size\":$cs},\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"sha256:$ld\",\"size\":$ls}]}"
	printf '%s' "$man" >"$w/man"
	md=$(sha256sum "$w/man" | cut -d' ' -f1)
	ms=$(stat -c %s "$w/man")
	mv "$w/man" "$w/blobs/sha256/$md"
	printf '{"imageLayoutVersion":"1.0.0"}' >"$w/oci-layout"
	printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
		"$md" "$ms" "$ref" "${ref##*:}" >"$w/index.json"
	tar -C "$w" -cf "$out" oci-layout index.json blobs
	rm -rf "$w"
}

# images builds the pause image and the base image of worker pods: a
# static busybox (sh, cat, ...) and the C library, so that programs built
# with cgo run in it too; and the Python image, the base and python3.
images() {
	local out=$D/images r
	mkdir -p "$out"
	r=$(mktemp -d)
	mkdir -p "$r/pause"
	cat >"$r/pause/main.go" <<'EOT'
// pause blocks until SIGINT or SIGTERM and reaps zombies.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 8)
	signal.Notify(c, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range c {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			if pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
}
EOT
	printf 'module pause\n\ngo 1.22\n' >"$r/pause/go.mod"
	mkdir -p "$r/pauseroot"
	(cd "$r/pause" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -ldflags "-s -w" -o "$r/pauseroot/pause" .)
	oci_image localhost/pause:local "$r/pauseroot" "$out/pause.tar" /pause

	local b=$r/base
	mkdir -p "$b/bin" "$b/tmp" "$b/etc" "$b/lib64" "$b/lib/x86_64-linux-gnu" "$b/root"
	chmod 1777 "$b/tmp"
	cp /bin/busybox "$b/bin/busybox"
	local a
	for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$b/bin/$a"; done
	cp -L /lib64/ld-linux-x86-64.so.2 "$b/lib64/"
	for a in libc.so.6 libpthread.so.0 libdl.so.2 libm.so.6 libresolv.so.2; do
		[ -e "/lib/x86_64-linux-gnu/$a" ] && cp -L "/lib/x86_64-linux-gnu/$a" "$b/lib/x86_64-linux-gnu/"
	done
	printf 'root:x:0:0:root:/root:/bin/sh\n' >"$b/etc/passwd"
	printf 'root:x:0:\n' >"$b/etc/group"
	oci_image "$BASE_IMAGE" "$b" "$out/base.tar"

	# The image of Python worker pods: the base image and Debian's
	# python3 (interpreter and standard library, from the packages
	# below, and the shared libraries they load), python3 in /bin.
	local p=$r/python f
	cp -a "$b" "$p"
	dpkg -L python3.11-minimal libpython3.11-minimal libpython3.11-stdlib |
		while read -r f; do
			case $f in /usr/share/*) continue ;; esac
			if [ -f "$f" ] && [ ! -L "$f" ]; then echo "${f#/}"; fi
		done | tar -C / -cf - -T - | tar -C "$p" -xf -
	{ ldd /usr/bin/python3.11; for f in /usr/lib/python3.11/lib-dynload/*.so; do ldd "$f"; done; } |
		awk '$2 == "=>" && $3 ~ /^\// { print substr($3, 2) }' | sort -u | tar -C / -chf - -T - | tar -C "$p" -xf -
	ln -s /usr/bin/python3.11 "$p/bin/python3"
	oci_image "$PYTHON_IMAGE" "$p" "$out/python.tar"
	rm -rf "$r"
}

# ------------------------------------------------------------------ cluster

apiget() { # PATH: GET from the API server as the admin
	curl -sf --cacert "$D/pki/ca.crt" --cert "$D/pki/admin.crt" --key "$D/pki/admin.key" "https://127.0.0.1:$API_PORT$1"
}

wait_for() { # SECONDS WHAT CMD...
	local t=$1 what=$2 i
	shift 2
	for ((i = 0; i < t * 4; i++)); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.25
	done
	log "timed out waiting for $what; logs in $D/logs"
	return 1
}

start() { # NAME CMD...: in the background, pid in DIR/run/NAME.pid
	local n=$1
	shift
	nohup "$@" >"$D/logs/$n.log" 2>&1 </dev/null &
	echo $! >"$D/run/$n.pid"
}

kubeconfig() { # NAME: DIR/NAME.kubeconfig with the client cert NAME
	local P=$D/pki
	cat >"$D/$1.kubeconfig" <<EOT
apiVersion: v1
kind: Config
clusters:
- name: meadowrun-test
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $(base64 -w0 "$P/ca.crt")
users:
- name: $1
  user:
    client-certificate-data: $(base64 -w0 "$P/$1.crt")
    client-key-data: $(base64 -w0 "$P/$1.key")
contexts:
- name: meadowrun-test
  context: {cluster: meadowrun-test, user: $1, namespace: $NAMESPACE}
current-context: meadowrun-test
EOT
}

pki() {
	local P=$D/pki
	mkdir -p "$P"
	[ -f "$P/ca.crt" ] && return 0
	(
		cd "$P"
		openssl genrsa -out ca.key 2048 2>/dev/null
		openssl req -x509 -new -nodes -key ca.key -sha256 -days 3650 -subj "/CN=meadowrun-test-ca" -out ca.crt
		openssl genrsa -out sa.key 2048 2>/dev/null
		openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
		cert() { # NAME SUBJECT EXTKEYUSAGE [SAN]
			local n=$1 subj=$2 eku=$3 san=${4:-}
			openssl genrsa -out "$n.key" 2048 2>/dev/null
			openssl req -new -key "$n.key" -subj "$subj" -out "$n.csr"
			{
				echo "basicConstraints=CA:FALSE"
				echo "keyUsage=critical,digitalSignature,keyEncipherment"
				echo "extendedKeyUsage=$eku"
				if [ -n "$san" ]; then echo "subjectAltName=$san"; fi
			} >"$n.ext"
			openssl x509 -req -in "$n.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -sha256 -extfile "$n.ext" -out "$n.crt" 2>/dev/null
		}
		cert apiserver "/CN=kube-apiserver" serverAuth \
			"DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,DNS:$NODE,IP:127.0.0.1,IP:$SVC_IP,IP:$HOST_IP"
		cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
		cert admin "/O=system:masters/CN=kubernetes-admin" clientAuth
		cert controller-manager "/CN=system:kube-controller-manager" clientAuth
		cert scheduler "/CN=system:kube-scheduler" clientAuth
		cert kube-proxy "/CN=system:kube-proxy" clientAuth
		cert kubelet "/O=system:nodes/CN=system:node:$NODE" clientAuth
		cert kubelet-serving "/CN=$NODE" serverAuth "DNS:$NODE,DNS:localhost,IP:127.0.0.1,IP:$HOST_IP"
		# A user without any RBAC binding, for the tests of forbidden requests.
		cert nobody "/CN=meadowrun-nobody" clientAuth
	)
	local n
	for n in admin controller-manager scheduler kube-proxy kubelet nobody; do kubeconfig $n; done
}

configs() {
	mkdir -p "$D/cni/net.d" "$D/containerd"
	cat >"$D/containerd/config.toml" <<EOT
version = 2
root = "$D/containerd/root"
state = "$D/containerd/state"
[grpc]
  address = "$CTR_SOCK"
[ttrpc]
  address = "$CTR_SOCK.ttrpc"
[debug]
  address = "$CTR_SOCK.debug"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pause:local"
  # Without CAP_SYS_RESOURCE runc cannot lower oom_score_adj (the sandbox asks for -998).
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$D/cni/net.d"
EOT
	cat >"$D/cni/net.d/10-meadowrun.conflist" <<EOT
{"cniVersion":"0.4.0","name":"meadowrun-k8s","plugins":[
 {"type":"bridge","bridge":"$BRIDGE","isGateway":true,"ipMasq":true,"hairpinMode":true,
  "ipam":{"type":"host-local","dataDir":"$D/cni/ipam","ranges":[[{"subnet":"$NODE_POD_CIDR"}]],"routes":[{"dst":"0.0.0.0/0"}]}},
 {"type":"portmap","capabilities":{"portMappings":true}}]}
EOT
	cat >"$D/kubelet-config.yaml" <<EOT
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $D/pki/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$CTR_SOCK
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
tlsCertFile: $D/pki/kubelet-serving.crt
tlsPrivateKeyFile: $D/pki/kubelet-serving.key
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
podLogsDir: $D/pod-logs
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
EOT
	cat >"$D/kube-proxy-config.yaml" <<EOT
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $D/kube-proxy.kubeconfig}
mode: iptables
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE
conntrack: {maxPerCore: 0}
metricsBindAddress: 127.0.0.1:10249
EOT
}

settings() {
	NODE=$(hostname | tr '[:upper:]' '[:lower:]')
	HOST_IP=$(ip -4 route get 1.1.1.1 2>/dev/null | awk '{for (i = 1; i <= NF; i++) if ($i == "src") { print $(i + 1); exit }}')
	HOST_IP=${HOST_IP:-127.0.0.1}
	SVC_CIDR=10.96.0.0/12 SVC_IP=10.96.0.1 POD_CIDR=10.244.0.0/16 NODE_POD_CIDR=10.244.0.0/24
	BRIDGE=mrk8s0
	API_PORT=6443
	ETCD_PORT=23790
	CTR_SOCK=$D/containerd/containerd.sock
	BASE_IMAGE=localhost/meadowrun-base:v1
	PYTHON_IMAGE=localhost/meadowrun-python:v1
}

up() {
	ensure_packages
	build
	mkdir -p "$D/logs" "$D/run"
	[ -f "$D/run/kube-apiserver.pid" ] && die "$D already holds a cluster: run $0 down $D first"
	local t0
	t0=$(date +%s)
	settings
	export PATH=$BIN:$PATH
	sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1 2>/dev/null || true
	pki
	configs
	images
	start etcd etcd --name meadowrun --data-dir "$D/etcd" --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
		--advertise-client-urls "http://127.0.0.1:$ETCD_PORT" --listen-peer-urls http://127.0.0.1:23800 \
		--initial-advertise-peer-urls http://127.0.0.1:23800 --initial-cluster meadowrun=http://127.0.0.1:23800
	start containerd containerd --config "$D/containerd/config.toml"
	wait_for 30 containerd ctr -a "$CTR_SOCK" version
	local t
	for t in "$D"/images/*.tar; do ctr -a "$CTR_SOCK" -n k8s.io images import "$t" >/dev/null; done
	wait_for 30 etcd curl -sf "http://127.0.0.1:$ETCD_PORT/health"
	local P=$D/pki
	start kube-apiserver kube-apiserver --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
		--bind-address=0.0.0.0 --secure-port=$API_PORT --advertise-address="$HOST_IP" \
		--service-cluster-ip-range=$SVC_CIDR --allow-privileged=true \
		--client-ca-file="$P/ca.crt" --tls-cert-file="$P/apiserver.crt" --tls-private-key-file="$P/apiserver.key" \
		--kubelet-client-certificate="$P/apiserver-kubelet-client.crt" --kubelet-client-key="$P/apiserver-kubelet-client.key" \
		--service-account-issuer=https://kubernetes.default.svc.cluster.local \
		--service-account-key-file="$P/sa.pub" --service-account-signing-key-file="$P/sa.key" \
		--authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction
	wait_for 120 kube-apiserver apiget /readyz
	start kube-controller-manager kube-controller-manager --kubeconfig="$D/controller-manager.kubeconfig" \
		--authentication-kubeconfig="$D/controller-manager.kubeconfig" --authorization-kubeconfig="$D/controller-manager.kubeconfig" \
		--bind-address=127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
		--service-account-private-key-file="$P/sa.key" --root-ca-file="$P/ca.crt" \
		--cluster-signing-cert-file="$P/ca.crt" --cluster-signing-key-file="$P/ca.key" \
		--allocate-node-cidrs=true --cluster-cidr=$POD_CIDR --service-cluster-ip-range=$SVC_CIDR
	start kube-scheduler kube-scheduler --kubeconfig="$D/scheduler.kubeconfig" \
		--authentication-kubeconfig="$D/scheduler.kubeconfig" --authorization-kubeconfig="$D/scheduler.kubeconfig" \
		--bind-address=127.0.0.1 --leader-elect=false
	start kubelet kubelet --config="$D/kubelet-config.yaml" --kubeconfig="$D/kubelet.kubeconfig" \
		--root-dir="$D/kubelet" --node-ip="$HOST_IP" --hostname-override="$NODE"
	start kube-proxy kube-proxy --config="$D/kube-proxy-config.yaml"
	wait_for 180 "node Ready" sh -c "curl -sf --cacert '$P/ca.crt' --cert '$P/admin.crt' --key '$P/admin.key' \
		https://127.0.0.1:$API_PORT/api/v1/nodes/$NODE | tr -d ' \\n' | grep -q '\"type\":\"Ready\",\"status\":\"True\"'"
	# The test namespace, and fake GPUs on the node (an extended resource
	# the kubelet keeps in the node's capacity).
	curl -sf --cacert "$P/ca.crt" --cert "$P/admin.crt" --key "$P/admin.key" -H 'Content-Type: application/json' \
		-X POST "https://127.0.0.1:$API_PORT/api/v1/namespaces" -d "{\"metadata\":{\"name\":\"$NAMESPACE\"}}" >/dev/null
	curl -sf --cacert "$P/ca.crt" --cert "$P/admin.crt" --key "$P/admin.key" -H 'Content-Type: application/json-patch+json' \
		-X PATCH "https://127.0.0.1:$API_PORT/api/v1/nodes/$NODE/status" \
		-d "[{\"op\":\"add\",\"path\":\"/status/capacity/nvidia.com~1gpu\",\"value\":\"$FAKE_GPUS\"}]" >/dev/null
	wait_for 60 "default service account" apiget "/api/v1/namespaces/$NAMESPACE/serviceaccounts/default"
	cat >"$D/k8s.env" <<EOT
KUBECONFIG=$D/admin.kubeconfig
NOBODY_KUBECONFIG=$D/nobody.kubeconfig
CONTEXT=meadowrun-test
NAMESPACE=$NAMESPACE
NODE=$NODE
IMAGE=$BASE_IMAGE
PYTHON_IMAGE=$PYTHON_IMAGE
FAKE_GPUS=$FAKE_GPUS
SERVER=https://127.0.0.1:$API_PORT
CONTAINERD_SOCK=$CTR_SOCK
EOT
	log "cluster up in $(($(date +%s) - t0))s: MEADOWRUN_K8S=$D, KUBECONFIG=$D/admin.kubeconfig"
}

stop_pid() { # NAME: SIGTERM by pid file, SIGKILL after 20 s
	local f=$D/run/$1.pid p i
	[ -f "$f" ] || return 0
	p=$(cat "$f")
	if kill "$p" 2>/dev/null; then
		for ((i = 0; i < 80; i++)); do
			kill -0 "$p" 2>/dev/null || break
			sleep 0.25
		done
		kill -9 "$p" 2>/dev/null || true
	fi
	rm -f "$f"
}

down() {
	settings
	export PATH=$BIN:$PATH
	local n c
	for n in kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do stop_pid $n; done
	# The pods' containers and their shims, while containerd still runs
	# (shims outlive containerd otherwise).
	if [ -S "$CTR_SOCK" ]; then
		for c in $(ctr -a "$CTR_SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
			ctr -a "$CTR_SOCK" -n k8s.io tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true
		done
		sleep 1
		for c in $(ctr -a "$CTR_SOCK" -n k8s.io containers ls -q 2>/dev/null); do
			ctr -a "$CTR_SOCK" -n k8s.io tasks rm -f "$c" >/dev/null 2>&1 || true
			ctr -a "$CTR_SOCK" -n k8s.io containers rm "$c" >/dev/null 2>&1 || true
		done
	fi
	stop_pid containerd
	# Shims of this containerd that are still there (their socket dir is ours).
	local p
	for p in /proc/[0-9]*; do
		if [ "$(cat "$p/comm" 2>/dev/null)" = containerd-shim ] && tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -q -- "-address $CTR_SOCK"; then
			kill -9 "${p#/proc/}" 2>/dev/null || true
		fi
	done
	# Mounts under DIR (pod volumes, netns, overlay roots), deepest first.
	grep " $D/" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
	grep " /run/netns/cni-" /proc/mounts | awk '{print $2}' | xargs -r -n1 umount -l 2>/dev/null || true
	# Their files, now unmounted, would stay listed by ip netns.
	for f in /run/netns/cni-*; do
		[ -e "$f" ] && ! grep -q " $f " /proc/mounts && rm -f "$f" || true
	done
	ip link del "$BRIDGE" 2>/dev/null || true
	# kube-proxy's and the kubelet's iptables chains (KUBE-*), and the CNI
	# masquerading chains of our network.
	if [ -x "$BIN/kube-proxy" ]; then "$BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true; fi
	local ipt t chains
	for ipt in iptables ip6tables; do
		$ipt -D INPUT -j KUBE-FIREWALL 2>/dev/null || true
		$ipt -D OUTPUT -j KUBE-FIREWALL 2>/dev/null || true
		for t in filter nat mangle; do
			chains=$($ipt -t $t -S 2>/dev/null | awk '/^-N KUBE-/{print $2}')
			for c in $chains; do $ipt -t $t -F "$c"; done
			for c in $chains; do $ipt -t $t -X "$c" 2>/dev/null || true; done
		done
	done
	iptables -t nat -S POSTROUTING 2>/dev/null | grep -- '"name: \\"meadowrun-k8s\\"' | sed 's/^-A/-D/' |
		while read -r rule; do eval "iptables -t nat $rule" 2>/dev/null || true; done
	rm -f "$D/k8s.env"
	log "stopped"
}

cmd=${1:-}
case "$cmd" in
build)
	build
	;;
up | down)
	[ $# -eq 2 ] || usage
	mkdir -p "$2"
	D=$(cd "$2" && pwd)
	readonly D
	"$cmd"
	;;
*) usage ;;
esac
