package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"testing"
)

// The demo runs as a user runs it, and its map shows work spread over
// several workers.
func TestDemo(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("one CPU: one worker at a time")
	}
	bin := filepath.Join(t.TempDir(), "demo")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "XDG_STATE_HOME="+t.TempDir(), "TMPDIR="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`(\d+) tasks on (\d+) workers`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no summary of the map:\n%s", out)
	}
	if n, _ := strconv.Atoi(string(m[2])); n < 2 {
		t.Fatalf("the map ran on %d worker, want several:\n%s", n, out)
	}
	for _, want := range []string{"1. RunFunction: 17984 primes", "task 2, attempt 2", "exit code 0, result {\"ok\":true}"} {
		if !regexp.MustCompile(regexp.QuoteMeta(want)).Match(out) {
			t.Fatalf("no %q in:\n%s", want, out)
		}
	}
}
