package ssh_test

import (
	"testing"

	"github.com/meadowrun-go/meadowrun/internal/testkit"
)

// The tests run against real OpenSSH servers in network namespaces
// (scripts/sshnet.sh; docs/testing-ssh.md), skipped without them unless
// MEADOWRUN_REQUIRE_SSHNET is set. Workers, agents and supervisors are
// this test binary re-executed: Main serves them.
func TestMain(m *testing.M) { testkit.Main(m) }

// squareArg is an argument of the durable tests' functions: X, after Ms
// milliseconds (until cancelled when negative), failing if Fail.
type squareArg struct {
	X, Ms int
	Fail  bool
}
