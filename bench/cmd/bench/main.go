// Command bench is the benchmark harness: it runs meadowrun-go's workloads
// and the peer scripts (bench/peers/) interleaved, aggregates medians and
// writes docs/benchmarks.md. Run it from the repository:
//
//	go run ./bench/cmd/bench [-reps N] [-quick] [-only P1,P2] [-out docs/benchmarks.md]
//
// See bench/README.md for the workloads, the output and how to read it.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/meadowrun-go/meadowrun/bench/internal/rec"
)

// allWorkloads is every workload the harness knows, in report order.
var allWorkloads = []string{"P1", "P2", "P3", "P4", "P5", "P6", "P10"}

// contestant is one program run once per repetition.
type contestant struct {
	name      string
	workloads []string // the workloads it measures
	run       func(ctx context.Context, workloads []string, rep int) ([]rec.Record, error)
}

type config struct {
	root, python, outPath, jsonlPath string
	reps, coldRuns                   int
	quick, skipSetup, daskFullP1     bool
	workloads, peers                 []string
	oursBin, coldBin                 string
}

func main() {
	var cfg config
	reps := flag.Int("reps", 3, "repetitions; each runs every contestant once, in rotating order")
	quick := flag.Bool("quick", false, "tiny sizes (CI smoke); the numbers mean nothing")
	only := flag.String("only", "", "comma-separated workloads to run (default: all of "+strings.Join(allWorkloads, ",")+")")
	out := flag.String("out", "", "report to write (default: <repo>/docs/benchmarks.md; \"-\" for none)")
	jsonl := flag.String("jsonl", "", "also write every collected JSON line (re-tagged rep) to this file")
	skipSetup := flag.Bool("skip-setup", false, "do not run bench/setup.sh first")
	peers := flag.String("peers", "stdlib,joblib,dask,shell", "peer scripts to run (bench/peers/<name>_peer.py), or \"none\"")
	python := flag.String("python", envOr("PEER_PYTHON", "/usr/bin/python3"), "interpreter for the peer scripts")
	coldRuns := flag.Int("cold-runs", 0, "P3: cold starts of ours per rep, median reported (default 5, 1 with -quick)")
	fullP1 := flag.Bool("dask-full-p1", false, "pass --full-p1 to dask_peer.py (P1 n=100000, ~4 min per rep)")
	flag.Parse()
	if *reps < 1 {
		fatalf("-reps must be >= 1")
	}
	cfg.reps, cfg.quick, cfg.skipSetup, cfg.daskFullP1, cfg.python = *reps, *quick, *skipSetup, *fullP1, *python
	cfg.coldRuns = *coldRuns
	if cfg.coldRuns <= 0 {
		cfg.coldRuns = 5
		if cfg.quick {
			cfg.coldRuns = 1
		}
	}
	var err error
	if cfg.workloads, err = parseWorkloads(*only); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	if *peers != "none" && *peers != "" {
		for _, p := range strings.Split(*peers, ",") {
			p = strings.TrimSpace(p)
			if _, ok := peerWorkloads[p]; !ok {
				fmt.Fprintf(os.Stderr, "bench: unknown peer %q (known: stdlib, joblib, dask, shell)\n", p)
				os.Exit(2)
			}
			cfg.peers = append(cfg.peers, p)
		}
	}
	if cfg.root, err = repoRoot(); err != nil {
		fatalf("%v", err)
	}
	cfg.outPath = *out
	if cfg.outPath == "" {
		cfg.outPath = filepath.Join(cfg.root, "docs", "benchmarks.md")
	}
	cfg.jsonlPath = *jsonl
	if err := run(context.Background(), &cfg); err != nil {
		fatalf("%v", err)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func logf(format string, a ...any) { fmt.Fprintf(os.Stderr, "[bench] "+format+"\n", a...) }

func fatalf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", a...)
	os.Exit(1)
}

func parseWorkloads(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return slices.Clone(allWorkloads), nil
	}
	var ws []string
	for _, w := range strings.Split(s, ",") {
		w = strings.ToUpper(strings.TrimSpace(w))
		if w == "" {
			continue
		}
		if !slices.Contains(allWorkloads, w) {
			return nil, fmt.Errorf("unknown or unbenchmarked workload %q (known: %s)", w, strings.Join(allWorkloads, ","))
		}
		if !slices.Contains(ws, w) {
			ws = append(ws, w)
		}
	}
	if len(ws) == 0 {
		return nil, errors.New("-only names no workload")
	}
	return ws, nil
}

