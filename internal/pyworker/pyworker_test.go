package pyworker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/localhost"
	"github.com/meadowrun-go/meadowrun/internal/pyworker"
	"github.com/meadowrun-go/meadowrun/internal/sysres"
	"github.com/meadowrun-go/meadowrun/internal/wire"
)

func requirePython(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		if os.Getenv("MEADOWRUN_REQUIRE_PYTHON") == "1" {
			t.Fatalf("python3 is required (MEADOWRUN_REQUIRE_PYTHON=1) but not found: %v", err)
		}
		t.Skipf("python3 not found: %v", err)
	}
}

func TestPathWritesTheScriptOnceUnderItsDigest(t *testing.T) {
	dir := t.TempDir()
	p, err := pyworker.Path(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "python-worker", pyworker.Digest(), pyworker.FileName); p != want {
		t.Fatalf("Path = %s, want %s", p, want)
	}
	if b, err := os.ReadFile(p); err != nil || !bytes.Equal(b, pyworker.Script) {
		t.Fatalf("the cached script differs from the embedded one (%v)", err)
	}
	// A damaged copy is replaced.
	os.WriteFile(p, []byte("broken"), 0o644)
	if p2, err := pyworker.Path(dir); err != nil || p2 != p {
		t.Fatalf("Path again = %s, %v", p2, err)
	}
	if b, _ := os.ReadFile(p); !bytes.Equal(b, pyworker.Script) {
		t.Fatal("a damaged cached script was not rewritten")
	}
}

// session is a Python worker started by the local driver, spoken to
// directly.
type session struct {
	t  *testing.T
	w  driver.Worker
	wr *wire.Writer
	rd *wire.Reader
}

func start(t *testing.T) *session { return startLimited(t, 0, 0) }

