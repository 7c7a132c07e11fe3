// Package hosttest is the conformance suite every meadowrun host must
// pass. It exercises the public API end to end (functions, commands, maps,
// retries, failure classes, logs, cancellation, validation) and adapts only
// to the capabilities a host declares.
//
// A host's tests call Run from a test binary whose TestMain calls
// meadowrun.Main first, since workers re-execute the test binary.
package hosttest

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/driver"
)

// Config describes the host under test.
type Config struct {
	// NewHost returns the host to test. It is called once per Run; the
	// suite's last test closes the host.
	NewHost func(t *testing.T) *meadowrun.Host
	// MillionTasks is how many tasks the huge-map test runs; 0 means one
	// million. Race-enabled runs lower it.
	MillionTasks int
	// Deployment, when not the zero value, is the deployment every test
	// runs with (a container image, say): the suite then checks the host
	// with that deployment.
	Deployment meadowrun.Deployment
	// Python runs the suite's functions on Python workers: Deployment
	// must then be a Python one (PreinstalledInterpreter, an environment
	// or ContainerInterpreter). The suite writes its Python module
	// (python/hosttest.py) into a temporary working directory, brings it
	// with the deployment (WithGlobs) and calls its functions by name.
	// The tests of what only Go functions have (panics, typed registries)
	// are skipped.
	Python bool
}

//go:embed python/hosttest.py
var pythonModule []byte

// SyncBuffer is an io.Writer safe for concurrent use, for the output of
// jobs and hosts in tests.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write implements io.Writer.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// suite carries the host and its capabilities through the tests.
type suite struct {
	host *meadowrun.Host
	caps driver.Capabilities
	cfg  Config
	fn   funcs
}

// opts returns options that keep output in a buffer and logs in a
// temporary directory.
func (s *suite) opts(t *testing.T) (meadowrun.Options, *SyncBuffer) {
	buf := &SyncBuffer{}
	return meadowrun.Options{Output: buf, LogDir: t.TempDir(), Deployment: s.cfg.Deployment}, buf
}

// Run runs the conformance suite against the host.
func Run(t *testing.T, cfg Config) {
	fn := goFuncs()
	if cfg.Python {
		if k := cfg.Deployment.Kind(); k != "interpreter" && k != "environment" && k != "container" {
			t.Fatalf("Config.Python needs a Python deployment, not %s", k)
		}
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "hosttest.py"), pythonModule, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Chdir(dir)
		cfg.Deployment = cfg.Deployment.WithGlobs("hosttest.py")
		fn = pythonFuncs()
	}
	h := cfg.NewHost(t)
	drv, err := h.Driver(context.Background())
	if err != nil {
		t.Fatalf("opening the host: %v", err)
	}
	s := &suite{host: h, caps: drv.Capabilities(), cfg: cfg, fn: fn}
	tests := []struct {
		name string
		fn   func(*testing.T, *suite)
		need func(driver.Capabilities) bool
		// goOnly: what only Go functions have (panics, declared types).
		goOnly bool
	}{
		{"a function call returns its result", testFunction, nil, false},
		{"a returned error keeps its type and message", testFunctionError, nil, false},
		{"a panic is reported with its stack", testPanic, nil, true},
		{"a map returns results in argument order", testMapOrder, nil, false},
		{"a task that fails once is retried and succeeds", testRetry, nil, false},
		{"one bad task never costs another task its result", testMapPartialFailure, nil, false},
		{"as-completed yields every task exactly once", testAsCompleted, nil, false},
		{"a map over an iterator runs every argument", testMapSeq, nil, false},
		{"a map of zero tasks returns nothing", testZeroTasks, nil, false},
		{"an unregistered function name is a clear error", testUnknownFunction, nil, false},
		{"a function registered with other types is refused", testRegistryMismatch, nil, true},
		{"arguments and results that cannot be encoded fail only their task", testEncoding, nil, false},
		{"invalid resources are refused before anything runs", testInvalidResources, nil, false},
		{"resources that can never fit fail at once", testNeverFits, nil, false},
		{"sidecars, ports, memory limits and deployments the host cannot honour are refused", testUnsupported, nil, false},
		{"cancelling the context stops a map and keeps its results", testCancelMap, nil, false},
		{"a command reports its exit code, output and result", testCommand, nil, false},
		{"a command that does not exist exits 127", testCommandNotFound, nil, false},
		{"workers stay warm across calls", testWarmReuse, nil, false},
		{"a started job can be waited for or cancelled", testStartJob, nil, false},
		{"large payloads round-trip intact", testLargePayload, nil, false},
		{"what a function prints is streamed with its task", testLogs, func(c driver.Capabilities) bool { return c.CapturesOutput }, false},
		{"a task that exits the worker is classified with its code", testExit, func(c driver.Capabilities) bool { return c.ProcessExits }, false},
		{"a worker killed mid-task is retried elsewhere", testKilledWorker, func(c driver.Capabilities) bool { return c.ProcessExits }, false},
		{"a task that takes down a worker holding other tasks runs no more often than its attempts allow", testPrefetchedCrash, func(c driver.Capabilities) bool { return c.ProcessExits }, false},
		{"a task over its memory limit is killed and classified", testOOM, func(c driver.Capabilities) bool { return c.MemoryLimits }, false},
		{"retry with more memory doubles the limit", testRetryMoreMemory, func(c driver.Capabilities) bool { return c.MemoryLimits }, false},
		{"a detached job is attached to by its id, waited for and cancelled", testDetached, nil, false},
		{"a map of a million tasks completes in bounded memory", testMillion, nil, false},
		// Last: it closes the host.
		{"a closed host stops its warm workers", testClose, nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.goOnly && cfg.Python {
				t.Skip("Go functions only: Python has no panics, and its functions declare no types to mismatch")
			}
			if tc.need != nil && !tc.need(s.caps) {
				t.Skipf("%s does not declare the capability this test needs", drv.Name())
			}
			tc.fn(t, s)
		})
	}
}

