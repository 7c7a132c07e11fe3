package ssh_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/hosttest"
	"github.com/meadowrun-go/meadowrun/internal/sshtest"
	mrssh "github.com/meadowrun-go/meadowrun/ssh"
)

var sshWhere = meadowrun.Register("ssh.Where", func(ctx context.Context, x int) (string, error) {
	h, _ := os.Hostname()
	wd, _ := os.Getwd()
	b, _ := os.ReadFile("testdata/deploy/hello.txt")
	return strings.Join([]string{h, wd, os.Getenv("SSH_CONNECTION"), string(b)}, "|"), nil
})

// newSSH opens the given machines of the test network with its key and
// known_hosts.
func newSSH(t *testing.T, n *sshtest.Net, opts mrssh.Options, hosts ...string) *meadowrun.Host {
	t.Helper()
	var ms []string
	for _, h := range hosts {
		ms = append(ms, n.User+"@"+n.Addr(h))
	}
	return newSSHMachines(t, n, opts, ms...)
}

func newSSHMachines(t *testing.T, n *sshtest.Net, opts mrssh.Options, ms ...string) *meadowrun.Host {
	t.Helper()
	if opts.IdentityFiles == nil {
		opts.IdentityFiles = []string{n.Key}
	}
	if opts.KnownHostsFiles == nil {
		opts.KnownHostsFiles = []string{n.KnownHosts}
	}
	opts.NoAgent = true
	if opts.ConfigFile == "" {
		opts.ConfigFile = "none" // the developer's ~/.ssh/config is not the test's
	}
	if opts.Log == nil {
		opts.Log = &bytes.Buffer{}
	}
	if opts.ConnectTimeout == 0 {
		opts.ConnectTimeout = 3 * time.Second
	}
	h, err := mrssh.NewHost(ms, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func TestSSHRunsAFunctionOnAMachine(t *testing.T) {
	n := sshtest.Open(t)
	h := newSSH(t, n, mrssh.Options{}, "h1")
	ctx := context.Background()
	start := time.Now()
	got, err := meadowrun.RunFunction(ctx, sshWhere.With(1), h, &meadowrun.Options{LogDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first call %v: %s", time.Since(start), got)
	if !strings.Contains(got, n.Hosts["h1"]) {
		t.Fatalf("ran at %q, want on %s", got, n.Hosts["h1"])
	}
	start = time.Now()
	for i := 0; i < 100; i++ {
		if _, err := meadowrun.RunFunction(ctx, sshWhere.With(1), h, &meadowrun.Options{LogDir: t.TempDir()}); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("warm call %v", time.Since(start)/100)
}

func TestConformanceSSH(t *testing.T) {
	n := sshtest.Open(t)
	hosttest.Run(t, hosttest.Config{
		NewHost:      func(t *testing.T) *meadowrun.Host { return newSSH(t, n, mrssh.Options{}, "h1", "h2", "h3") },
		MillionTasks: millionTasks / 10,
	})
}

// TestConformanceSSHPython runs the suite's functions on Python workers
// of the machines' python3: hosttest's Python module travels with the
// deployment.
func TestConformanceSSHPython(t *testing.T) {
	n := sshtest.Open(t)
	hosttest.Run(t, hosttest.Config{
		NewHost:      func(t *testing.T) *meadowrun.Host { return newSSH(t, n, mrssh.Options{}, "h1", "h2") },
		MillionTasks: millionTasks / 10,
		Deployment:   meadowrun.PreinstalledInterpreter("python3", nil),
		Python:       true,
	})
}

func sshErr(t *testing.T, h *meadowrun.Host, want error, mentions ...string) {
	t.Helper()
	_, err := meadowrun.RunFunction(context.Background(), sshWhere.With(1), h, &meadowrun.Options{LogDir: t.TempDir()})
	if !errors.Is(err, want) {
		t.Fatalf("got %v, want an error wrapping %v", err, want)
	}
	for _, m := range mentions {
		if !strings.Contains(err.Error(), m) {
			t.Fatalf("error %q does not mention %q", err, m)
		}
	}
	t.Logf("%v", err)
}

func TestSSHBadMachinesAreClearErrors(t *testing.T) {
	n := sshtest.Open(t)
	t.Run("unreachable", func(t *testing.T) {
		t.Parallel()
		h, err := mrssh.NewHost([]string{"root@" + n.Unreachable}, mrssh.Options{
			IdentityFiles: []string{n.Key}, KnownHostsFiles: []string{n.KnownHosts}, NoAgent: true,
			ConnectTimeout: 2 * time.Second, Log: io.Discard})
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		sshErr(t, h, meadowrun.ErrUnreachable, n.Unreachable)
	})
	t.Run("wrong user", func(t *testing.T) {
		t.Parallel()
		hu, err := mrssh.NewHost([]string{"meadowrun-no-such-user@" + n.Addr("h1")}, mrssh.Options{
			IdentityFiles: []string{n.Key}, KnownHostsFiles: []string{n.KnownHosts}, NoAgent: true, Log: io.Discard})
		if err != nil {
			t.Fatal(err)
		}
		defer hu.Close()
		sshErr(t, hu, meadowrun.ErrAuth, n.Hosts["h1"], "meadowrun-no-such-user", "authorized_keys")
	})
	t.Run("wrong key", func(t *testing.T) {
		t.Parallel()
		h := newSSH(t, n, mrssh.Options{IdentityFiles: []string{n.WrongKey}}, "h1")
		sshErr(t, h, meadowrun.ErrAuth, n.Hosts["h1"], n.WrongKey)
	})
	t.Run("host key mismatch", func(t *testing.T) {
		t.Parallel()
		h := newSSH(t, n, mrssh.Options{KnownHostsFiles: []string{n.KnownHostsWrong}}, "h1")
		sshErr(t, h, meadowrun.ErrHostKey, n.Hosts["h1"], "different key", "ssh-keygen -R")
	})
	t.Run("unknown host key, then trust on first use", func(t *testing.T) {
		t.Parallel()
		kh := filepath.Join(t.TempDir(), "known_hosts")
		h := newSSH(t, n, mrssh.Options{KnownHostsFiles: []string{kh}}, "h2")
		sshErr(t, h, meadowrun.ErrHostKey, n.Hosts["h2"], "not in", "TrustOnFirstUse")
		h = newSSH(t, n, mrssh.Options{KnownHostsFiles: []string{kh}, TrustOnFirstUse: true}, "h2")
		if _, err := meadowrun.RunFunction(context.Background(), sshWhere.With(1), h, &meadowrun.Options{LogDir: t.TempDir()}); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(kh)
		if !strings.Contains(string(b), n.Hosts["h2"]+" ssh-ed25519 ") {
			t.Fatalf("known_hosts after first use: %q", b)
		}
		// The recorded key is now checked: a fresh host trusts it without
		// TOFU.
		h = newSSH(t, n, mrssh.Options{KnownHostsFiles: []string{kh}}, "h2")
		if _, err := meadowrun.RunFunction(context.Background(), sshWhere.With(1), h, &meadowrun.Options{LogDir: t.TempDir()}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("machine of another architecture", func(t *testing.T) {
		t.Parallel()
		h := newSSH(t, n, mrssh.Options{}, "h5")
		sshErr(t, h, meadowrun.ErrPlatform, n.Hosts["h5"], "linux/arm64", "Binaries")
	})
	t.Run("a binary for the wrong architecture", func(t *testing.T) {
		t.Parallel()
		self, _ := os.Executable()
		h := newSSH(t, n, mrssh.Options{Binaries: map[string]string{"linux/arm64": self}}, "h5")
		sshErr(t, h, meadowrun.ErrPlatform, n.Hosts["h5"], "X86_64", "linux/arm64")
	})
	t.Run("remote disk full", func(t *testing.T) {
		t.Parallel()
		h := newSSH(t, n, mrssh.Options{}, "h4")
		sshErr(t, h, meadowrun.ErrDiskFull, n.Hosts["h4"], "No space left")
	})
	t.Run("too little memory", func(t *testing.T) {
		t.Parallel()
		h := newSSH(t, n, mrssh.Options{}, "h1")
		_, err := meadowrun.RunFunction(context.Background(), sshWhere.With(1), h,
			&meadowrun.Options{LogDir: t.TempDir(), Resources: &meadowrun.Resources{LogicalCPU: 1, MemoryGB: 100000}})
		if !errors.Is(err, meadowrun.ErrNeverFits) || !strings.Contains(err.Error(), n.Hosts["h1"]) || !strings.Contains(err.Error(), "memory") {
			t.Fatalf("got %v, want never fits naming %s and its memory", err, n.Hosts["h1"])
		}
		t.Log(err)
	})
}

// sshSlow sleeps ms milliseconds and says where it ran.
var sshSlow = meadowrun.Register("ssh.Slow", func(ctx context.Context, ms int) (string, error) {
	time.Sleep(time.Duration(ms) * time.Millisecond)
	f := strings.Fields(os.Getenv("SSH_CONNECTION"))
	if len(f) < 3 {
		return "", errors.New("not run over SSH")
	}
	return f[2], nil
})

// TestConformanceSSHWithoutCgroups runs the suite on a machine whose
// cgroups cannot be written: the agent enforces memory with its watchdog.
func TestConformanceSSHWithoutCgroups(t *testing.T) {
	n := sshtest.Open(t)
	hosttest.Run(t, hosttest.Config{
		NewHost:      func(t *testing.T) *meadowrun.Host { return newSSH(t, n, mrssh.Options{}, "h6") },
		MillionTasks: millionTasks / 10,
	})
}

func TestSSHDeploymentFilesArriveAndNothingIsSentTwice(t *testing.T) {
	n := sshtest.Open(t)
	ctx := context.Background()
	o := &meadowrun.Options{LogDir: t.TempDir(), Deployment: meadowrun.MirrorLocal([]string{"testdata/deploy/*.txt"}, map[string]string{"MR_TEST": "x"})}
	h := newSSH(t, n, mrssh.Options{}, "h2")
	got, err := meadowrun.RunFunction(ctx, sshWhere.With(1), h, o)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(got, "|hello from the caller\n") {
		t.Fatalf("the worker did not find the deployment file: %q", got)
	}
	// An upload writes a new file (a temporary renamed): a new inode. (Not
	// the modification time: each use marks an entry for the cache sweep.)
	stamp := func() string {
		return n.Run(t, "h2", `cd ~/.cache/meadowrun && stat -c '%n %i' bin/* files/* | sort`)
	}
	before := stamp()
	h.Close()
	// Another host object (as another process would have) finds everything
	// on the machine already: nothing is uploaded again.
	h = newSSH(t, n, mrssh.Options{}, "h2")
	if _, err := meadowrun.RunFunction(ctx, sshWhere.With(1), h, o); err != nil {
		t.Fatal(err)
	}
	if after := stamp(); after != before {
		t.Fatalf("content was uploaded again:\nbefore %s\nafter  %s", before, after)
	}
}

func TestSSHMapGoesOnWithTheMachinesThatRemain(t *testing.T) {
	n := sshtest.Open(t)
	var log hosttest.SyncBuffer
	// A machine that works, one with a full disk, one of another
	// architecture and one that does not answer at all.
	h := newSSHMachines(t, n, mrssh.Options{Log: &log, ConnectTimeout: 2 * time.Second},
		"root@"+n.Addr("h1"), "root@"+n.Addr("h4"), "root@"+n.Addr("h5"), "root@"+n.Unreachable+":22")
	args := make([]int, 40)
	res, err := meadowrun.RunMap(context.Background(), sshSlow, args, h, &meadowrun.MapOptions{Options: meadowrun.Options{LogDir: t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r != n.Hosts["h1"] {
			t.Fatalf("task %d ran on %q", i, r)
		}
	}
	for _, want := range []string{n.Hosts["h4"], "No space left", n.Hosts["h5"], "linux/arm64", n.Unreachable} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("the machine log does not mention %q:\n%s", want, log.String())
		}
	}
}

// TestSSHChaos cuts one machine off and kills another's agent in the middle
// of a map: every task's result reaches the caller exactly once, and the
// cut machine is used again once it is back.
func TestSSHChaos(t *testing.T) {
	n := sshtest.Open(t)
	var log hosttest.SyncBuffer
	h := newSSH(t, n, mrssh.Options{Log: &log, KeepAlive: 300 * time.Millisecond}, "h1", "h2", "h3")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const tasks = 600
	args := make([]int, tasks)
	for i := range args {
		args[i] = 20
	}
	seen := make([]int, tasks)
	where := map[string]int{}
	done := 0
	var cut bool
	for r := range meadowrun.RunMapAsCompleted(ctx, sshSlow, args, h, &meadowrun.MapOptions{Options: meadowrun.Options{LogDir: t.TempDir()}}) {
		if r.Err != nil {
			t.Fatalf("task %d: %v", r.TaskID, r.Err)
		}
		seen[r.TaskID]++
		where[r.Value]++
		done++
		if done == tasks/5 && !cut {
			cut = true
			n.LinkDown(t, "h2")
			t.Cleanup(func() { n.LinkUp(t, "h2") })
			// Every agent there, this program's among them; a pid file
			// may be left by an agent of an earlier run killed so.
			n.Run(t, "h3", `for f in ~/.cache/meadowrun/agent-*.pid; do kill -9 $(cat "$f") 2>/dev/null; done; true`)
		}
	}
	for i, c := range seen {
		if c != 1 {
			t.Fatalf("task %d delivered %d times", i, c)
		}
	}
	t.Logf("tasks per machine: %v", where)
	t.Logf("machine log:\n%s", log.String())
	if !strings.Contains(log.String(), n.Hosts["h2"]) || !strings.Contains(log.String(), n.Hosts["h3"]) {
		t.Fatalf("the log does not report both machines lost")
	}
	// h2 comes back and takes work again.
	n.LinkUp(t, "h2")
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := meadowrun.RunMap(ctx, sshSlow, args[:30], h, &meadowrun.MapOptions{Options: meadowrun.Options{LogDir: t.TempDir()}})
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(res, n.Hosts["h2"]) && slices.Contains(res, n.Hosts["h3"]) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("h2 and h3 were not used again within 30 s: %v", res)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestSSHJobGivesUpWhenEveryMachineIsGone: results received before the
// only machine was cut off are kept; the other tasks fail with
// ErrUnreachable once GiveUpAfter has passed, instead of waiting forever.
func TestSSHJobGivesUpWhenEveryMachineIsGone(t *testing.T) {
	n := sshtest.Open(t)
	h := newSSH(t, n, mrssh.Options{KeepAlive: 200 * time.Millisecond, GiveUpAfter: 2 * time.Second, ConnectTimeout: time.Second}, "h3")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := make([]int, 40)
	for i := range args {
		args[i] = 100
	}
	var ok, unreachable int
	seen := map[int]bool{}
	start := time.Now()
	for r := range meadowrun.RunMapAsCompleted(ctx, sshSlow, args, h, &meadowrun.MapOptions{Options: meadowrun.Options{LogDir: t.TempDir()}}) {
		if seen[r.TaskID] {
			t.Fatalf("task %d delivered twice", r.TaskID)
		}
		seen[r.TaskID] = true
		switch {
		case r.Err == nil:
			ok++
			if ok == 4 {
				n.LinkDown(t, "h3")
				t.Cleanup(func() { n.LinkUp(t, "h3") })
			}
		case errors.Is(r.Err, meadowrun.ErrUnreachable):
			unreachable++
		default:
			t.Fatalf("task %d: %v", r.TaskID, r.Err)
		}
	}
	took := time.Since(start)
	t.Logf("%d ok, %d unreachable, in %v", ok, unreachable, took)
	if len(seen) != len(args) || ok < 4 || unreachable == 0 || ok+unreachable != len(args) {
		t.Fatalf("%d tasks seen, %d ok, %d unreachable", len(seen), ok, unreachable)
	}
	if took > 30*time.Second {
		t.Fatalf("took %v to give up", took)
	}
}

// TestSSHDeadMachineDoesNotDelayEveryCall: after the first call found a
// machine unreachable, later calls go to the live one at once; the dead one
// is retried in the background, not inside each call.
func TestSSHDeadMachineDoesNotDelayEveryCall(t *testing.T) {
	n := sshtest.Open(t)
	const timeout = 3 * time.Second
	h := newSSHMachines(t, n, mrssh.Options{ConnectTimeout: timeout, Log: io.Discard},
		"root@"+n.Addr("h1"), "root@"+n.Unreachable+":22")
	ctx := context.Background()
	o := &meadowrun.Options{LogDir: t.TempDir()}
	if _, err := meadowrun.RunFunction(ctx, sshWhere.With(1), h, o); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for range 5 {
		if _, err := meadowrun.RunFunction(ctx, sshWhere.With(1), h, o); err != nil {
			t.Fatal(err)
		}
	}
	// Each call waiting for the dead machine would take the connect
	// timeout; five calls well under one timeout prove none did.
	if d := time.Since(start); d >= timeout {
		t.Fatalf("5 calls took %v: the dead machine is retried inside calls", d)
	}
}

// TestSSHCrossCompilesForAnotherArchitecture builds a small meadowrun
// program and runs it against the machine that reports aarch64: the SSH
// host rebuilds the program from its source for linux/arm64 and uploads
// that. (The machine is really x86-64, so the agent cannot start there;
// the test checks what was uploaded and that the error says so.)
func TestSSHCrossCompilesForAnotherArchitecture(t *testing.T) {
	n := sshtest.Open(t)
	if testing.Short() {
		t.Skip("builds the standard library for linux/arm64")
	}
	bin := filepath.Join(t.TempDir(), "crossprog")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/meadowrun-go/meadowrun/internal/sshtest/crossprog").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	tmp := t.TempDir()
	cmd := exec.Command(bin, "root@"+n.Addr("h5"), n.Key, n.KnownHosts)
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp, "XDG_STATE_HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "built for linux/arm64") || !strings.Contains(string(out), "did not start") {
		t.Fatalf("want the agent built for linux/arm64 not to start: %v\n%s", err, out)
	}
	// The program built for arm64 (9 MB) is not left behind.
	if left, _ := os.ReadDir(tmp); len(left) > 0 {
		t.Fatalf("the cross-compiling program left %s in TMPDIR", left[0].Name())
	}
	// e_machine of every program uploaded there: 0xb7 is AArch64.
	got := n.Run(t, "h5", `for f in ~/.cache/meadowrun/bin/*; do od -An -tx1 -j18 -N2 "$f"; done`)
	if !strings.Contains(got, "b7 00") {
		t.Fatalf("no AArch64 program was uploaded to h5: %q", got)
	}
}

// A machine named in an ssh config is reached as `ssh NAME` would reach
// it: address, user, key and known_hosts from the config, through its
// ProxyJump host.
func TestSSHConfigNamesAndJumpHosts(t *testing.T) {
	n := sshtest.Open(t)
	dir := t.TempDir()
	cfg, newKnown, emptyKnown := filepath.Join(dir, "config"), filepath.Join(dir, "new_known_hosts"), filepath.Join(dir, "empty_known_hosts")
	aliasKnown := filepath.Join(dir, "alias_known_hosts")
	text := fmt.Sprintf(`
Host jumped
    HostName %s
    ProxyJump bastion
Host bastion
    HostName %s
Host broken-jump
    HostName %s
    ProxyJump %s
Host proxied
    HostName %s
    ProxyCommand ssh -i %s -o UserKnownHostsFile=%s -o BatchMode=yes -W %%h:%%p %s@%s
Host broken-proxy
    HostName %s
    ProxyCommand echo no route to %%h >&2; exit 1
Host newbox
    HostName %s
    UserKnownHostsFile %s
    StrictHostKeyChecking accept-new
Host strictbox
    HostName %s
    UserKnownHostsFile %s
Host aliased
    HostName %s
    HostKeyAlias build-box
    UserKnownHostsFile %s
    StrictHostKeyChecking accept-new
    ConnectTimeout 5
Host aliased-other
    HostName %s
    HostKeyAlias build-box
    UserKnownHostsFile %s
Host *
    User %s
    IdentityFile %s
    UserKnownHostsFile %s
`, n.Hosts["h2"], n.Hosts["h1"], n.Hosts["h2"], n.Unreachable,
		n.Hosts["h3"], n.Key, n.KnownHosts, n.User, n.Hosts["h1"], n.Hosts["h3"],
		n.Hosts["h1"], newKnown, n.Hosts["h1"], emptyKnown,
		n.Hosts["h2"], aliasKnown, n.Hosts["h1"], aliasKnown,
		n.User, n.Key, n.KnownHosts)
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	open := func(machine string) *meadowrun.Host {
		h, err := mrssh.NewHost([]string{machine}, mrssh.Options{ConfigFile: cfg, NoAgent: true, Log: &bytes.Buffer{},
			ConnectTimeout: 3 * time.Second, GiveUpAfter: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		return h
	}
	ctx := context.Background()
	// The machine's sshd saw the login come from h1. (The worker's
	// SSH_CONNECTION would not tell: it is that of whoever started the
	// agent.)
	for _, tc := range []struct{ name, machine string }{{"jumped", "h2"}, {"proxied", "h3"}} {
		logPath := filepath.Join(n.Dir, tc.machine, "sshd.log")
		before, _ := os.ReadFile(logPath)
		if _, err := meadowrun.RunFunction(ctx, sshWhere.With(1), open(tc.name), &meadowrun.Options{LogDir: t.TempDir()}); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		after, _ := os.ReadFile(logPath)
		want := "Accepted publickey for " + n.User + " from " + n.Hosts["h1"] + " "
		if len(after) < len(before) || !strings.Contains(string(after[len(before):]), want) {
			t.Fatalf("%s: %s's sshd log has no %q since the call:\n%s", tc.name, tc.machine, want, after[min(len(before), len(after)):])
		}
	}
	_, err := meadowrun.RunFunction(ctx, sshWhere.With(1), open("broken-jump"), &meadowrun.Options{LogDir: t.TempDir()})
	if !errors.Is(err, meadowrun.ErrUnreachable) || !strings.Contains(err.Error(), "jump host") || !strings.Contains(err.Error(), n.Unreachable) {
		t.Fatalf("through an unreachable jump host: %v, want ErrUnreachable naming the jump host", err)
	}
	_, err = meadowrun.RunFunction(ctx, sshWhere.With(1), open("broken-proxy"), &meadowrun.Options{LogDir: t.TempDir()})
	if !errors.Is(err, meadowrun.ErrUnreachable) || !strings.Contains(err.Error(), "no route to "+n.Hosts["h3"]) {
		t.Fatalf("through a failing ProxyCommand: %v, want ErrUnreachable with what the command said", err)
	}
	// StrictHostKeyChecking accept-new trusts a machine the config's
	// known_hosts file does not list yet, and records it there; without
	// it, the machine is refused.
	if _, err := meadowrun.RunFunction(ctx, sshWhere.With(1), open("newbox"), &meadowrun.Options{LogDir: t.TempDir()}); err != nil {
		t.Fatalf("accept-new: %v", err)
	}
	if b, _ := os.ReadFile(newKnown); !strings.Contains(string(b), n.Hosts["h1"]) {
		t.Fatalf("accept-new did not record the key: %q", b)
	}
	_, err = meadowrun.RunFunction(ctx, sshWhere.With(1), open("strictbox"), &meadowrun.Options{LogDir: t.TempDir()})
	if !errors.Is(err, meadowrun.ErrHostKey) || !strings.Contains(err.Error(), emptyKnown) {
		t.Fatalf("a machine missing from the config's known_hosts: %v, want ErrHostKey naming the file", err)
	}
	// HostKeyAlias: the key is recorded and checked under the alias, so
	// another machine going by the same alias is refused.
	if _, err := meadowrun.RunFunction(ctx, sshWhere.With(1), open("aliased"), &meadowrun.Options{LogDir: t.TempDir()}); err != nil {
		t.Fatalf("HostKeyAlias, accept-new: %v", err)
	}
	if b, _ := os.ReadFile(aliasKnown); !strings.HasPrefix(string(b), "build-box ") || strings.Contains(string(b), n.Hosts["h2"]) {
		t.Fatalf("HostKeyAlias: known_hosts = %q, want h2's key under build-box", b)
	}
	_, err = meadowrun.RunFunction(ctx, sshWhere.With(1), open("aliased-other"), &meadowrun.Options{LogDir: t.TempDir()})
	if !errors.Is(err, meadowrun.ErrHostKey) || !strings.Contains(err.Error(), "different key") {
		t.Fatalf("another machine under the same HostKeyAlias: %v, want ErrHostKey for a different key", err)
	}
}

// Machines whose home directory is shared (NFS, as on many clusters) share
// the agent's caches, and each still runs its own agent: their sockets,
// locks and journals are named by the machine.
func TestSSHMachinesSharingAHomeEachRunTheirAgent(t *testing.T) {
	n := sshtest.Open(t)
	shared := filepath.Join(n.Dir, fmt.Sprintf("shared-home-%d", time.Now().UnixNano()))
	h := newSSH(t, n, mrssh.Options{RemoteDir: shared}, "h1", "h2", "h3")
	args := make([]int, 24)
	for i := range args {
		args[i] = 200
	}
	res, err := meadowrun.RunMap(context.Background(), sshSlow, args, h,
		&meadowrun.MapOptions{Options: meadowrun.Options{LogDir: t.TempDir()}, Concurrency: 6})
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	for _, r := range res {
		used[r] = true
	}
	for _, m := range []string{"h1", "h2", "h3"} {
		if !used[n.Hosts[m]] {
			t.Errorf("no task ran on %s (%s): tasks ran on %v", m, n.Hosts[m], used)
		}
	}
	socks, _ := filepath.Glob(filepath.Join(shared, "agent-*.sock"))
	bins, _ := filepath.Glob(filepath.Join(shared, "bin", "*"))
	if len(socks) != 3 || len(bins) == 0 {
		t.Errorf("the shared directory has sockets %v and programs %v; want one socket per machine", socks, bins)
	}
}

// A directory where programs may not run (a home mounted noexec, as on
// hardened machines) is a clear error that says what to do.
func TestSSHNoexecDirectoryIsAClearError(t *testing.T) {
	n := sshtest.Open(t)
	// Mounted in h1's own mount namespace: the sessions of its sshd see it.
	n.Run(t, "h1", `mkdir -p "$HOME/noexec" && mount -t tmpfs -o noexec,size=64m tmpfs "$HOME/noexec"`)
	t.Cleanup(func() { n.RunE("h1", `umount "$HOME/noexec"`) })
	home := strings.TrimSpace(n.Run(t, "h1", `echo "$HOME"`))
	h := newSSH(t, n, mrssh.Options{RemoteDir: home + "/noexec", GiveUpAfter: time.Second}, "h1")
	_, err := meadowrun.RunFunction(context.Background(), sshWhere.With(1), h, &meadowrun.Options{LogDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "noexec") || !strings.Contains(err.Error(), "RemoteDir") {
		t.Fatalf("agent in a noexec directory: %v, want an error suggesting RemoteDir", err)
	}
	t.Logf("error: %v", err)
}

// A user certificate logs in where its key alone is not authorized: next
// to its key (KEY-cert.pub, as OpenSSH looks for it) or named by the ssh
// config's CertificateFile. An expired one is refused, as the key is.
func TestSSHUserCertificates(t *testing.T) {
	n := sshtest.Open(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "id_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	// sign writes key's certificate, valid over validity, as cert.
	sign := func(validity, cert string) {
		t.Helper()
		out, err := exec.Command("ssh-keygen", "-q", "-s", n.UserCA, "-I", "meadowrun-test", "-n", n.User, "-V", validity, key+".pub").CombinedOutput()
		if err != nil {
			t.Fatalf("ssh-keygen -s: %v: %s", err, out)
		}
		if cert != key+"-cert.pub" {
			if err := os.Rename(key+"-cert.pub", cert); err != nil {
				t.Fatal(err)
			}
		}
	}
	call := func(opts mrssh.Options) error {
		t.Helper()
		opts.IdentityFiles = []string{key}
		h := newSSH(t, n, opts, "h2")
		_, err := meadowrun.RunFunction(context.Background(), sshWhere.With(1), h, &meadowrun.Options{LogDir: t.TempDir()})
		return err
	}
	if err := call(mrssh.Options{}); !errors.Is(err, meadowrun.ErrAuth) {
		t.Fatalf("the key alone: %v, want ErrAuth", err)
	}
	sign("-5m:+1h", key+"-cert.pub")
	if err := call(mrssh.Options{}); err != nil {
		t.Fatalf("with KEY-cert.pub: %v", err)
	}
	// CertificateFile in the ssh config, for the machine's name there.
	os.Rename(key+"-cert.pub", filepath.Join(dir, "elsewhere-cert.pub"))
	cfg := filepath.Join(dir, "config")
	text := fmt.Sprintf("Host certified\n    HostName %s\n    CertificateFile %s\n", n.Hosts["h2"], filepath.Join(dir, "elsewhere-cert.pub"))
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	h := newSSHMachines(t, n, mrssh.Options{ConfigFile: cfg, IdentityFiles: []string{key}}, n.User+"@certified")
	if _, err := meadowrun.RunFunction(context.Background(), sshWhere.With(1), h, &meadowrun.Options{LogDir: t.TempDir()}); err != nil {
		t.Fatalf("with CertificateFile: %v", err)
	}
	sign("-2h:-1h", key+"-cert.pub")
	if err := call(mrssh.Options{}); !errors.Is(err, meadowrun.ErrAuth) || !strings.Contains(err.Error(), key+"-cert.pub") {
		t.Fatalf("an expired certificate: %v, want ErrAuth naming it among the keys tried", err)
	}
}

func TestDescribeSSHHostConnectsAndSaysWhyAMachineCannotBeUsed(t *testing.T) {
	n := sshtest.Open(t)
	h := newSSHMachines(t, n, mrssh.Options{ConnectTimeout: 2 * time.Second},
		n.User+"@"+n.Addr("h1"), n.User+"@"+n.Addr("h6"), n.User+"@"+n.Unreachable+":22")
	ms, err := meadowrun.DescribeHost(context.Background(), h)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 3 {
		t.Fatalf("%d machines described, want 3", len(ms))
	}
	for i, m := range ms[:2] {
		if m.Err != nil || m.LogicalCPU <= 0 || m.MemoryGB <= 0 || m.Platform != "linux/amd64" {
			t.Fatalf("machine %d: %+v", i, m)
		}
	}
	if !strings.HasPrefix(ms[0].MemoryEnforcement, "cgroup") || ms[1].MemoryEnforcement != "watchdog" {
		t.Fatalf("memory enforcement: h1 %q, h6 %q; want cgroup*, watchdog", ms[0].MemoryEnforcement, ms[1].MemoryEnforcement)
	}
	if !errors.Is(ms[2].Err, meadowrun.ErrUnreachable) || !strings.Contains(ms[2].Err.Error(), n.Unreachable) {
		t.Fatalf("unreachable machine: %v", ms[2].Err)
	}
}
