package meadowrun_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/hosttest"
	"github.com/meadowrun-go/meadowrun/internal/pyworker/pytest"
	"github.com/meadowrun-go/meadowrun/local"
)

// pyOptions run on python3 with the test package testdata/py/mrtest on
// its path, quiet unless out is given.
func pyOptions(t *testing.T, out io.Writer) meadowrun.Options {
	t.Helper()
	pytest.Require(t)
	dir, err := filepath.Abs(filepath.Join("testdata", "py"))
	if err != nil {
		t.Fatal(err)
	}
	o := quiet(t)
	if out != nil {
		o.Output = out
	}
	o.Deployment = meadowrun.PreinstalledInterpreter("python3", map[string]string{"PYTHONPATH": dir})
	return o
}

var (
	pySquare    = meadowrun.Named[int, int]("mrtest.fns.square")
	pyAdd       = meadowrun.Named[[2]int, int]("mrtest.fns.add")
	pyFails     = meadowrun.Named[pyMessage, int]("mrtest.fns.fails")
	pyCustom    = meadowrun.Named[pyMessage, int]("mrtest.fns.fails_custom")
	pyPrints    = meadowrun.Named[int, int]("mrtest.fns.prints")
	pyPID       = meadowrun.Named[int, int]("mrtest.fns.pid")
	pyAllocates = meadowrun.Named[int, int]("mrtest.fns.allocates")
	pySleeps    = meadowrun.Named[int, int]("mrtest.fns.sleeps")
	pyCrashing  = meadowrun.Named[pyCrashArg, int]("mrtest.fns.crashing")
	pyBadResult = meadowrun.Named[int, int]("mrtest.fns.unencodable")
)

type pyMessage struct {
	Message string `json:"message"`
}

type pyCrashArg struct {
	Dir     string `json:"dir"`
	ID      int    `json:"id"`
	Culprit int    `json:"culprit"`
}

func TestPythonFunctionReturnsItsResult(t *testing.T) {
	h := newLocal(t, local.Options{})
	o := pyOptions(t, nil)
	ctx := context.Background()
	if got, err := meadowrun.RunFunction(ctx, pySquare.With(7), h, &o); err != nil || got != 49 {
		t.Fatalf("square(7) = %d, %v; want 49", got, err)
	}
	if got, err := meadowrun.RunFunction(ctx, pyAdd.With([2]int{2, 3}), h, &o); err != nil || got != 5 {
		t.Fatalf("add([2, 3]) = %d, %v; want 5 (a JSON array is one argument)", got, err)
	}
}