func testFunction(t *testing.T, s *suite) {
	o, _ := s.opts(t)
	got, err := meadowrun.RunFunction(context.Background(), s.fn.square.With(12), s.host, &o)
	if err != nil || got != 144 {
		t.Fatalf("RunFunction(Square, 12) = %d, %v; want 144", got, err)
	}
	if s.cfg.Python {
		lang, err := meadowrun.RunFunction(context.Background(), meadowrun.Named[int, string]("hosttest.Language").With(0), s.host, &o)
		if err != nil || !strings.HasPrefix(lang, "python 3.") {
			t.Fatalf("the suite's functions run on %q (%v), want a Python worker", lang, err)
		}
	}
}

func testFunctionError(t *testing.T, s *suite) {
	o, _ := s.opts(t)
	_, err := meadowrun.RunFunction(context.Background(), s.fn.fail.With("disk on fire"), s.host, &o)
	var te *meadowrun.TaskError
	if !errors.As(err, &te) {
		t.Fatalf("error = %v, want a *TaskError", err)
	}
	if te.Kind != meadowrun.KindError || te.Message != "disk on fire" || !strings.Contains(te.Type, "customError") {
		t.Fatalf("TaskError = kind %s, type %q, message %q", te.Kind, te.Type, te.Message)
	}
	if !errors.Is(err, meadowrun.ErrTaskFailed) {
		t.Fatalf("errors.Is(err, ErrTaskFailed) = false")
	}
}

func testPanic(t *testing.T, s *suite) {
	o, _ := s.opts(t)
	_, err := meadowrun.RunFunction(context.Background(), s.fn.panics.With(1), s.host, &o)
	var te *meadowrun.TaskError
	if !errors.As(err, &te) || te.Kind != meadowrun.KindPanic {
		t.Fatalf("error = %v, want a KindPanic *TaskError", err)
	}
	if !strings.Contains(te.Message, "nil map") || !strings.Contains(te.Stack, "hosttest") {
		t.Fatalf("panic message %q / stack %q do not describe the panic", te.Message, te.Stack)
	}
}

func testMapOrder(t *testing.T, s *suite) {
	o, _ := s.opts(t)
	args := make([]int, 200)
	for i := range args {
		args[i] = i
	}
	got, err := meadowrun.RunMap(context.Background(), s.fn.square, args, s.host, &meadowrun.MapOptions{Options: o, Concurrency: 3})
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range got {
		if v != i*i {
			t.Fatalf("result %d = %d, want %d", i, v, i*i)
		}
	}
}

func testRetry(t *testing.T, s *suite) {
	o, out := s.opts(t)
	dir := t.TempDir()
	args := []marked{{dir, 1}, {dir, 2}, {dir, 3}}
	attempts := map[int]int{}
	for r := range meadowrun.RunMapAsCompleted(context.Background(), s.fn.flakyOnce, args, s.host, &meadowrun.MapOptions{Options: o, MaxAttempts: 2}) {
		v, err := r.Result()
		if err != nil || v != args[r.TaskID].ID*10 {
			t.Fatalf("task %d = %d, %v", r.TaskID, v, err)
		}
		attempts[r.TaskID] = r.Attempt
	}
	if len(attempts) != 3 || attempts[0] != 2 || attempts[1] != 2 || attempts[2] != 2 {
		t.Fatalf("attempts = %v, want every task to succeed on attempt 2", attempts)
	}
	if !strings.Contains(out.String(), "retrying") {
		t.Fatalf("the output does not mention the retries:\n%s", out.String())
	}
}

