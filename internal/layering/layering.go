// Package layering helps the tests that keep packages in their layer: it
// lists what the package under test depends on.
package layering

import (
	"os/exec"
	"strings"
	"testing"
)

// Deps returns the import paths of every package outside the standard
// library that the package in the working directory (the one under test)
// depends on, itself included. It skips the test when there is no go
// command.
func Deps(t testing.TB) []string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command")
	}
	out, err := exec.Command(goTool, "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").Output()
	if err != nil {
		t.Fatalf("listing the dependencies: %v", err)
	}
	return strings.Fields(string(out))
}