// repoRoot is the directory of the module's go.mod.
func repoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err == nil {
		if p := strings.TrimSpace(string(out)); p != "" && p != os.DevNull {
			return filepath.Dir(p), nil
		}
	}
	dir, _ := os.Getwd()
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("cannot find the repository (go.mod); run from inside it")
		}
		dir = parent
	}
}

// peerWorkloads are the workloads each peer script measures.
var peerWorkloads = map[string][]string{
	"stdlib": {"P1", "P2", "P3", "P4", "P5"},
	"joblib": {"P1", "P5"},
	"dask":   {"P1", "P2", "P3", "P4", "P5"},
	"shell":  {"P6"},
}

// oursWorkloads are measured by bench/cmd/ours, plus P3 by bench/cmd/coldstart.
var oursWorkloads = []string{"P1", "P2", "P3", "P4", "P5", "P10"}

func intersect(a, b []string) []string {
	var out []string
	for _, x := range a {
		if slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

func run(ctx context.Context, cfg *config) error {
	t0 := time.Now()
	if !cfg.skipSetup && len(cfg.peers) > 0 {
		logf("running bench/setup.sh (skip with -skip-setup)")
		cmd := exec.CommandContext(ctx, "bash", filepath.Join(cfg.root, "bench", "setup.sh"))
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("bench/setup.sh: %w", err)
		}
	}
	tmp, err := os.MkdirTemp("", "meadowrun-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	cfg.oursBin, cfg.coldBin = filepath.Join(tmp, "ours"), filepath.Join(tmp, "coldstart")
	// P6 times the meadowrun CLI inside shell_peer.py, next to xargs and
	// GNU parallel, with its journal in a directory of its own.
	cliBin := filepath.Join(tmp, "meadowrun")
	os.Setenv("MEADOWRUN_BIN", cliBin)
	os.Setenv("XDG_STATE_HOME", filepath.Join(tmp, "state"))
	for bin, pkg := range map[string]string{cfg.oursBin: "./bench/cmd/ours", cfg.coldBin: "./bench/cmd/coldstart", cliBin: "./cmd/meadowrun"} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, pkg)
		cmd.Dir, cmd.Stdout, cmd.Stderr = cfg.root, os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go build %s: %w", pkg, err)
		}
	}

	cs := contestants(cfg)
	var all []rec.Record
	for rep := range cfg.reps {
		k := rep % len(cs)
		order := append(slices.Clone(cs[k:]), cs[:k]...)
		for _, c := range order {
			ws := intersect(cfg.workloads, c.workloads)
			if len(ws) == 0 {
				continue
			}
			t := time.Now()
			logf("rep %d/%d: %s %s", rep+1, cfg.reps, c.name, strings.Join(ws, ","))
			rs, err := c.run(ctx, ws, rep)
			if err != nil {
				return fmt.Errorf("rep %d: %s: %w", rep, c.name, err)
			}
			for i := range rs {
				rs[i].Rep = rep
			}
			all = append(all, rs...)
			logf("rep %d/%d: %s done in %.1fs (%d lines)", rep+1, cfg.reps, c.name, time.Since(t).Seconds(), len(rs))
		}
	}
	if cfg.jsonlPath != "" {
		if err := writeJSONL(cfg.jsonlPath, all); err != nil {
			return err
		}
	}
	var sections []string
	for _, b := range sideBenches {
		sec, err := b.run(ctx, cfg, tmp)
		if err != nil {
			return err
		}
		sections = append(sections, sec)
	}
	side := strings.Join(sections, "\n")
	rep := buildReport(cfg, all)
	table := rep.markdownTable()
	targets := rep.markdownTargets()
	fmt.Println(table)
	fmt.Println(targets)
	fmt.Println(side)
	if cfg.outPath != "-" {
		doc := rep.document(cfg, table, targets, side, time.Since(t0))
		if err := os.MkdirAll(filepath.Dir(cfg.outPath), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(cfg.outPath, []byte(doc), 0o644); err != nil {
			return err
		}
		logf("wrote %s", cfg.outPath)
	}
	logf("total %.1fs", time.Since(t0).Seconds())
	return nil
}