func testMapPartialFailure(t *testing.T, s *suite) {
	o, _ := s.opts(t)
	args := make([]int, 30)
	for i := range args {
		args[i] = i
	}
	got, err := meadowrun.RunMap(context.Background(), s.fn.failIf, args, s.host, &meadowrun.MapOptions{Options: o, MaxAttempts: 2})
	var me *meadowrun.MapError
	if !errors.As(err, &me) {
		t.Fatalf("error = %v, want a *MapError", err)
	}
	var wantFailed []int
	for i, x := range args {
		if x%7 == 3 {
			wantFailed = append(wantFailed, i)
			continue
		}
		if got[i] != x+1 {
			t.Fatalf("successful task %d lost its result: got %d", i, got[i])
		}
	}
	var failed []int
	for _, te := range me.Failed {
		failed = append(failed, te.TaskID)
		if te.Attempt != 2 || te.LogFile == "" || !strings.Contains(te.Message, "always fails") {
			t.Fatalf("failed task %+v: want attempt 2, a log file and the message", te)
		}
	}
	if !slices.Equal(failed, wantFailed) || me.Total != len(args) {
		t.Fatalf("failed tasks = %v of %d, want %v of %d", failed, me.Total, wantFailed, len(args))
	}
	if !strings.Contains(err.Error(), "task 3, attempt 2") {
		t.Fatalf("the error does not list the failed task: %v", err)
	}
}

func testAsCompleted(t *testing.T, s *suite) {
	o, _ := s.opts(t)
	args := []int{5, 1, 4, 2, 3}
	seen := map[int]int{}
	for r := range meadowrun.RunMapAsCompleted(context.Background(), s.fn.sleep, args, s.host, &meadowrun.MapOptions{Options: o, Concurrency: 2}) {
		v, err := r.Result()
		if err != nil || v != args[r.TaskID] || r.Attempt != 1 || r.Worker == "" {
			t.Fatalf("result %+v, %v", r, err)
		}
		seen[r.TaskID]++
	}
	if len(seen) != len(args) {
		t.Fatalf("saw tasks %v, want each of %d once", seen, len(args))
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("task %d yielded %d times", id, n)
		}
	}
}

func testMapSeq(t *testing.T, s *suite) {
	o, _ := s.opts(t)
	seq := func(yield func(int) bool) {
		for i := range 1000 {
			if !yield(i) {
				return
			}
		}
	}
	sum, n := 0, 0
	for r := range meadowrun.RunMapSeq(context.Background(), s.fn.square, seq, s.host, &meadowrun.MapOptions{Options: o}) {
		v, err := r.Result()
		if err != nil {
			t.Fatal(err)
		}
		sum += v
		n++
	}
	if n != 1000 || sum != 332833500 {
		t.Fatalf("got %d results summing to %d, want 1000 summing to 332833500", n, sum)
	}
}

func testZeroTasks(t *testing.T, s *suite) {
	o, _ := s.opts(t)
	got, err := meadowrun.RunMap(context.Background(), s.fn.square, nil, s.host, &meadowrun.MapOptions{Options: o})
	if err != nil || len(got) != 0 {
		t.Fatalf("RunMap over no arguments = %v, %v", got, err)
	}
	for r := range meadowrun.RunMapAsCompleted(context.Background(), s.fn.square, []int{}, s.host, &meadowrun.MapOptions{Options: o}) {
		t.Fatalf("unexpected result %+v", r)
	}
}

func testUnknownFunction(t *testing.T, s *suite) {
	o, _ := s.opts(t)
	_, err := meadowrun.RunFunction(context.Background(), meadowrun.Named[int, int]("hosttest.NoSuchFunction").With(1), s.host, &o)
	if !errors.Is(err, meadowrun.ErrUnknownFunction) || !strings.Contains(err.Error(), "hosttest.NoSuchFunction") {
		t.Fatalf("error = %v, want ErrUnknownFunction naming the function", err)
	}
}

func testRegistryMismatch(t *testing.T, s *suite) {
	o, _ := s.opts(t)
	wrong := meadowrun.Named[string, string]("hosttest.Square")
	_, err := meadowrun.RunMap(context.Background(), wrong, []string{"a", "b"}, s.host, &meadowrun.MapOptions{Options: o})
	if !errors.Is(err, meadowrun.ErrRegistryMismatch) || !strings.Contains(err.Error(), "func(int) int") {
		t.Fatalf("error = %v, want ErrRegistryMismatch showing the worker's types", err)
	}
}

