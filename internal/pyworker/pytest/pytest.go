// Package pytest holds what the tests of the Python worker share.
package pytest

import (
	"os"
	"os/exec"
	"testing"
)

// EnvRequire, set to 1, makes Require fail a test rather than skip it when
// python3 is missing (scripts/test.sh sets it).
const EnvRequire = "MEADOWRUN_REQUIRE_PYTHON"

// Require skips t when python3 is not in PATH, or fails it when
// EnvRequire is 1.
func Require(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		if os.Getenv(EnvRequire) == "1" {
			t.Fatalf("python3 is required (%s=1) but not found: %v", EnvRequire, err)
		}
		t.Skipf("python3 not found: %v", err)
	}
}
