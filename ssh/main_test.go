package ssh_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/meadowrun-go/meadowrun"
)

// The tests run against real OpenSSH servers in network namespaces
// (scripts/sshnet.sh; docs/testing-ssh.md), skipped without them unless
// MEADOWRUN_REQUIRE_SSHNET is set. Workers, agents and supervisors are
// this test binary re-executed: Main serves them.
func TestMain(m *testing.M) {
	meadowrun.Main()
	// The tests' journal and logs go to a state directory of their own,
	// never the user's.
	state, err := os.MkdirTemp("", "meadowrun-test-state-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv("XDG_STATE_HOME", state)
	code := m.Run()
	os.RemoveAll(state)
	os.Exit(code)
}

// squareArg is an argument of the durable tests' functions: X, after Ms
// milliseconds (until cancelled when negative), failing if Fail.
type squareArg struct {
	X, Ms int
	Fail  bool
}