func testEncoding(t *testing.T, s *suite) {
	o, _ := s.opts(t)
	ctx := context.Background()
	got, err := meadowrun.RunMap(ctx, s.fn.echoArg, []unencodable{{}, {Fail: true}, {}}, s.host, &meadowrun.MapOptions{Options: o, MaxAttempts: 3})
	var me *meadowrun.MapError
	if !errors.As(err, &me) || len(me.Failed) != 1 || me.Failed[0].TaskID != 1 || me.Failed[0].Kind != meadowrun.KindEncoding || me.Failed[0].Attempt != 1 {
		t.Fatalf("unencodable argument: %v", err)
	}
	if got[0] != 1 || got[2] != 1 {
		t.Fatalf("the other tasks lost their results: %v", got)
	}
	bad, err := meadowrun.RunMap(ctx, s.fn.badResult, []int{0, 1, 2}, s.host, &meadowrun.MapOptions{Options: o, MaxAttempts: 3})
	if !errors.As(err, &me) || len(me.Failed) != 1 || me.Failed[0].TaskID != 1 || me.Failed[0].Kind != meadowrun.KindEncoding || me.Failed[0].Attempt != 1 {
		t.Fatalf("unencodable result: %v", err)
	}
	if len(bad) != 3 {
		t.Fatalf("results = %v", bad)
	}
	if _, err := meadowrun.TryRegister("hosttest.Chan", func(ctx context.Context, c chan int) (int, error) { return 0, nil }); err == nil || !strings.Contains(err.Error(), "chan") {
		t.Fatalf("registering a function of a channel: %v, want an error at registration", err)
	}
}

func testInvalidResources(t *testing.T, s *suite) {
	for _, r := range []meadowrun.Resources{
		{LogicalCPU: -1}, {MemoryGB: math.NaN()}, {GPUs: math.Inf(1)}, {MaxEvictionRate: 101}, {GPUs: 1.5}, {Flags: []string{""}},
	} {
		o, _ := s.opts(t)
		o.Resources = &r
		_, err := meadowrun.RunFunction(context.Background(), s.fn.square.With(1), s.host, &o)
		if !errors.Is(err, meadowrun.ErrInvalidResources) {
			t.Fatalf("resources %+v: error = %v, want ErrInvalidResources", r, err)
		}
	}
}