// A sideBench is a benchmark program that needs what not every machine
// has (the simulated SSH machines or the container engine, started as
// root; python3): it runs when missing finds nothing missing, and its
// output becomes a section of the report.
type sideBench struct {
	pkg, title, intro string
	// missing says what the machine lacks and how to get it, or "".
	missing func() string
}

// needDir is a sideBench's missing for components whose directory the
// variable env names, started as start says.
func needDir(env, start string) func() string {
	return func() string {
		if os.Getenv(env) != "" {
			return ""
		}
		return fmt.Sprintf("%s and set `%s=DIR`", start, env)
	}
}

// needMotoAnd is a sideBench's missing for programs that run
// moto_server (internal/mototest), and need what other says too.
func needMotoAnd(other func() string) func() string {
	return func() string {
		if why := other(); why != "" {
			return why
		}
		if exec.Command("python3", "-c", "import moto.server").Run() == nil {
			return ""
		}
		if _, err := exec.LookPath("moto_server"); err == nil {
			return ""
		}
		return "no moto (python3 cannot import moto.server, no moto_server in PATH)"
	}
}

// needPython is a sideBench's missing for programs that run python3.
func needPython() string {
	if _, err := exec.LookPath("python3"); err != nil {
		return "no python3 in PATH"
	}
	return ""
}

var sideBenches = []sideBench{
	{pkg: "sshbench", title: "SSH hosts",
		missing: needDir("MEADOWRUN_SSHNET", "start the simulated machines as root with `scripts/sshnet.sh up DIR`"),
		intro:   "Three machines in network namespaces on this VM (sharing its cores), each running OpenSSH's sshd; see docs/ssh.md for what the numbers mean."},
	{pkg: "ctrbench", title: "Containers",
		missing: needDir("MEADOWRUN_CONTAINERS", "start the engine and registry as root with `scripts/containers.sh up DIR`"),
		intro:   "The local host with Debian's dockerd and registry (scripts/containers.sh); C1 warm calls, C2 cold starts, C3 commands in the Debian image next to `xargs -P2 docker run`; see docs/containers.md."},
	{pkg: "k8sbench", title: "Kubernetes (P8)",
		missing: needDir("MEADOWRUN_K8S", "start the single-node cluster as root with `scripts/k8s.sh up DIR`"),
		intro:   "The single-node cluster of scripts/k8s.sh on this VM (sharing its cores): the first result after the worker pod is Running (target ≤ 1 s), warm dispatch to a reusable pod (target p50 ≤ 20 ms) next to the TCP round trip to the API server, and a map of trivial tasks over four reusable pods; see docs/kubernetes.md."},
	{pkg: "ec2bench", title: "EC2 (P9)",
		missing: needMotoAnd(needDir("MEADOWRUN_SSHNET", "start the simulated machines as root with `scripts/sshnet.sh up DIR`")),
		intro:   "moto_server and the instance simulator of internal/ec2sim (instances as network namespaces on this VM): dispatch to a warm, reused instance by a new client (target p50 ≤ 50 ms) and by a client with a warm worker, the control plane's part of a cold start without the simulated boot (target ≤ 3 s), and 100 concurrent allocations against one table; see docs/ec2.md."},
	{pkg: "pybench", title: "Python workers", missing: needPython,
		intro: "Python functions on meadowrun's Python workers (PreinstalledInterpreter) next to multiprocessing.Pool with 2 processes on the same python3, in the same run."},
	{pkg: "pyenvbench", title: "Python environments", missing: needPython,
		intro: "A PipRequirementsFile deployment on the local host, pip installing from a wheelhouse on disk; the issue's target: a second run with an unchanged requirements file spends under 100 ms on the environment."},
}

// run builds and runs b, and returns its report as a markdown section.
func (b sideBench) run(ctx context.Context, cfg *config, tmp string) (string, error) {
	head := fmt.Sprintf("## %s (`bench/cmd/%s`)\n\n", b.title, b.pkg)
	if why := b.missing(); why != "" {
		return head + "Not measured in this run: " + why + ".\n", nil
	}
	bin := filepath.Join(tmp, b.pkg)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./bench/cmd/"+b.pkg)
	cmd.Dir, cmd.Stdout, cmd.Stderr = cfg.root, os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build ./bench/cmd/%s: %w", b.pkg, err)
	}
	args := []string{}
	if cfg.quick {
		args = append(args, "-quick")
	}
	logf("%s", b.pkg)
	cmd = exec.CommandContext(ctx, bin, args...)
	cmd.Dir, cmd.Stderr = cfg.root, os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s: %w", b.pkg, err)
	}
	return head + b.intro + "\n\n```\n" + string(out) + "```\n", nil
}

