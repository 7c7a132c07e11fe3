// Package sshtest gives tests the simulated machines that scripts/sshnet.sh starts.
//
// The network is six OpenSSH servers, each in its own network namespace
// with its own address, host key and home directory (see
// docs/testing-ssh.md). Start it as root with
//
//	scripts/sshnet.sh up DIR
//
// and point the tests at it with MEADOWRUN_SSHNET=DIR. Without that
// variable the tests that call [Open] skip, unless
// MEADOWRUN_REQUIRE_SSHNET=1 makes them fail instead (CI sets it).
package sshtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/meadowrun-go/meadowrun/internal/envfile"
)

// EnvDir names the environment variable that holds the DIR given to
// scripts/sshnet.sh up.
const EnvDir = "MEADOWRUN_SSHNET"

// EnvRequire names the environment variable that, set to 1, makes [Open]
// fail rather than skip when the network is not configured.
const EnvRequire = "MEADOWRUN_REQUIRE_SSHNET"

// Net describes a running network of simulated machines, as recorded in
// DIR/sshnet.env by scripts/sshnet.sh.
type Net struct {
	// Dir is the state directory given to scripts/sshnet.sh up.
	Dir string
	// ID tells this network's bridge, namespaces and subnet
	// (10.99.ID.0/24) from those of other copies on the same machine.
	ID int
	// User is the account the tests log in as on every machine.
	User string
	// Key is the private key every machine accepts.
	Key string
	// WrongKey is a private key no machine accepts.
	WrongKey string
	// UserCA is the private key of the certificate authority whose user
	// certificates every machine accepts (sshd's TrustedUserCAKeys).
	UserCA string
	// KnownHosts is a known_hosts file listing every machine's host key
	// by IP address.
	KnownHosts string
	// KnownHostsWrong is KnownHosts with h1's entry carrying h2's key,
	// so that connecting to h1 fails the host key check.
	KnownHostsWrong string
	// Hosts maps a machine's name ("h1" .. "h6") to its IP address.
	Hosts map[string]string
	// Unreachable is an address in the network's subnet that no machine
	// owns.
	Unreachable string
}

// Open returns the network that $MEADOWRUN_SSHNET describes. When the
// variable is unset it skips the test with a message saying how to start
// the network, or fails it when $MEADOWRUN_REQUIRE_SSHNET is 1.
func Open(t testing.TB) *Net {
	t.Helper()
	dir := os.Getenv(EnvDir)
	if dir == "" {
		msg := "sshtest: no simulated SSH machines: start them as root with " +
			"`scripts/sshnet.sh up DIR` (DIR outside $HOME), then set " + EnvDir + "=DIR"
		if os.Getenv(EnvRequire) == "1" {
			t.Fatal(msg + " (" + EnvRequire + "=1 forbids skipping)")
		}
		t.Skip(msg)
	}
	n, err := Load(dir)
	if err != nil {
		t.Fatalf("sshtest: %s=%s: %v", EnvDir, dir, err)
	}
	return n
}

// Load reads the network that scripts/sshnet.sh started in dir (for
// programs other than tests, such as benchmarks).
func Load(dir string) (*Net, error) {
	if dir == "" {
		return nil, fmt.Errorf("sshtest: no network directory: start one with scripts/sshnet.sh up DIR and set %s=DIR", EnvDir)
	}
	return load(filepath.Join(dir, "sshnet.env"))
}

// load parses an sshnet.env file.
func load(path string) (*Net, error) {
	vars, err := envfile.Read(path)
	if err != nil {
		return nil, err
	}
	get := func(k string) string {
		v, ok := vars[k]
		if !ok && err == nil {
			err = fmt.Errorf("%s: no %s", path, k)
		}
		return v
	}
	n := &Net{
		Dir:             get("SSHNET_DIR"),
		User:            get("SSHNET_USER"),
		Key:             get("SSHNET_KEY"),
		WrongKey:        get("SSHNET_WRONG_KEY"),
		UserCA:          get("SSHNET_USER_CA"),
		KnownHosts:      get("SSHNET_KNOWN_HOSTS"),
		KnownHostsWrong: get("SSHNET_KNOWN_HOSTS_WRONG"),
		Unreachable:     get("SSHNET_UNREACHABLE"),
		Hosts:           map[string]string{},
	}
	for i := 1; i <= 6; i++ {
		n.Hosts["h"+strconv.Itoa(i)] = get("SSHNET_H" + strconv.Itoa(i))
	}
	id := get("SSHNET_ID")
	if err != nil {
		return nil, err
	}
	if n.ID, err = strconv.Atoi(id); err != nil || n.ID < 0 || n.ID > 9 {
		return nil, fmt.Errorf("%s: bad SSHNET_ID %q", path, id)
	}
	return n, nil
}

// Addr returns the host:port address of the machine host ("h1" .. "h6"),
// like "10.99.0.11:22".
func (n *Net) Addr(host string) string {
	ip, ok := n.Hosts[host]
	if !ok {
		panic(fmt.Sprintf("sshtest: no machine %q", host))
	}
	return ip + ":22"
}

// veth returns the root-side end of the link of machine host.
func (n *Net) veth(t testing.TB, host string) string {
	t.Helper()
	if _, ok := n.Hosts[host]; !ok {
		t.Fatalf("sshtest: no machine %q", host)
	}
	return fmt.Sprintf("mr%dv%s", n.ID, strings.TrimPrefix(host, "h"))
}

// LinkDown cuts machine host off the network by setting its link down.
// It registers no cleanup: call [Net.LinkUp] to reconnect the machine.
func (n *Net) LinkDown(t testing.TB, host string) {
	t.Helper()
	n.ip(t, "link", "set", n.veth(t, host), "down")
}

// LinkUp reconnects machine host after [Net.LinkDown].
func (n *Net) LinkUp(t testing.TB, host string) {
	t.Helper()
	n.ip(t, "link", "set", n.veth(t, host), "up")
}

func (n *Net) ip(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("sshtest: ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// SSHArgs returns the arguments of the system ssh client that log in to
// machine host as the tests' user with the tests' key, checking the host
// key against KnownHosts; append the remote command.
func (n *Net) SSHArgs(host string) []string {
	ip, ok := n.Hosts[host]
	if !ok {
		panic(fmt.Sprintf("sshtest: no machine %q", host))
	}
	return []string{
		"-F", "none",
		"-i", n.Key,
		"-o", "IdentitiesOnly=yes",
		"-o", "IdentityAgent=none",
		"-o", "UserKnownHostsFile=" + n.KnownHosts,
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=yes",
		"-o", "BatchMode=yes",
		"-o", "ConnectTimeout=5",
		"-o", "LogLevel=ERROR",
		n.User + "@" + ip,
	}
}

// Run runs the shell command on machine host as the tests' user, through
// the system ssh client, with /bin/sh (h6's login shell is tcsh), and
// returns its combined output. It fails the
// test, showing the output, when the command fails.
func (n *Net) Run(t testing.TB, host, command string) string {
	t.Helper()
	if _, ok := n.Hosts[host]; !ok {
		t.Fatalf("sshtest: no machine %q", host)
	}
	out, err := n.RunE(host, command)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// RunE is Run returning an error instead of failing a test.
func (n *Net) RunE(host, command string) (string, error) {
	// No t.Context(): it is canceled before cleanups, which may use Run.
	sh := "exec /bin/sh -c '" + strings.ReplaceAll(command, "'", `'\''`) + "'"
	out, err := exec.Command("ssh", append(n.SSHArgs(host), sh)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("sshtest: on %s: %s: %w\n%s", host, command, err, out)
	}
	return string(out), nil
}