func testNeverFits(t *testing.T, s *suite) {
	o, _ := s.opts(t)
	o.Resources = &meadowrun.Resources{LogicalCPU: 100000}
	start := time.Now()
	_, err := meadowrun.RunMap(context.Background(), s.fn.square, []int{1, 2}, s.host, &meadowrun.MapOptions{Options: o})
	if !errors.Is(err, meadowrun.ErrNeverFits) || !strings.Contains(err.Error(), "100000") {
		t.Fatalf("error = %v, want ErrNeverFits naming the request", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("took %s: a request that can never fit must fail at once", d)
	}
}

func testUnsupported(t *testing.T, s *suite) {
	if !s.caps.Sidecars {
		o, _ := s.opts(t)
		o.Sidecars = []meadowrun.Container{{Repository: "redis"}}
		if _, err := meadowrun.RunFunction(context.Background(), s.fn.square.With(1), s.host, &o); !errors.Is(err, meadowrun.ErrUnsupported) {
			t.Fatalf("sidecar: error = %v, want ErrUnsupported", err)
		}
	}
	if !s.caps.Ports {
		o, _ := s.opts(t)
		o.Ports = []string{"8080-8089"}
		if _, err := meadowrun.RunFunction(context.Background(), s.fn.square.With(1), s.host, &o); !errors.Is(err, meadowrun.ErrUnsupported) {
			t.Fatalf("ports: error = %v, want ErrUnsupported", err)
		}
	}
	if !s.caps.MemoryLimits {
		o, _ := s.opts(t)
		o.Resources = &meadowrun.Resources{MemoryGB: 0.5}
		if _, err := meadowrun.RunFunction(context.Background(), s.fn.square.With(1), s.host, &o); !errors.Is(err, meadowrun.ErrUnsupported) {
			t.Fatalf("memory limit: error = %v, want ErrUnsupported", err)
		}
	}
	for _, d := range []meadowrun.Deployment{
		meadowrun.ContainerImage("busybox", "1.36", meadowrun.Secret{}, nil),
		meadowrun.GitRepo("https://example.invalid/repo.git", "main", "", nil),
		meadowrun.PreinstalledInterpreter("/usr/bin/python3", nil),
		meadowrun.PipRequirementsFile("requirements.txt", ""),
	} {
		python := d.Kind() == "interpreter" || d.Kind() == "environment"
		if s.caps.CanDeploy(driver.DeploymentKind(d.Kind())) && (!python || s.caps.CanRun(driver.RuntimePython)) {
			continue
		}
		o, _ := s.opts(t)
		o.Deployment = d
		if _, err := meadowrun.RunFunction(context.Background(), s.fn.square.With(1), s.host, &o); !errors.Is(err, meadowrun.ErrUnsupported) {
			t.Fatalf("%s deployment: error = %v, want ErrUnsupported", d.Kind(), err)
		}
	}
	o, _ := s.opts(t)
	o.Ports = []string{"70000"}
	if _, err := meadowrun.RunFunction(context.Background(), s.fn.square.With(1), s.host, &o); err == nil || !strings.Contains(err.Error(), "invalid port") {
		t.Fatalf("port 70000: error = %v, want an invalid port error", err)
	}
}

func testCancelMap(t *testing.T, s *suite) {
	o, out := s.opts(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	args := []int{1, 1, 60000, 60000, 60000, 60000}
	var got []int
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		got, err = meadowrun.RunMap(ctx, s.fn.sleepSaying, args, s.host, &meadowrun.MapOptions{Options: o, Concurrency: 2})
	}()
	// Cancel once the short tasks have finished (their output comes just
	// before their results; the margin covers the results' way); the long
	// ones are then running. A host that does not capture output (in
	// process) starts nothing, so the margin alone is enough there.
	for deadline := time.Now().Add(60 * time.Second); s.caps.CapturesOutput && strings.Count(out.String(), "slept 1 ms") < 2; {
		if time.Now().After(deadline) {
			t.Fatalf("the two short tasks did not finish within 60 s; output: %q", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		// What every goroutine waits on is what a fix needs to know.
		_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
		t.Fatal("RunMap did not return within 10 s of cancellation (goroutines dumped to stderr)")
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error = %v, want context.Canceled", err)
	}
	if got[0] != 1 || got[1] != 1 {
		t.Fatalf("results of completed tasks were lost: %v", got)
	}
	t.Logf("RunMap returned %s after cancellation", time.Since(start))
}

func testCommand(t *testing.T, s *suite) {
	o, out := s.opts(t)
	script := `echo "out $1"; echo "err $1" >&2; echo "$MEADOWRUN_CONTEXT_VARIABLES"; printf '{"answer":42}' > "$MEADOWRUN_RESULT_FILE"; exit 3`
	jc, err := meadowrun.RunCommand(context.Background(), []string{"sh", "-c", script, "sh", "hello"}, s.host,
		&meadowrun.CommandOptions{Options: o, ContextVariables: map[string]any{"k": "v"}})
	var te *meadowrun.TaskError
	if !errors.As(err, &te) || te.Kind != meadowrun.KindExit || te.ExitCode != 3 {
		t.Fatalf("error = %v, want a KindExit TaskError with code 3", err)
	}
	if jc == nil || jc.ReturnCode != 3 || string(jc.Result) != `{"answer":42}` || jc.LogFile == "" {
		t.Fatalf("completion = %+v", jc)
	}
	for _, want := range []string{"[task 0] out hello", "[task 0] err hello", `[task 0] {"k":"v"}`} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("streamed output lacks %q:\n%s", want, out.String())
		}
	}
	logged, err := os.ReadFile(jc.LogFile)
	if err != nil || !strings.Contains(string(logged), "[task 0] out hello") {
		t.Fatalf("log file %s: %q, %v", jc.LogFile, logged, err)
	}
	jc, err = meadowrun.RunCommand(context.Background(), []string{"true"}, s.host, &meadowrun.CommandOptions{Options: o})
	if err != nil || jc.ReturnCode != 0 {
		t.Fatalf("true: %+v, %v", jc, err)
	}
}

func testCommandNotFound(t *testing.T, s *suite) {
	o, out := s.opts(t)
	jc, err := meadowrun.RunCommand(context.Background(), []string{"no-such-command-xyz"}, s.host, &meadowrun.CommandOptions{Options: o})
	var te *meadowrun.TaskError
	if !errors.As(err, &te) || jc == nil || jc.ReturnCode != 127 || te.Type != "command-not-found" {
		t.Fatalf("completion %+v, error %v: want return code 127 and a command-not-found error", jc, err)
	}
	if !strings.Contains(out.String(), "command not found: no-such-command-xyz") {
		t.Fatalf("output does not say the command was not found:\n%s", out.String())
	}
}

func testWarmReuse(t *testing.T, s *suite) {
	o, _ := s.opts(t)
	var workers []string
	for range 3 {
		for r := range meadowrun.RunMapAsCompleted(context.Background(), s.fn.workerPID, []int{0}, s.host, &meadowrun.MapOptions{Options: o}) {
			if r.Err != nil {
				t.Fatal(r.Err)
			}
			workers = append(workers, fmt.Sprintf("%s/%d", r.Worker, r.Value))
		}
	}
	if workers[0] != workers[1] || workers[1] != workers[2] {
		t.Fatalf("consecutive calls ran on workers %v; want one warm worker reused", workers)
	}
}

func testStartJob(t *testing.T, s *suite) {
	o, _ := s.opts(t)
	ctx := context.Background()
	j, err := meadowrun.StartFunction(ctx, s.fn.square.With(9), s.host, &o)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := j.Wait(ctx); err != nil || v != 81 || j.ID() == "" {
		t.Fatalf("Wait = %d, %v (job %q)", v, err, j.ID())
	}
	j2, err := meadowrun.StartFunction(ctx, s.fn.sleep.With(60000), s.host, &o)
	if err != nil {
		t.Fatal(err)
	}
	j2.Cancel()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := j2.Wait(wctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled job: Wait error = %v, want context.Canceled", err)
	}
	m, err := meadowrun.StartMap(ctx, s.fn.square, []int{1, 2, 3}, s.host, &meadowrun.MapOptions{Options: o})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := m.Wait(ctx); err != nil || !slices.Equal(got, []int{1, 4, 9}) {
		t.Fatalf("map job: %v, %v", got, err)
	}
}

func testLargePayload(t *testing.T, s *suite) {
	o, _ := s.opts(t)
	big := make([]byte, 10<<20)
	for i := range big {
		big[i] = byte(i * 7)
	}
	got, err := meadowrun.RunMap(context.Background(), s.fn.echoBytes, [][]byte{big, big[:100], {}}, s.host, &meadowrun.MapOptions{Options: o})
	if err != nil || !bytes.Equal(got[0], big) || !bytes.Equal(got[1], big[:100]) || len(got[2]) != 0 {
		t.Fatalf("payloads did not round-trip: %v", err)
	}
}

func testLogs(t *testing.T, s *suite) {
	o, out := s.opts(t)
	rs, err := meadowrun.RunMap(context.Background(), s.fn.printer, []int{0, 1, 2, 3}, s.host, &meadowrun.MapOptions{Options: o, Concurrency: 2})
	if err != nil || len(rs) != 4 {
		t.Fatal(err)
	}
	for i := range 4 {
		for _, want := range []string{fmt.Sprintf("[task %d] stdout line of %d\n", i, i), fmt.Sprintf("[task %d] stderr line of %d\n", i, i)} {
			if !strings.Contains(out.String(), want) {
				t.Fatalf("output lacks %q:\n%s", want, out.String())
			}
		}
	}
}

func testExit(t *testing.T, s *suite) {
	o, out := s.opts(t)
	got, err := meadowrun.RunMap(context.Background(), s.fn.exits, []int{3}, s.host, &meadowrun.MapOptions{Options: o})
	var te *meadowrun.TaskError
	if !errors.As(err, &te) || te.Kind != meadowrun.KindExit || te.ExitCode != 3 {
		t.Fatalf("error = %v, want KindExit with code 3", err)
	}
	want := "about to exit"
	if s.caps.CapturesOutput {
		// What a task prints right before it exits is labelled with the
		// task, not with the worker.
		want = "[task 0] about to exit\n"
	}
	if len(got) != 1 || !strings.Contains(out.String(), want) {
		t.Fatalf("the output before the exit lacks %q:\n%s", want, out.String())
	}
}

func testKilledWorker(t *testing.T, s *suite) {
	o, _ := s.opts(t)
	// Four workers for four tasks: each worker holds one task, so the task
	// that killed its worker is known and loses an attempt.
	o.Resources = &meadowrun.Resources{LogicalCPU: 0.5}
	dir := t.TempDir()
	args := []marked{{dir, 1}, {dir, 2}, {dir, 3}, {dir, 4}}
	var results []meadowrun.TaskResult[int]
	for r := range meadowrun.RunMapAsCompleted(context.Background(), s.fn.killSelfOnce, args, s.host, &meadowrun.MapOptions{Options: o, MaxAttempts: 2, Concurrency: 4}) {
		results = append(results, r)
	}
	if len(results) != 4 {
		t.Fatalf("got %d results, want 4", len(results))
	}
	for _, r := range results {
		if r.Err != nil || r.Value != args[r.TaskID].ID || r.Attempt != 2 {
			t.Fatalf("task %d: value %d attempt %d err %v; want its id on attempt 2", r.TaskID, r.Value, r.Attempt, r.Err)
		}
	}
	// Without retries the kill is reported as a crash.
	_, err := meadowrun.RunFunction(context.Background(), s.fn.killSelfOnce.With(marked{dir, 99}), s.host, &o)
	var te *meadowrun.TaskError
	if !errors.As(err, &te) || te.Kind != meadowrun.KindCrash || te.Signal != "killed" {
		t.Fatalf("error = %v, want a KindCrash TaskError with signal killed", err)
	}
}

func testPrefetchedCrash(t *testing.T, s *suite) {
	const n, culprit = 6, 4
	cases := []struct {
		name        string
		kill        bool // SIGKILL rather than os.Exit(3)
		always      bool // on every start, not only the first
		maxAttempts int
		kind        meadowrun.ErrorKind // of the culprit; 0: it succeeds
		attempt     int                 // the culprit's reported attempt
	}{
		{"with no retry, the task that exits fails once and the others run once", false, true, 1, meadowrun.KindExit, 1},
		{"with no retry, a task that kills its worker once fails as a crash", true, false, 1, meadowrun.KindCrash, 1},
		{"a task that kills its worker once succeeds on attempt 2", true, false, 2, 0, 2},
		{"a task that exits every time fails after its attempts", false, true, 3, meadowrun.KindExit, 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o, out := s.opts(t)
			dir := t.TempDir()
			args := make([]crashArg, n)
			for i := range args {
				args[i] = crashArg{Dir: dir, ID: i, Culprit: culprit, Kill: tc.kill, Always: tc.always}
			}
			// One worker: it receives every task at once and holds the
			// others while the culprit runs.
			var rs []meadowrun.TaskResult[int]
			for r := range meadowrun.RunMapAsCompleted(context.Background(), s.fn.crashing, args, s.host,
				&meadowrun.MapOptions{Options: o, Concurrency: 1, MaxAttempts: tc.maxAttempts}) {
				rs = append(rs, r)
			}
			if len(rs) != n {
				t.Fatalf("got %d results, want %d: %+v", len(rs), n, rs)
			}
			for _, r := range rs {
				wantStarts, wantAttempt := 1, 1
				if r.TaskID == culprit {
					wantAttempt = tc.attempt
					wantStarts = tc.attempt
					var te *meadowrun.TaskError
					switch {
					case tc.kind == 0 && r.Err != nil:
						t.Fatalf("task %d: %v, want success", r.TaskID, r.Err)
					case tc.kind != 0 && (!errors.As(r.Err, &te) || te.Kind != tc.kind || te.Attempt != tc.attempt):
						t.Fatalf("task %d: %v, want a %s error on attempt %d", r.TaskID, r.Err, tc.kind, tc.attempt)
					}
				} else if r.Err != nil || r.Value != r.TaskID {
					t.Fatalf("task %d: %d, %v; want its id", r.TaskID, r.Value, r.Err)
				}
				if r.Attempt != wantAttempt {
					t.Errorf("task %d reports attempt %d, want %d", r.TaskID, r.Attempt, wantAttempt)
				}
				if got := startsOf(dir, r.TaskID); got != wantStarts {
					t.Errorf("task %d started %d times, want %d", r.TaskID, got, wantStarts)
				}
			}
			if s.caps.CapturesOutput {
				want := fmt.Sprintf("[task %d] task %d takes its worker down\n", culprit, culprit)
				if !strings.Contains(out.String(), want) {
					t.Errorf("output lacks %q:\n%s", want, out.String())
				}
			}
		})
	}
}