func writeJSONL(path string, rs []rec.Record) error {
	var b bytes.Buffer
	e := &rec.Emitter{W: &b}
	for _, r := range rs {
		e.Impl, e.Version = r.Impl, r.Version
		e.Emit(r.Workload, r.Params, r.Metric, r.Value, r.Unit, r.Rep, r.Note)
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

func contestants(cfg *config) []contestant {
	cs := []contestant{{name: "meadowrun (bench/cmd/ours)", workloads: oursWorkloads, run: func(ctx context.Context, ws []string, rep int) ([]rec.Record, error) {
		var rs []rec.Record
		if ows := slices.DeleteFunc(slices.Clone(ws), func(w string) bool { return w == "P3" }); len(ows) > 0 {
			args := []string{"-workloads", strings.Join(ows, ","), "-reps", "1"}
			if cfg.quick {
				args = append(args, "-quick")
			}
			var err error
			if rs, err = runLines(ctx, cfg.oursBin, args...); err != nil {
				return nil, err
			}
		}
		if slices.Contains(ws, "P3") {
			r, err := coldStart(ctx, cfg.coldBin, cfg.coldRuns)
			if err != nil {
				return nil, err
			}
			rs = append(rs, r...)
		}
		return rs, nil
	}}}
	for _, p := range cfg.peers {
		script := filepath.Join(cfg.root, "bench", "peers", p+"_peer.py")
		cs = append(cs, contestant{name: p + "_peer.py", workloads: peerWorkloads[p], run: func(ctx context.Context, ws []string, rep int) ([]rec.Record, error) {
			args := []string{script, "--workloads", strings.Join(ws, ","), "--reps", "1"}
			if cfg.quick {
				args = append(args, "--quick")
			}
			if p == "dask" && cfg.daskFullP1 {
				args = append(args, "--full-p1")
			}
			return runLines(ctx, cfg.python, args...)
		}})
	}
	return cs
}

// runLines runs a contestant and parses its stdout as JSON lines; stderr
// is passed through. A non-zero exit or a malformed line is an error.
func runLines(ctx context.Context, name string, args ...string) ([]rec.Record, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stderr = os.Stderr
	cmd.Stdin = nil
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return parseLines(&out)
}

func parseLines(r io.Reader) ([]rec.Record, error) {
	var rs []rec.Record
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		r, err := rec.Parse(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %v: %.200s", n, err, line)
		}
		rs = append(rs, r)
	}
	return rs, sc.Err()
}

// coldStart measures P3 for meadowrun: from just before exec of a fresh
// coldstart binary to its READY line (first result), and to its exit.
func coldStart(ctx context.Context, bin string, runs int) ([]rec.Record, error) {
	var first, total []float64
	for range runs {
		cmd := exec.CommandContext(ctx, bin)
		cmd.Stderr = os.Stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		t0 := time.Now()
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		var tReady time.Duration
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.TrimSpace(sc.Text()) == "READY" {
				tReady = time.Since(t0)
				break
			}
		}
		io.Copy(io.Discard, stdout)
		err = cmd.Wait()
		tEnd := time.Since(t0)
		if err != nil || tReady == 0 {
			return nil, fmt.Errorf("cold-start child failed (ready=%v): %v", tReady != 0, err)
		}
		first = append(first, float64(tReady.Nanoseconds())/1e6)
		total = append(total, float64(tEnd.Nanoseconds())/1e6)
	}
	params := map[string]any{"workers": 1, "runs": runs, "stat": "median_of_runs",
		"measures": "exec Go binary -> meadowrun.Main -> Local{} host -> start 1 worker process -> 1 RunFunction result"}
	mk := func(metric string, v float64) rec.Record {
		return rec.Record{Schema: rec.Schema, Workload: "P3", Impl: "meadowrun", Params: params, Metric: metric,
			Value: v, Unit: "ms", Version: "meadowrun-go (bench/cmd/coldstart)"}
	}
	return []rec.Record{mk("cold_start_ms", rec.Median(first)), mk("cold_exit_ms", rec.Median(total))}, nil
}
