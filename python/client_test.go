// Package python_test runs the Python client's unittest suite (python/tests)
// against a meadowrun binary built from this repository.
package python_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestPythonClient(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		if os.Getenv("MEADOWRUN_REQUIRE_PYTHON") == "1" {
			t.Fatalf("python3 is required (MEADOWRUN_REQUIRE_PYTHON=1) but not found: %v", err)
		}
		t.Skipf("python3 not found: %v", err)
	}
	if out, err := exec.Command(py, "-c", "import cloudpickle").CombinedOutput(); err != nil {
		if os.Getenv("MEADOWRUN_REQUIRE_CLOUDPICKLE") == "1" {
			t.Fatalf("cloudpickle is required (MEADOWRUN_REQUIRE_CLOUDPICKLE=1) but not importable: %s", out)
		}
		t.Skipf("the Python client needs cloudpickle, which %s cannot import: %s", py, out)
	}
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "meadowrun")
	build := exec.Command("go", "build", "-o", bin, "./cmd/meadowrun")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(py, "-m", "unittest", "discover", "-v", "-s", "tests", "-t", ".")
	cmd.Env = append(os.Environ(), "MEADOWRUN_BIN="+bin, "XDG_STATE_HOME="+filepath.Join(tmp, "state"),
		"XDG_CACHE_HOME="+filepath.Join(tmp, "cache"), "PYTHONDONTWRITEBYTECODE=1")
	out, err := cmd.CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("python -m unittest: %v", err)
	}
}