func testDetached(t *testing.T, s *suite) {
	// The journal of this test, and of the supervisors it starts.
	t.Setenv("XDG_STATE_HOME", t.TempDir())
	ctx := context.Background()
	o, _ := s.opts(t)
	sub := &meadowrun.SubmitOptions{}
	if _, ok := meadowrun.HostURL(s.host); !ok {
		// No other process can reopen the host: this one runs the job.
		sub.InProcess = true
	}
	d, err := meadowrun.SubmitFunction(ctx, s.fn.square.With(6), s.host, &o, sub)
	if err != nil {
		t.Fatal(err)
	}
	a, err := meadowrun.Attach[int](ctx, d.ID())
	if err != nil {
		t.Fatal(err)
	}
	if v, err := a.Wait(ctx); v != 36 || err != nil {
		t.Fatalf("attached function: %d, %v; want 36", v, err)
	}
	m, err := meadowrun.SubmitMap(ctx, s.fn.square, []int{1, 2, 3}, s.host, &meadowrun.MapOptions{Options: o}, sub)
	if err != nil {
		t.Fatal(err)
	}
	am, err := meadowrun.AttachMap[int](ctx, m.ID())
	if err != nil {
		t.Fatal(err)
	}
	if got, err := am.Wait(ctx); err != nil || !slices.Equal(got, []int{1, 4, 9}) {
		t.Fatalf("attached map: %v, %v", got, err)
	}
	if info, err := meadowrun.GetJob(ctx, m.ID()); err != nil || info.State != meadowrun.JobSucceeded || info.Done != 3 {
		t.Fatalf("finished map: %+v, %v", info, err)
	}
	long, err := meadowrun.SubmitMap(ctx, s.fn.sleep, []int{60000, 60000, 60000}, s.host, &meadowrun.MapOptions{Options: o}, sub)
	if err != nil {
		t.Fatal(err)
	}
	if err := meadowrun.CancelJob(ctx, long.ID()); err != nil {
		t.Fatal(err)
	}
	al, err := meadowrun.AttachMap[int](ctx, long.ID())
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := al.Wait(wctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled map: Wait error = %v, want context.Canceled", err)
	}
	if info, err := meadowrun.GetJob(ctx, long.ID()); err != nil || info.State != meadowrun.JobCancelled {
		t.Fatalf("cancelled map: %+v, %v", info, err)
	}
}

