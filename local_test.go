package meadowrun_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/hosttest"
	"github.com/meadowrun-go/meadowrun/internal/worker"
	"github.com/meadowrun-go/meadowrun/local"
)

// altRegistry makes a worker register local.Typed with other types, to
// model a worker built from other code.
const altRegistry = "MEADOWRUN_TEST_ALT_REGISTRY"

var typed meadowrun.Func[int, int]

func init() {
	if os.Getenv(altRegistry) == "1" {
		meadowrun.Register("local.Typed", func(ctx context.Context, s string) (string, error) { return s, nil })
		return
	}
	typed = meadowrun.Register("local.Typed", func(ctx context.Context, x int) (int, error) { return x, nil })
}

var (
	// sleepPID writes its worker's pid into dir, then sleeps until killed
	// or cancelled; on an attempt after the first it returns at once.
	sleepPID = meadowrun.Register("local.SleepPID", func(ctx context.Context, dir string) (int, error) {
		p := filepath.Join(dir, strconv.Itoa(os.Getpid()))
		if _, err := os.Stat(filepath.Join(dir, "again")); err == nil {
			return os.Getpid(), nil
		}
		if err := os.WriteFile(p+".tmp", nil, 0o644); err != nil {
			return 0, err
		}
		os.Rename(p+".tmp", p+".pid")
		select {
		case <-time.After(time.Minute):
		case <-ctx.Done():
		}
		return os.Getpid(), nil
	})
	// printExitForwarded prints a line and ends its process with code 3
	// right after the line was forwarded to the coordinator, before the
	// worker consumed it from its output socket.
	printExitForwarded = meadowrun.Register("local.PrintExitForwarded", func(ctx context.Context, x int) (int, error) {
		worker.SetAfterForwardHook(func() { os.Exit(3) })
		fmt.Printf("last words of %d\n", x)
		time.Sleep(time.Minute)
		return x, nil
	})
	workerName = meadowrun.Register("local.Env", func(ctx context.Context, name string) (string, error) {
		return os.Getenv(name), nil
	})
)

