package agentproto

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/journal"
)

func TestEveryRequestSurvivesTheWire(t *testing.T) {
	code := 3
	reqs := []Request{
		&Hello{Version: Version, Session: "s1"},
		&Fit{Resources: Resources{LogicalCPU: 1.5, MemoryBytes: 1 << 30, GPUs: 1, Flags: []string{"avx2"}}},
		&Have{SHAs: []string{"aa", "bb"}},
		&Put{SHA: "aa", Size: 12, Mode: 0o700},
		&Start{Session: "s1", Worker: WorkerSpec{Name: "w1", Resources: Resources{LogicalCPU: 1}, Env: map[string]string{"K": "V"}},
			Binary: "aa", Files: []File{{Path: "a/b.txt", SHA: "bb", Mode: 0o644}}},
		&Start{Session: "s1", Worker: WorkerSpec{Name: "w2", Resources: Resources{LogicalCPU: 1}, Runtime: "python",
			Deployment: Deployment{Kind: "interpreter", Interpreter: "/usr/bin/python3"}}, Binary: "aa"},
		&Kill{Worker: "w1"},
		&Supervise{Job: Job{ID: "j1", Kind: "map", State: "submitted", ExitCode: &code, Spec: json.RawMessage(`{"x":1}`)}, Args: [][]byte{[]byte("1")}},
		&JobQuery{ID: "j1", Results: true, After: 7},
		&CancelJob{ID: "j1"},
		&JobLog{ID: "j1", Offset: 99},
		&Hello{}, // no fields set: still a line with its op
	}
	for _, r := range reqs {
		var b bytes.Buffer
		if err := WriteRequest(&b, r); err != nil {
			t.Fatal(err)
		}
		line, err := ReadLine(bufio.NewReader(&b))
		if err != nil {
			t.Fatal(err)
		}
		var head map[string]any
		if err := json.Unmarshal(line, &head); err != nil || head["op"] != r.Op() {
			t.Fatalf("%s: line %s: op %v, %v", r.Op(), line, head["op"], err)
		}
		got, err := ParseRequest(line)
		if err != nil {
			t.Fatalf("%s: %v", r.Op(), err)
		}
		if !reflect.DeepEqual(got, r) {
			t.Errorf("%s: got %#v, want %#v", r.Op(), got, r)
		}
	}
}

func TestAnUnknownOperationIsRefused(t *testing.T) {
	if _, err := ParseRequest([]byte(`{"op":"launch-missiles"}`)); !errors.Is(err, ErrUnknownOp) {
		t.Fatalf("got %v, want ErrUnknownOp", err)
	}
	if _, err := ParseRequest([]byte(`not json`)); err == nil {
		t.Fatal("a line that is not JSON was accepted")
	}
}

func TestFieldNamesAreTheDocumentedOnes(t *testing.T) {
	// The names docs/agent-protocol.md gives; renaming a Go field must not
	// rename them.
	b, _ := AppendRequest(nil, Start{Session: "s", Worker: WorkerSpec{Name: "w", Resources: Resources{LogicalCPU: 1, MemoryBytes: 2}}, Binary: "b"})
	want := `{"op":"start","session":"s","worker":{"name":"w","resources":{"logical_cpu":1,"memory_bytes":2}},"binary":"b"}` + "\n"
	if string(b) != want {
		t.Errorf("start line\n got %s\nwant %s", b, want)
	}
	// A Go worker's spec, as the root builds it (runtime and deployment
	// kind spelt out), has the line it had before those fields existed.
	b, _ = AppendRequest(nil, Start{Session: "s", Worker: WorkerSpecOf(driver.WorkerSpec{Name: "w", Resources: driver.Resources{LogicalCPU: 1, MemoryBytes: 2},
		Runtime: driver.RuntimeGo, Deployment: driver.Deployment{Kind: driver.DeployMirrorLocal}}), Binary: "b"})
	if string(b) != want {
		t.Errorf("start line of a Go worker\n got %s\nwant %s", b, want)
	}
	b, _ = AppendRequest(nil, Start{Session: "s", Worker: WorkerSpec{Name: "w", Resources: Resources{LogicalCPU: 1}, Runtime: "python",
		Deployment: Deployment{Kind: "interpreter", Interpreter: "/usr/bin/python3"}}, Binary: "b"})
	want = `{"op":"start","session":"s","worker":{"name":"w","resources":{"logical_cpu":1},"runtime":"python","deployment":{"kind":"interpreter","interpreter":"/usr/bin/python3"}},"binary":"b"}` + "\n"
	if string(b) != want {
		t.Errorf("start line of a Python worker\n got %s\nwant %s", b, want)
	}
	hello, _ := json.Marshal(HelloResponse{Machine: &Machine{Name: "h", OS: "linux", Arch: "amd64", Python: "3.11.2"}})
	if !bytes.Contains(hello, []byte(`"python":"3.11.2"`)) {
		t.Errorf("hello response %s lacks the python field", hello)
	}
	ev, _ := json.Marshal(WorkerExit{Worker: "w", Exit: ExitStatus{Code: -1, Signal: "killed", OOMKilled: true}})
	if want := `{"worker":"w","exit":{"code":-1,"signal":"killed","oom_killed":true}}`; string(ev) != want {
		t.Errorf("event\n got %s\nwant %s", ev, want)
	}
}

