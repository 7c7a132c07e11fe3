package ec2_test

import (
	"testing"

	"github.com/meadowrun-go/meadowrun/internal/testkit"
)

// The tests run against moto_server (internal/mototest) and the instance
// simulator of internal/ec2sim, which boots each instance moto runs as a
// machine in a network namespace of scripts/sshnet.sh's network; they skip
// without moto or the network unless MEADOWRUN_REQUIRE_MOTO or
// MEADOWRUN_REQUIRE_SSHNET is set. Agents and workers on the instances are
// this test binary, uploaded and re-executed there: Main serves them.
func TestMain(m *testing.M) { testkit.Main(m) }