func newLocal(t *testing.T, opts local.Options) *meadowrun.Host {
	t.Helper()
	h, err := local.NewHost(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func quiet(t *testing.T) meadowrun.Options {
	return meadowrun.Options{Output: &strings.Builder{}, LogDir: t.TempDir()}
}

func TestConformanceLocalWatchdog(t *testing.T) {
	hosttest.Run(t, hosttest.Config{
		NewHost: func(t *testing.T) *meadowrun.Host {
			return newLocal(t, local.Options{MemoryEnforcement: "watchdog"})
		},
		MillionTasks: millionTasks / 10,
	})
}

func TestAWorkerBinaryThatDoesNotCallMainIsAClearError(t *testing.T) {
	h := newLocal(t, local.Options{Executable: "/bin/true"})
	o := quiet(t)
	_, err := meadowrun.RunFunction(context.Background(), typed.With(1), h, &o)
	if !errors.Is(err, meadowrun.ErrWorkerStart) || !strings.Contains(err.Error(), "meadowrun.Main()") {
		t.Fatalf("error = %v, want ErrWorkerStart with a hint about meadowrun.Main", err)
	}
}

func TestAWorkerWithOtherTypesIsRefused(t *testing.T) {
	h := newLocal(t, local.Options{Env: []string{altRegistry + "=1"}})
	o := quiet(t)
	_, err := meadowrun.RunFunction(context.Background(), typed.With(1), h, &o)
	if !errors.Is(err, meadowrun.ErrRegistryMismatch) || !strings.Contains(err.Error(), "func(string) string") {
		t.Fatalf("error = %v, want ErrRegistryMismatch naming the worker's types", err)
	}
}

func TestNeverFitsSaysWhatTheMachineHas(t *testing.T) {
	o := quiet(t)
	o.Resources = &meadowrun.Resources{MemoryGB: 1e6}
	_, err := meadowrun.RunFunction(context.Background(), typed.With(1), meadowrun.Local(), &o)
	if !errors.Is(err, meadowrun.ErrNeverFits) || !strings.Contains(err.Error(), "this machine has") || !strings.Contains(err.Error(), "logical CPUs") {
		t.Fatalf("error = %v, want ErrNeverFits describing the machine", err)
	}
	o.Resources = &meadowrun.Resources{Flags: []string{"quantum"}}
	if _, err := meadowrun.RunFunction(context.Background(), typed.With(1), meadowrun.Local(), &o); !errors.Is(err, meadowrun.ErrNeverFits) || !strings.Contains(err.Error(), "quantum") {
		t.Fatalf("flag: error = %v, want ErrNeverFits naming the flag", err)
	}
	o.Resources = &meadowrun.Resources{GPUs: 1}
	if _, err := meadowrun.RunFunction(context.Background(), typed.With(1), meadowrun.Local(), &o); !errors.Is(err, meadowrun.ErrNeverFits) {
		t.Skipf("this machine has a GPU: %v", err)
	}
}

func TestConcurrencyIsCappedByWhatFits(t *testing.T) {
	h := newLocal(t, local.Options{LogicalCPU: 1})
	o := quiet(t)
	names := map[string]bool{}
	for r := range meadowrun.RunMapAsCompleted(context.Background(), workerName, []string{"MEADOWRUN_WORKER_NAME", "MEADOWRUN_WORKER_NAME", "MEADOWRUN_WORKER_NAME", "MEADOWRUN_WORKER_NAME"}, h,
		&meadowrun.MapOptions{Options: o, Concurrency: 4}) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		names[r.Value] = true
	}
	if len(names) != 1 {
		t.Fatalf("tasks ran on workers %v; a 1-CPU host fits one 1-CPU worker", names)
	}
}

func TestWorkersSeeNoGPUsTheyDidNotAskFor(t *testing.T) {
	o := quiet(t)
	v, err := meadowrun.RunFunction(context.Background(), workerName.With("CUDA_VISIBLE_DEVICES"), meadowrun.Local(), &o)
	if err != nil || v != "" {
		t.Fatalf("CUDA_VISIBLE_DEVICES = %q, %v; want empty", v, err)
	}
}

// waitPIDs waits until n pid files exist in dir and returns the pids.
func waitPIDs(t *testing.T, dir string, n int) []int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		files, _ := filepath.Glob(filepath.Join(dir, "*.pid"))
		if len(files) >= n {
			var pids []int
			for _, f := range files {
				p, _ := strconv.Atoi(strings.TrimSuffix(filepath.Base(f), ".pid"))
				pids = append(pids, p)
			}
			return pids
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the tasks did not start within 30 s")
	return nil
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func TestCancellingAMapKillsEveryWorkerWithinASecond(t *testing.T) {
	h := newLocal(t, local.Options{LogicalCPU: 2})
	o := quiet(t)
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := meadowrun.RunMap(ctx, sleepPID, []string{dir, dir}, h, &meadowrun.MapOptions{Options: o, Concurrency: 2})
		done <- err
	}()
	pids := waitPIDs(t, dir, 2)
	cancel()
	start := time.Now()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("error = %v, want context.Canceled", err)
	}
	for time.Since(start) < time.Second {
		if !alive(pids[0]) && !alive(pids[1]) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("worker processes %v still alive a second after cancellation", pids)
}

func TestAWorkerKilledFromOutsideIsACrashAndIsRetried(t *testing.T) {
	o := quiet(t)
	dir := t.TempDir()
	done := make(chan []meadowrun.TaskResult[int], 1)
	go func() {
		var rs []meadowrun.TaskResult[int]
		for r := range meadowrun.RunMapAsCompleted(context.Background(), sleepPID, []string{dir}, meadowrun.Local(), &meadowrun.MapOptions{Options: o, MaxAttempts: 2}) {
			rs = append(rs, r)
		}
		done <- rs
	}()
	pid := waitPIDs(t, dir, 1)[0]
	os.WriteFile(filepath.Join(dir, "again"), nil, 0o644)
	syscall.Kill(pid, syscall.SIGKILL)
	rs := <-done
	if len(rs) != 1 || rs[0].Err != nil || rs[0].Attempt != 2 || rs[0].Value == pid {
		t.Fatalf("results %+v: want success on attempt 2 in a new worker", rs)
	}
	// Without a retry the kill is reported as such.
	os.Remove(filepath.Join(dir, "again"))
	dir2 := t.TempDir()
	errc := make(chan error, 1)
	go func() {
		_, err := meadowrun.RunFunction(context.Background(), sleepPID.With(dir2), meadowrun.Local(), &o)
		errc <- err
	}()
	syscall.Kill(waitPIDs(t, dir2, 1)[0], syscall.SIGKILL)
	var te *meadowrun.TaskError
	if err := <-errc; !errors.As(err, &te) || te.Kind != meadowrun.KindCrash || te.Signal != "killed" {
		t.Fatalf("error = %v, want KindCrash with signal killed", err)
	}
}

func TestAWorkerThatPrintsWhileStartingStillConnects(t *testing.T) {
	// GODEBUG=inittrace=1 makes the Go runtime print to stderr before main.
	h := newLocal(t, local.Options{Env: []string{"GODEBUG=inittrace=1"}})
	o := quiet(t)
	out := &strings.Builder{}
	o.Output = out
	if v, err := meadowrun.RunFunction(context.Background(), typed.With(5), h, &o); err != nil || v != 5 {
		t.Fatalf("RunFunction = %d, %v", v, err)
	}
	if !strings.Contains(out.String(), "[worker w1] init ") {
		t.Fatalf("the worker's start-up output was not kept as worker output:\n%s", out.String())
	}
}

func TestCommandsDoNotInheritTheProtocolPipes(t *testing.T) {
	o := quiet(t)
	out := &strings.Builder{}
	o.Output = out
	if _, err := meadowrun.RunCommand(context.Background(), []string{"sh", "-c", `for f in /proc/$$/fd/*; do echo "fd ${f##*/}"; done`}, meadowrun.Local(), &meadowrun.CommandOptions{Options: o}); err != nil {
		t.Fatal(err)
	}
	// (fd 3 is the directory the shell reads to expand the glob.)
	for _, fd := range []string{"4", "5"} {
		if strings.Contains(out.String(), "] fd "+fd+"\n") {
			t.Fatalf("the command inherited file descriptor %s:\n%s", fd, out.String())
		}
	}
	if !strings.Contains(out.String(), "] fd 1\n") {
		t.Fatalf("listing failed:\n%s", out.String())
	}
}

func TestOutputForwardedJustBeforeAnExitIsKeptOnce(t *testing.T) {
	o := quiet(t)
	out := &strings.Builder{}
	o.Output = out
	_, err := meadowrun.RunFunction(context.Background(), printExitForwarded.With(7), meadowrun.Local(), &o)
	var te *meadowrun.TaskError
	if !errors.As(err, &te) || te.Kind != meadowrun.KindExit || te.ExitCode != 3 {
		t.Fatalf("error = %v, want KindExit with code 3", err)
	}
	if n := strings.Count(out.String(), "[task 0] last words of 7\n"); n != 1 {
		t.Fatalf("the task's last line is in the output %d times, want once:\n%s", n, out.String())
	}
}