// startLimited starts a Python worker with a memory limit of limit bytes
// (0: none), which the watchdog enforces, sampling every interval (0:
// its default).
func startLimited(t *testing.T, limit int64, interval time.Duration) *session {
	t.Helper()
	requirePython(t)
	ctx := context.Background()
	h, err := localhost.New(ctx, localhost.Options{CacheDir: t.TempDir(), Limiter: "watchdog", WatchInterval: interval,
		Capacity: &sysres.Capacity{LogicalCPU: 1, MemoryBytes: 1 << 30}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	py, _ := filepath.Abs(filepath.Join("..", "..", "testdata", "py"))
	w, err := h.Start(ctx, driver.WorkerSpec{Name: "p1", Runtime: driver.RuntimePython, Env: map[string]string{"PYTHONPATH": py},
		Resources:  driver.Resources{MemoryBytes: limit},
		Deployment: driver.Deployment{Kind: driver.DeployInterpreter, Interpreter: "python3"}})
	if err != nil {
		t.Fatal(err)
	}
	return &session{t: t, w: w, wr: wire.NewWriter(w.Conn()), rd: wire.NewReader(w.Conn())}
}

func (s *session) send(typ byte, body []byte) {
	s.t.Helper()
	if err := s.wr.WriteFrame(typ, body); err != nil {
		s.t.Fatal(err)
	}
	if err := s.wr.Flush(); err != nil {
		s.t.Fatal(err)
	}
}

func (s *session) next() (byte, []byte) {
	s.t.Helper()
	typ, body, err := s.rd.Next()
	if err != nil {
		s.t.Fatalf("reading from the worker: %v", err)
	}
	return typ, body
}

func TestTheWorkerSpeaksTheProtocol(t *testing.T) {
	s := start(t)
	typ, body := s.next()
	if typ != wire.TypeHello {
		t.Fatalf("first frame has type %#x, want hello", typ)
	}
	h, err := wire.DecodeHello(body)
	if err != nil || h.Language != "python" || !h.Dynamic || h.Worker != "p1" || !strings.HasPrefix(h.Runtime, "cpython3.") ||
		h.BinaryDigest != "sha256:"+pyworker.Digest() {
		t.Fatalf("hello = %+v, %v", h, err)
	}
	s.send(wire.TypeDefine, wire.AppendDefine(nil, wire.Define{ID: 1, Name: "mrtest.fns.square"}))
	cmd := func(c wire.Command) []byte { b, _ := json.Marshal(c); return b }
	s.send(wire.TypeCancel, wire.AppendCancel(nil, 6)) // before it arrives: it never runs
	tasks := []wire.Task{
		{Key: 1, Func: 1, Payload: []byte("3")},
		{Key: 2, Func: 1, Payload: []byte("not json")},
		{Key: 3, Func: wire.FuncCommand, Payload: cmd(wire.Command{Args: []string{"sh", "-c", `printf "$V" > "$MEADOWRUN_RESULT_FILE"; echo "$MEADOWRUN_CONTEXT_VARIABLES"`},
			Env: map[string]string{"V": "made"}, ContextVariables: json.RawMessage(`{"a":1}`)})},
		{Key: 4, Func: wire.FuncCommand, Payload: cmd(wire.Command{Args: []string{"meadowrun-no-such-command"}})},
		{Key: 5, Func: 9, Payload: []byte("1")},
		{Key: 6, Func: 1, Payload: []byte("1")},
	}
	s.send(wire.TypeTasks, wire.AppendTasks(nil, tasks))
	s.send(wire.TypeShutdown, nil)

	results := map[uint64]wire.Result{}
	var started []uint64
	var logs strings.Builder
	for len(results) < len(tasks) {
		typ, body := s.next()
		switch typ {
		case wire.TypeStarted:
			k, _ := wire.DecodeStarted(body)
			for want := uint64(1); want < k; want++ {
				if _, ok := results[want]; !ok {
					t.Fatalf("Started(%d) came before the result of task %d", k, want)
				}
			}
			started = append(started, k)
		case wire.TypeResults:
			rs, err := wire.DecodeResults(body)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rs {
				results[r.Key] = r
			}
		case wire.TypeLog:
			l, _ := wire.DecodeLog(body)
			if l.Key == 3 {
				logs.Write(l.Data)
			}
		default:
			t.Fatalf("unexpected frame type %#x", typ)
		}
	}
	if len(started) != len(tasks) {
		t.Fatalf("Started frames for %v, want one per task", started)
	}
	wantStatus := map[uint64]wire.Status{1: wire.StatusOK, 2: wire.StatusBadInput, 3: wire.StatusOK, 4: wire.StatusOK, 5: wire.StatusUnknown, 6: wire.StatusCanceled}
	for k, st := range wantStatus {
		if results[k].Status != st {
			t.Errorf("task %d: status %s (%s), want %s", k, results[k].Status, results[k].Payload, st)
		}
	}
	if string(results[1].Payload) != "9" {
		t.Errorf("square(3) = %s", results[1].Payload)
	}
	var cr wire.CommandResult
	if err := json.Unmarshal(results[3].Payload, &cr); err != nil || cr.ExitCode != 0 || string(cr.Result) != "made" {
		t.Errorf("command result %s, %v", results[3].Payload, err)
	}
	if !strings.Contains(logs.String(), `{"a": 1}`) && !strings.Contains(logs.String(), `{"a":1}`) {
		t.Errorf("the command did not see its context variables; output %q", logs.String())
	}
	if err := json.Unmarshal(results[4].Payload, &cr); err != nil || cr.ExitCode != 127 || !cr.NotFound {
		t.Errorf("missing command: %s, %v; want exit 127, not found", results[4].Payload, err)
	}
	<-s.w.Done()
	if st := s.w.Exit(); st.Code != 0 {
		t.Fatalf("after Shutdown the worker ended with %+v, want exit 0", st)
	}
}

// A task that goes over the worker's memory limit and returns at once,
// between two of the watchdog's samples, gets no result out: its worker is
// killed for memory (the high-water mark read before the result passes).
func TestATaskOverItsLimitBetweenSamplesIsKilled(t *testing.T) {
	// No sample but the one as the worker starts: only the check of its
	// high-water mark before its output passes can see the task.
	s := startLimited(t, 60<<20, time.Hour)
	s.next() // Hello
	s.send(wire.TypeDefine, wire.AppendDefine(nil, wire.Define{ID: 1, Name: "mrtest.fns.allocates"}))
	s.send(wire.TypeTasks, wire.AppendTasks(nil, []wire.Task{{Key: 1, Func: 1, Payload: []byte("120")}}))
	for {
		typ, body, err := s.rd.Next()
		if err != nil {
			break // the stream ends with the kill
		}
		if typ == wire.TypeResults {
			rs, _ := wire.DecodeResults(body)
			t.Fatalf("the task over its limit got results out: %+v", rs)
		}
	}
	<-s.w.Done()
	if st := s.w.Exit(); !st.OOMKilled || st.PeakMemoryBytes < 120<<20 {
		t.Fatalf("the worker ended with %+v, want killed for memory with its 120 MiB peak", st)
	}
}

func TestTheWorkerStopsWhenItsCoordinatorGoes(t *testing.T) {
	s := start(t)
	s.next() // Hello
	payload, _ := json.Marshal(wire.Command{Args: []string{"sleep", "600"}})
	s.send(wire.TypeTasks, wire.AppendTasks(nil, []wire.Task{{Key: 1, Func: wire.FuncCommand, Payload: payload}}))
	if typ, _ := s.next(); typ != wire.TypeStarted {
		t.Fatalf("frame %#x, want Started", typ)
	}
	s.w.Conn().Close()
	<-s.w.Done()
	if st := s.w.Exit(); st.Signal != "killed" {
		t.Fatalf("worker ended with %+v, want killed by itself with its process group", st)
	}
}

func TestAPickledCallableRunsWhenCloudpickleIsThere(t *testing.T) {
	requirePython(t)
	out, err := exec.Command("python3", "-c",
		"import base64, cloudpickle; print(base64.b64encode(cloudpickle.dumps(lambda x: x + 100)).decode())").Output()
	if err != nil {
		t.Skipf("cloudpickle is not importable here: %v", err)
	}
	s := start(t)
	s.next() // Hello
	s.send(wire.TypeDefine, wire.AppendDefine(nil, wire.Define{ID: 1, Name: "cloudpickle:" + strings.TrimSpace(string(out))}))
	s.send(wire.TypeTasks, wire.AppendTasks(nil, []wire.Task{{Key: 1, Func: 1, Payload: []byte("5")}}))
	for {
		typ, body := s.next()
		if typ != wire.TypeResults {
			continue
		}
		rs, err := wire.DecodeResults(body)
		if err != nil || len(rs) != 1 || rs[0].Status != wire.StatusOK || string(rs[0].Payload) != "105" {
			t.Fatalf("results %+v, %v; want 105", rs, err)
		}
		return
	}
}

// A Cancel that reaches the worker as its task ends (or before the task's
// function is entered) must end that task as cancelled or done, never
// raise in the worker's own code: the worker lives on and answers every
// task.
func TestCancelsRacingTheirTasksEndNeverKillTheWorker(t *testing.T) {
	s := start(t)
	if typ, _ := s.next(); typ != wire.TypeHello {
		t.Fatalf("first frame has type %#x, want hello", typ)
	}
	s.send(wire.TypeDefine, wire.AppendDefine(nil, wire.Define{ID: 1, Name: "mrtest.fns.square"}))
	const n = 1500
	tasks := make([]wire.Task, n)
	for i := range tasks {
		tasks[i] = wire.Task{Key: uint64(i + 1), Func: 1, Payload: []byte("7")}
	}
	s.send(wire.TypeTasks, wire.AppendTasks(nil, tasks))
	results := map[uint64]wire.Status{}
	for len(results) < n {
		typ, body, err := s.rd.Next()
		if err != nil {
			<-s.w.Done()
			st := s.w.Exit()
			t.Fatalf("after %d results the worker's stream ended (%v): exit %d, output:\n%s", len(results), err, st.Code, st.Output)
		}
		switch typ {
		case wire.TypeStarted:
			k, _ := wire.DecodeStarted(body)
			s.send(wire.TypeCancel, wire.AppendCancel(nil, k))
		case wire.TypeResults:
			rs, err := wire.DecodeResults(body)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rs {
				if r.Status != wire.StatusOK && r.Status != wire.StatusCanceled {
					t.Fatalf("task %d: status %s (%s), want ok or cancelled", r.Key, r.Status, r.Payload)
				}
				results[r.Key] = r.Status
			}
		}
	}
	s.send(wire.TypeShutdown, nil)
	<-s.w.Done()
	if st := s.w.Exit(); st.Code != 0 {
		t.Fatalf("after Shutdown the worker ended with %+v, want exit 0", st)
	}
}
