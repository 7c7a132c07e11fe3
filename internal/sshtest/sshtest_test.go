package sshtest_test

import (
	"crypto/rand"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/meadowrun-go/meadowrun/internal/sshtest"
)

// config returns a client configuration for the tests' user with the
// private key in keyFile, checking host keys against knownHostsFile.
func config(t *testing.T, n *sshtest.Net, keyFile, knownHostsFile string) *ssh.ClientConfig {
	t.Helper()
	pem, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(pem)
	if err != nil {
		t.Fatal(err)
	}
	check, err := knownhosts.New(knownHostsFile)
	if err != nil {
		t.Fatal(err)
	}
	return &ssh.ClientConfig{
		User:            n.User,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: check,
		Timeout:         5 * time.Second,
	}
}

// output runs command on c and returns its standard output.
func output(t *testing.T, c *ssh.Client, command string) string {
	t.Helper()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out, err := s.Output(command)
	if err != nil {
		t.Fatalf("%s: %v", command, err)
	}
	return strings.TrimSpace(string(out))
}

func TestMachinesAcceptKeyAndKnownHosts(t *testing.T) {
	t.Parallel()
	n := sshtest.Open(t)
	for _, host := range []string{"h1", "h2", "h3", "h5"} {
		t.Run(host, func(t *testing.T) {
			t.Parallel()
			c, err := ssh.Dial("tcp", n.Addr(host), config(t, n, n.Key, n.KnownHosts))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if got := output(t, c, "echo $HOME"); got == "" {
				t.Error("empty $HOME")
			}
			got := output(t, c, "uname -sm")
			if fake := got == "Linux aarch64"; fake != (host == "h5") {
				t.Errorf("uname -sm = %q; only h5 pretends to be Linux aarch64", got)
			}
		})
	}
}

func TestHostKeyMismatch(t *testing.T) {
	t.Parallel()
	n := sshtest.Open(t)
	_, err := ssh.Dial("tcp", n.Addr("h1"), config(t, n, n.Key, n.KnownHostsWrong))
	var keyErr *knownhosts.KeyError
	if !errors.As(err, &keyErr) || len(keyErr.Want) == 0 {
		t.Fatalf("dial h1 with h2's key in known_hosts: err = %v, want a knownhosts.KeyError naming the expected key", err)
	}
}

func TestWrongKeyRefused(t *testing.T) {
	t.Parallel()
	n := sshtest.Open(t)
	c, err := ssh.Dial("tcp", n.Addr("h1"), config(t, n, n.WrongKey, n.KnownHosts))
	if err == nil {
		c.Close()
		t.Fatal("h1 accepted the wrong key")
	}
	if !strings.Contains(err.Error(), "unable to authenticate") {
		t.Fatalf("dial h1 with the wrong key: %v, want an authentication failure", err)
	}
}

func TestDistinctHomes(t *testing.T) {
	t.Parallel()
	n := sshtest.Open(t)
	name := "sshtest-" + rand.Text()
	file := "\"$HOME/" + name + "\""
	if got := n.Run(t, "h1", "echo here > "+file+" && cat "+file); got != "here\n" {
		t.Fatalf("h1 reads back %q", got)
	}
	t.Cleanup(func() { n.Run(t, "h1", "rm -f "+file) })
	if got := n.Run(t, "h2", "test -e "+file+" && echo present || echo absent"); got != "absent\n" {
		t.Fatalf("a file written in $HOME on h1 is %s on h2", strings.TrimSpace(got))
	}
}