func testClose(t *testing.T, s *suite) {
	ctx := context.Background()
	h := s.host
	o, _ := s.opts(t)
	before, err := meadowrun.RunFunction(ctx, s.fn.workerPID.With(0), h, &o)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	after, err := meadowrun.RunFunction(ctx, s.fn.workerPID.With(0), h, &o)
	switch {
	case errors.Is(err, meadowrun.ErrHostClosed):
	case err == nil && after != before:
		// A host shared by the process (Local) stays usable: its warm
		// worker was stopped and a new one started.
	default:
		t.Fatalf("after Close: worker %d (before: %d), %v; want ErrHostClosed or a new worker", after, before, err)
	}
}

func testOOM(t *testing.T, s *suite) {
	o, _ := s.opts(t)
	o.Resources = &meadowrun.Resources{MemoryGB: 0.0625} // 64 MiB
	got, err := meadowrun.RunMap(context.Background(), s.fn.alloc, []int{8, 256}, s.host, &meadowrun.MapOptions{Options: o})
	var te *meadowrun.TaskError
	if !errors.As(err, &te) || te.Kind != meadowrun.KindOOM || te.TaskID != 1 || te.LimitBytes != 64<<20 {
		t.Fatalf("error = %v, want KindOOM for task 1 with a 64 MiB limit", err)
	}
	if got[0] != 8 {
		t.Fatalf("the task within its limit lost its result: %v", got)
	}
}