func TestPythonMapReturnsResultsInOrder(t *testing.T) {
	h := newLocal(t, local.Options{LogicalCPU: 2})
	o := pyOptions(t, nil)
	args := make([]int, 50)
	for i := range args {
		args[i] = i
	}
	got, err := meadowrun.RunMap(context.Background(), pySquare, args, h, &meadowrun.MapOptions{Options: o, Concurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range got {
		if v != i*i {
			t.Fatalf("result %d = %d, want %d", i, v, i*i)
		}
	}
	n := 0
	for r := range meadowrun.RunMapAsCompleted(context.Background(), pySquare, args[:10], h, &meadowrun.MapOptions{Options: o, Concurrency: 2}) {
		if r.Err != nil || r.Value != r.TaskID*r.TaskID {
			t.Fatalf("task %d = %d, %v", r.TaskID, r.Value, r.Err)
		}
		n++
	}
	if n != 10 {
		t.Fatalf("RunMapAsCompleted gave %d results, want 10", n)
	}
}

func TestPythonExceptionIsATaskError(t *testing.T) {
	h := newLocal(t, local.Options{})
	o := pyOptions(t, nil)
	tests := []struct {
		name     string
		fn       meadowrun.Func[pyMessage, int]
		wantType string
	}{
		{"a built-in exception is named by its type", pyFails, "ValueError"},
		{"a module's exception is named with its module", pyCustom, "mrtest.fns.NotFound"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := meadowrun.RunFunction(context.Background(), tc.fn.With(pyMessage{"disk on fire"}), h, &o)
			var te *meadowrun.TaskError
			if !errors.As(err, &te) {
				t.Fatalf("error = %v, want a *TaskError", err)
			}
			if te.Kind != meadowrun.KindError || te.Type != tc.wantType || te.Message != "disk on fire" {
				t.Fatalf("TaskError = kind %s, type %q, message %q; want error, %q, %q", te.Kind, te.Type, te.Message, tc.wantType, "disk on fire")
			}
			if !strings.Contains(te.Stack, "Traceback (most recent call last)") || !strings.Contains(te.Stack, "fns.py") {
				t.Fatalf("stack is not the Python traceback:\n%s", te.Stack)
			}
		})
	}
	t.Run("an unencodable result is an encoding error", func(t *testing.T) {
		_, err := meadowrun.RunFunction(context.Background(), pyBadResult.With(1), h, &o)
		var te *meadowrun.TaskError
		if !errors.As(err, &te) || te.Kind != meadowrun.KindEncoding || !strings.Contains(te.Message, "JSON") {
			t.Fatalf("error = %v, want a KindEncoding TaskError", err)
		}
	})
	t.Run("strings and bytes travel raw, as str and bytes", func(t *testing.T) {
		ctx := context.Background()
		if got, err := meadowrun.RunFunction(ctx, meadowrun.Named[string, string]("mrtest.fns.shout").With("héllo"), h, &o); err != nil || got != "HÉLLO!" {
			t.Fatalf("shout(%q) = %q, %v; want %q", "héllo", got, err, "HÉLLO!")
		}
		if got, err := meadowrun.RunFunction(ctx, meadowrun.Named[[]byte, []byte]("mrtest.fns.reverse_bytes").With([]byte{0, 1, 255}), h, &o); err != nil || string(got) != string([]byte{255, 1, 0}) {
			t.Fatalf("reverse_bytes = %v, %v; want [255 1 0]", got, err)
		}
		_, err := meadowrun.RunFunction(ctx, meadowrun.Named[int, string]("mrtest.fns.square").With(3), h, &o)
		var te *meadowrun.TaskError
		if !errors.As(err, &te) || te.Kind != meadowrun.KindEncoding || !strings.Contains(te.Message, "expects a str") {
			t.Fatalf("an int returned for a string result: %v, want a KindEncoding error saying a str was expected", err)
		}
	})
}

func TestPythonOutputIsLabelledWithItsTask(t *testing.T) {
	h := newLocal(t, local.Options{})
	out := &hosttest.SyncBuffer{}
	o := pyOptions(t, out)
	if _, err := meadowrun.RunMap(context.Background(), pyPrints, []int{10, 11, 12}, h, &meadowrun.MapOptions{Options: o, Concurrency: 1}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		for _, want := range []string{fmt.Sprintf("[task %d] hello from %d\n", i, 10+i), fmt.Sprintf("[task %d] to stderr %d\n", i, 10+i)} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("output lacks %q:\n%s", want, out.String())
			}
		}
	}
}

func TestPythonTaskThatExitsIsChargedAlone(t *testing.T) {
	h := newLocal(t, local.Options{})
	out := &hosttest.SyncBuffer{}
	o := pyOptions(t, out)
	const n, culprit = 6, 4
	dir := t.TempDir()
	args := make([]pyCrashArg, n)
	for i := range args {
		args[i] = pyCrashArg{Dir: dir, ID: i, Culprit: culprit}
	}
	// One worker: it receives every task at once and holds the others
	// while the culprit runs.
	var rs []meadowrun.TaskResult[int]
	for r := range meadowrun.RunMapAsCompleted(context.Background(), pyCrashing, args, h, &meadowrun.MapOptions{Options: o, Concurrency: 1}) {
		rs = append(rs, r)
	}
	if len(rs) != n {
		t.Fatalf("got %d results, want %d: %+v", len(rs), n, rs)
	}
	for _, r := range rs {
		if r.TaskID == culprit {
			var te *meadowrun.TaskError
			if !errors.As(r.Err, &te) || te.Kind != meadowrun.KindExit || te.ExitCode != 3 || te.Attempt != 1 {
				t.Fatalf("task %d: %v, want KindExit with code 3 on attempt 1", r.TaskID, r.Err)
			}
		} else if r.Err != nil || r.Value != r.TaskID {
			t.Fatalf("task %d: %d, %v; want its id", r.TaskID, r.Value, r.Err)
		}
		starts, _ := filepath.Glob(filepath.Join(dir, fmt.Sprintf("start-%d-*", r.TaskID)))
		if len(starts) != 1 {
			t.Errorf("task %d started %d times, want once", r.TaskID, len(starts))
		}
	}
	if want := fmt.Sprintf("[task %d] task %d takes its worker down\n", culprit, culprit); strings.Count(out.String(), want) != 1 {
		t.Errorf("output has %q %d times, want once:\n%s", want, strings.Count(out.String(), want), out.String())
	}
}