func TestConversionsLoseNothing(t *testing.T) {
	code := 2
	now := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	rec := journal.Record{ID: "j", Kind: "function", State: "failed", Host: "local", Command: []string{"a"},
		Function: &journal.Function{Name: "f", Arg: "int", Result: "int", Codec: "json/json"}, Detached: true, PID: 4, Proc: "p",
		Submitted: now, Started: now.Add(time.Second), Finished: now.Add(2 * time.Second), Total: 3, Done: 2, Failed: 1,
		ExitCode: &code, Error: "e", LogFile: "/l", CancelRequested: true, Spec: json.RawMessage(`{}`), Machine: "m",
		Parts: []journal.Part{{Machine: "m", ID: "j.1", Weight: 2}}}
	if got := JobOf(rec).Record(); !reflect.DeepEqual(got, rec) {
		t.Errorf("record\n got %+v\nwant %+v", got, rec)
	}
	res := []journal.Result{{Task: 1, Attempt: 2, Value: []byte("v"), Worker: "w", Machine: "m", Nanos: 5, Peak: 6,
		Err: &journal.Failure{Kind: "error", Type: "T", Message: "m", Stack: "s", ExitCode: 1, Signal: "x", PeakMemoryBytes: 7, LimitBytes: 8, Canceled: true}}}
	if got := JournalResults(ResultsOf(res)); !reflect.DeepEqual(got, res) {
		t.Errorf("results\n got %+v\nwant %+v", got, res)
	}
	r := driver.Resources{LogicalCPU: 1, MemoryBytes: 2, GPUs: 3, GPUMemoryBytes: 4, Flags: []string{"f"}, EphemeralBytes: 5, MaxEvictionRate: 6}
	if got := ResourcesOf(r).Driver(); !reflect.DeepEqual(got, r) {
		t.Errorf("resources: got %+v, want %+v", got, r)
	}
	spec := driver.WorkerSpec{Name: "w", Resources: r, Env: map[string]string{"K": "V"}, Runtime: driver.RuntimePython,
		Deployment: driver.Deployment{Kind: driver.DeployInterpreter, Image: "i", Repo: "r", Branch: "b", Commit: "c", Interpreter: "/p"}}
	if got := WorkerSpecOf(spec).Driver(); !reflect.DeepEqual(got, spec) {
		t.Errorf("worker spec: got %+v, want %+v", got, spec)
	}
	spec.Deployment = driver.Deployment{Kind: driver.DeployEnvironment, Environment: &driver.Environment{Manager: driver.ManagerPip,
		Spec: "x==1\n", Format: "f", Python: "3.11", Pip: driver.PipOptions{IndexURL: "u", ExtraIndexURLs: []string{"e"}, FindLinks: []string{"l"}, NoIndex: true}}}
	if got := WorkerSpecOf(spec).Driver(); !reflect.DeepEqual(got, spec) {
		t.Errorf("environment worker spec: got %+v, want %+v", got, spec)
	}
	st := driver.ExitStatus{Code: 1, Signal: "s", OOMKilled: true, PeakMemoryBytes: 2, LimitBytes: 3, Output: []byte("o"), Lost: true}
	if got := ExitStatusOf(st).Driver(); !reflect.DeepEqual(got, st) {
		t.Errorf("exit status: got %+v, want %+v", got, st)
	}
}