func testRetryMoreMemory(t *testing.T, s *suite) {
	o, _ := s.opts(t)
	o.Resources = &meadowrun.Resources{MemoryGB: 0.125} // 128 MiB; 160 MiB needs attempt 2 (256 MiB)
	var rs []meadowrun.TaskResult[int]
	for r := range meadowrun.RunMapAsCompleted(context.Background(), s.fn.alloc, []int{160}, s.host,
		&meadowrun.MapOptions{Options: o, MaxAttempts: 3, RetryWithMoreMemory: true}) {
		rs = append(rs, r)
	}
	if len(rs) != 1 || rs[0].Err != nil || rs[0].Value != 160 || rs[0].Attempt != 2 {
		t.Fatalf("results %+v: want success on attempt 2 with twice the memory", rs)
	}
}

func testMillion(t *testing.T, s *suite) {
	n := s.cfg.MillionTasks
	if n == 0 {
		n = 1_000_000
	}
	o, _ := s.opts(t)
	seq := func(yield func(int) bool) {
		for i := range n {
			if !yield(i) {
				return
			}
		}
	}
	count, sum := 0, 0
	seen := make([]bool, n)
	for r := range meadowrun.RunMapSeq(context.Background(), s.fn.square, seq, s.host, &meadowrun.MapOptions{Options: o, Concurrency: 2}) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		if seen[r.TaskID] {
			t.Fatalf("task %d yielded twice", r.TaskID)
		}
		seen[r.TaskID] = true
		count++
		sum += r.Value % 1000
	}
	if count != n {
		t.Fatalf("got %d results, want %d", count, n)
	}
}
