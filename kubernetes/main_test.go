package kubernetes_test

import (
	"testing"

	"github.com/meadowrun-go/meadowrun/internal/testkit"
)

// The tests run against a real single-node cluster (scripts/k8s.sh;
// docs/testing-kubernetes.md), skipped without one unless
// MEADOWRUN_REQUIRE_K8S is set. Agents and workers in pods are this test
// binary, uploaded and re-executed there: Main serves them.
func TestMain(m *testing.M) { testkit.Main(m) }
