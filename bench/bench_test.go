// Package bench_test is the CI smoke test of the benchmark harness: it
// builds bench/cmd/bench, runs it with -quick on meadowrun-go's side (and
// shell_peer.py when GNU parallel is installed), and checks that every
// expected JSON line is produced and parses. It never asserts speed.
package bench_test

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/meadowrun-go/meadowrun/bench/internal/rec"
)

func TestHarnessSmoke(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go command not on PATH: cannot build the harness")
	}
	dir := t.TempDir()
	bin := buildHarness(t, dir)

	peers := "none"
	python := "/usr/bin/python3"
	_, errPar := exec.LookPath("parallel")
	_, errPy := os.Stat(python)
	switch {
	case errPy != nil:
		t.Logf("skipping shell_peer.py: %s not found", python)
	case errPar != nil:
		t.Log("skipping shell_peer.py: GNU parallel not installed (run bench/setup.sh)")
	default:
		peers = "shell"
	}

	md, jsonl := filepath.Join(dir, "benchmarks.md"), filepath.Join(dir, "lines.jsonl")
	cmd := exec.Command(bin, "-quick", "-reps", "1", "-skip-setup", "-peers", peers, "-python", python,
		"-out", md, "-jsonl", jsonl)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	t0 := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("bench -quick: %v\nstderr:\n%s", err, stderr.String())
	}
	t.Logf("bench -quick (peers: %s) took %.1fs", peers, time.Since(t0).Seconds())

	f, err := os.Open(jsonl)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		r, err := rec.Parse(sc.Bytes())
		if err != nil {
			t.Fatalf("bad JSON line %q: %v", sc.Text(), err)
		}
		if r.Rep != 0 {
			t.Errorf("line %q: rep %d, want 0", sc.Text(), r.Rep)
		}
		got[r.Workload+" "+r.Impl+" "+r.Size()+" "+r.Metric] = true
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"P1 meadowrun 200 tasks_per_s",
		"P2 meadowrun 50 p50_us", "P2 meadowrun 50 p99_us", "P2 meadowrun 50 mean_us",
		"P3 meadowrun  cold_start_ms", "P3 meadowrun  cold_exit_ms",
		"P4 meadowrun 4 mb_per_s", "P4 meadowrun 4 wall_s",
		"P5 meadowrun 8 wall_s", "P5 meadowrun 8 pct_over_ideal",
		"P10 meadowrun 2000 tasks_per_s", "P10 meadowrun 2000 client_peak_rss_mb",
	}
	if peers == "shell" {
		want = append(want, "P6 xargs 20 wall_s", "P6 xargs 20 jobs_per_s",
			"P6 gnu_parallel 20 wall_s", "P6 gnu_parallel 20 jobs_per_s",
			"P6 meadowrun 20 wall_s", "P6 meadowrun 20 jobs_per_s")
	}
	for _, w := range want {
		if !got[w] {
			t.Errorf("missing line: %s", w)
		}
	}

	doc, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	sections := []string{"## Machine", "## Versions", "## Results", "## Targets", "| **meadowrun** |", "## SSH hosts", "## Python environments"}
	if os.Getenv("MEADOWRUN_SSHNET") != "" {
		// The SSH section is measured on the simulated machines.
		sections = append(sections, "bootstrap (connect, upload", "warm dispatch of a trivial function", "map of x+1 over 3 machines")
	}
	for _, s := range sections {
		if !bytes.Contains(doc, []byte(s)) {
			t.Errorf("report lacks %q", s)
		}
	}
	if !bytes.Contains(stdout.Bytes(), []byte("| target | result |")) {
		t.Errorf("stdout lacks the targets table:\n%s", stdout.String())
	}
}

func buildHarness(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "bench")
	build := exec.Command("go", "build", "-o", bin, "./cmd/bench")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./bench/cmd/bench: %v\n%s", err, out)
	}
	return bin
}

func TestHarnessRejectsUnknownWorkload(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go command not on PATH")
	}
	bin := buildHarness(t, t.TempDir())
	out, err := exec.Command(bin, "-only", "P99", "-skip-setup", "-out", "-").CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("want a usage error (exit 2), got %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("P99")) {
		t.Errorf("error does not name the workload:\n%s", out)
	}
}