func TestPythonTaskOverItsMemoryLimitIsOOM(t *testing.T) {
	h := newLocal(t, local.Options{})
	o := pyOptions(t, nil)
	o.Resources = &meadowrun.Resources{MemoryGB: 0.0625} // 64 MiB
	got, err := meadowrun.RunMap(context.Background(), pyAllocates, []int{4, 256}, h, &meadowrun.MapOptions{Options: o})
	var te *meadowrun.TaskError
	if !errors.As(err, &te) || te.Kind != meadowrun.KindOOM || te.TaskID != 1 || te.LimitBytes != 64<<20 {
		t.Fatalf("error = %v, want KindOOM for task 1 with a 64 MiB limit", err)
	}
	if got[0] != 4 {
		t.Fatalf("the task within its limit lost its result: %v", got)
	}
}

func TestCancellingAPythonMapStopsItsWorkers(t *testing.T) {
	h := newLocal(t, local.Options{LogicalCPU: 2})
	started := newPIDWatcher(2)
	o := pyOptions(t, started)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := meadowrun.RunMap(ctx, pySleeps, []int{600, 600}, h, &meadowrun.MapOptions{Options: o, Concurrency: 2})
		done <- err
	}()
	pids := started.wait()
	// pidfds become readable when their process exits: a signal to wait
	// on, not a poll.
	fds := make([]int, 0, len(pids))
	for _, pid := range pids {
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			t.Fatalf("worker %d: %v", pid, err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		fds = append(fds, fd)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("error = %v, want context.Canceled", err)
	}
	for i, fd := range fds {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if n, err := unix.Poll(pfd, 10_000); err != nil || n != 1 {
			t.Fatalf("worker %d still runs 10 s after its map was cancelled (%d, %v)", pids[i], n, err)
		}
	}
}

func TestPythonWorkersAreWarmAndReused(t *testing.T) {
	h := newLocal(t, local.Options{})
	o := pyOptions(t, nil)
	ctx := context.Background()
	first, err := meadowrun.RunFunction(ctx, pyPID.With(0), h, &o)
	if err != nil {
		t.Fatal(err)
	}
	second, err := meadowrun.RunFunction(ctx, pyPID.With(0), h, &o)
	if err != nil || second != first {
		t.Fatalf("second call ran in worker %d (%v), want the warm worker %d", second, err, first)
	}
	// A Go function on the same host never gets the Python worker.
	if v, err := meadowrun.RunFunction(ctx, typed.With(3), h, &meadowrun.Options{Output: o.Output, LogDir: o.LogDir}); err != nil || v != 3 {
		t.Fatalf("Go function after Python ones = %d, %v", v, err)
	}
}

func TestAnUnknownPythonFunctionIsAClearError(t *testing.T) {
	h := newLocal(t, local.Options{})
	o := pyOptions(t, nil)
	tests := []struct {
		name, fn, want string
	}{
		{"a missing module is named", "mrtest.nosuch.f", "mrtest.nosuch"},
		{"a missing top-level module is named", "nosuchpkg.mod.f", "nosuchpkg"},
		{"a missing function is named with its module", "mrtest.fns.nosuch", "has no nosuch"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := meadowrun.RunFunction(context.Background(), meadowrun.Named[int, int](tc.fn).With(1), h, &o)
			if !errors.Is(err, meadowrun.ErrUnknownFunction) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.fn) {
				t.Fatalf("error = %v, want ErrUnknownFunction naming %q and %q", err, tc.fn, tc.want)
			}
		})
	}
}

// pidWatcher is a job's output that collects the pids mrtest.fns.sleeps
// prints and signals once it has seen n of them.
type pidWatcher struct {
	w    *io.PipeWriter
	pids chan int
}

func newPIDWatcher(n int) *pidWatcher {
	r, w := io.Pipe()
	p := &pidWatcher{w: w, pids: make(chan int, n)}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if _, v, ok := strings.Cut(sc.Text(), "sleeping pid="); ok {
				if pid, err := strconv.Atoi(v); err == nil {
					select {
					case p.pids <- pid:
					default:
					}
				}
			}
		}
	}()
	return p
}

func (p *pidWatcher) Write(b []byte) (int, error) { return p.w.Write(b) }

// wait returns the first n pids.
func (p *pidWatcher) wait() []int {
	pids := make([]int, 0, cap(p.pids))
	for len(pids) < cap(p.pids) {
		pids = append(pids, <-p.pids)
	}
	return pids
}

func TestADetachedPythonFunctionIsAttachedTo(t *testing.T) {
	t.Setenv("XDG_STATE_HOME", t.TempDir())
	o := pyOptions(t, nil)
	ctx := context.Background()
	d, err := meadowrun.SubmitFunction(ctx, pySquare.With(6), meadowrun.Local(), &o, &meadowrun.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	a, err := meadowrun.Attach[int](ctx, d.ID())
	if err != nil {
		t.Fatal(err)
	}
	if v, err := a.Wait(ctx); v != 36 || err != nil {
		t.Fatalf("attached Python function: %d, %v; want 36", v, err)
	}
}
