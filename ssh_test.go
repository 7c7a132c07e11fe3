package meadowrun_test

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/internal/sshtest"
)

var sshWhere = meadowrun.Register("ssh.Where", func(ctx context.Context, x int) (string, error) {
	h, _ := os.Hostname()
	wd, _ := os.Getwd()
	b, _ := os.ReadFile("testdata/deploy/hello.txt")
	return strings.Join([]string{h, wd, os.Getenv("SSH_CONNECTION"), string(b)}, "|"), nil
})

// newSSH opens the given machines of the test network with its key and
// known_hosts.
func newSSH(t *testing.T, n *sshtest.Net, opts meadowrun.SSHOptions, hosts ...string) *meadowrun.SSHHost {
	t.Helper()
	var ms []string
	for _, h := range hosts {
		ms = append(ms, n.User+"@"+n.Addr(h))
	}
	if opts.IdentityFiles == nil {
		opts.IdentityFiles = []string{n.Key}
	}
	if opts.KnownHostsFiles == nil {
		opts.KnownHostsFiles = []string{n.KnownHosts}
	}
	opts.NoAgent = true
	if opts.Log == nil {
		opts.Log = &bytes.Buffer{}
	}
	if opts.ConnectTimeout == 0 {
		opts.ConnectTimeout = 3 * time.Second
	}
	h, err := meadowrun.NewSSHHost(ms, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func TestSSHRunsAFunctionOnAMachine(t *testing.T) {
	n := sshtest.Open(t)
	h := newSSH(t, n, meadowrun.SSHOptions{}, "h1")
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
