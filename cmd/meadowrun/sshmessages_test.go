package main_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/meadowrun-go/meadowrun/internal/sshtest"
)

// withoutKeys gives the user no key at all: no ssh-agent, an empty home.
func (u *user) withoutKeys() {
	u.env = append(u.env, "SSH_AUTH_SOCK=", "HOME="+u.t.TempDir())
}

// checkMessages fails when stderr repeats meadowrun's prefix within a
// line or names the Go API's options to a command line user.
func checkMessages(t *testing.T, r result) {
	t.Helper()
	for _, line := range strings.Split(r.stderr, "\n") {
		if strings.Count(line, "meadowrun:") > 1 {
			t.Errorf("the prefix is repeated: %q", line)
		}
		if strings.Contains(line, "ssh.Options") {
			t.Errorf("a command line user is told about ssh.Options: %q", line)
		}
	}
}

func TestSSHMessagesWithoutTheNetwork(t *testing.T) {
	u := newUser(t)
	u.withoutKeys()
	// Nothing listens there: that is what the user hears, not that no key
	// was found, and only once.
	r := u.run("", "run", "--host", "ssh://root@127.0.0.1:1?config=none", "--", "true")
	u.want(r, 125, nil, []string{"machine unreachable: root@127.0.0.1:1"})
	checkMessages(t, r)
	for _, s := range []string{"authentication refused", "carrying on with the other machines"} {
		if strings.Contains(r.stderr, s) {
			t.Fatalf("%q about the only machine, which is unreachable: %s", s, r)
		}
	}
	if n := strings.Count(r.stderr, "machine unreachable"); n != 1 {
		t.Fatalf("the machine's problem is told %d times: %s", n, r)
	}
}

func TestSSHMessagesNameTheURLsParameters(t *testing.T) {
	n := sshtest.Open(t)
	h1 := n.User + "@" + n.Addr("h1")
	tests := []struct {
		name    string
		noKeys  bool
		host    string
		code    int
		stderr  []string
		without []string
	}{
		{"without a key, the machine is reached and the key parameter named", true,
			"ssh://" + h1 + "?config=none&known_hosts=" + n.KnownHosts, 125,
			[]string{"authentication refused: no key to log in to " + h1, "key=FILE in the ssh:// host URL"},
			[]string{"carrying on"}},
		{"an unknown machine names the tofu parameter", false,
			"ssh://" + h1 + "?config=none&known_hosts=/dev/null&key=" + n.Key, 125,
			[]string{"host key not trusted", "tofu=1 in the ssh:// host URL"}, []string{"carrying on"}},
		{"with another machine that works, the job carries on", false,
			fmt.Sprintf("ssh://%s,root@127.0.0.1:1?config=none&known_hosts=%s&key=%s", h1, n.KnownHosts, n.Key), 0,
			[]string{"machine unreachable: root@127.0.0.1:1", "(carrying on with the other machines)"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u := newUser(t)
			if tc.noKeys {
				u.withoutKeys()
			}
			r := u.run("", "run", "--host", tc.host, "--", "true")
			u.want(r, tc.code, nil, tc.stderr)
			checkMessages(t, r)
			for _, s := range tc.without {
				if strings.Contains(r.stderr, s) {
					t.Fatalf("stderr has %q: %s", s, r)
				}
			}
		})
	}
}
