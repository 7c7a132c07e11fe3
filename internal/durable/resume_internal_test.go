package durable

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/journal"
)

// resumeEnv is a journal, a keeper whose supervisors (this test binary
// re-executed) run maps with execMap, and the files execMap uses.
type resumeEnv struct {
	st               *journal.Store
	k                *Keeper
	executions, gate string
	logs             string
	env              []string
}

func newResumeEnv(t *testing.T, blockFrom int) *resumeEnv {
	dir := t.TempDir()
	state := filepath.Join(dir, "meadowrun")
	e := &resumeEnv{st: journal.New(state, journal.Options{}), executions: filepath.Join(dir, "executions"),
		gate: filepath.Join(dir, "gate"), logs: filepath.Join(state, "logs")}
	e.env = []string{"XDG_STATE_HOME=" + dir, envExecutions + "=" + e.executions, envGate + "=" + e.gate,
		envBlockFrom + "=" + strconv.Itoa(blockFrom)}
	e.k = NewKeeper(e.st, e.logs, e.env...)
	return e
}

// submitMap submits a map of n tasks whose arguments are 0 … n-1.
func (e *resumeEnv) submitMap(ctx context.Context, t *testing.T, id string, n int) {
	t.Helper()
	args := make([][]byte, n)
	for i := range args {
		args[i] = []byte(strconv.Itoa(i))
	}
	job := driver.Job{ID: id, Kind: driver.JobMap, Host: "local", Function: &driver.JobFunc{Name: "f"}, Spec: []byte("{}"), Total: n}
	if _, err := e.k.SubmitJob(ctx, "", driver.JobSubmission{Job: job, Args: args}); err != nil {
		t.Fatal(err)
	}
}

// follow reads job id's results after *cursor until until reports true
// of the status.
func (e *resumeEnv) follow(ctx context.Context, t *testing.T, id string, cursor *uint64, got *[]driver.JobResult, until func(driver.JobStatus) bool) driver.JobStatus {
	t.Helper()
	for {
		s, err := e.k.InspectJob(ctx, "", id, true, *cursor)
		if err != nil {
			t.Fatal(err)
		}
		*got, *cursor = append(*got, s.Results...), s.Cursor
		if until(s) {
			return s
		}
		if s.Job.Final() {
			t.Fatalf("job ended (%s, %q) before the test expected", s.Job.State, s.Job.Error)
		}
		if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
}

// kill SIGKILLs the supervisor of job id and waits until the keeper sees
// the job lost.
func (e *resumeEnv) kill(ctx context.Context, t *testing.T, id string) {
	t.Helper()
	s, err := e.k.InspectJob(ctx, "", id, false, 0)
	if err != nil {
		t.Fatal(err)
	}
	if s.Job.PID <= 0 || s.Job.PID == os.Getpid() {
		t.Fatalf("job %s has no supervisor process to kill: %+v", id, s.Job)
	}
	if err := syscall.Kill(-s.Job.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var none []driver.JobResult
	var c uint64
	e.follow(ctx, t, id, &c, &none, func(s driver.JobStatus) bool { return s.Lost })
}

// executions counts how many times each argument was run.
func (e *resumeEnv) executionCounts(t *testing.T) map[string]int {
	t.Helper()
	b, err := os.ReadFile(e.executions)
	if err != nil {
		t.Fatal(err)
	}
	n := map[string]int{}
	for _, l := range strings.Fields(string(b)) {
		n[l]++
	}
	return n
}

// A supervisor SIGKILLed in the middle of a map, its job resumed by a new
// supervisor: the new one runs only the tasks with no journaled result,
// a follower sees every result exactly once under the job's own task
// numbers, none of the journaled ones is computed again, and the log
// holds both runs.
func TestALostMapIsResumedWithoutRecomputingItsResults(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const n, blockFrom = 10, 5
	e := newResumeEnv(t, blockFrom)
	const id = "resume-map"
	e.submitMap(ctx, t, id, n)
	var got []driver.JobResult
	var cursor uint64
	e.follow(ctx, t, id, &cursor, &got, func(driver.JobStatus) bool { return len(got) >= blockFrom })
	// Task blockFrom waits for the gate: the supervisor dies mid-map.
	for !strings.Contains(readFile(t, e.executions), strconv.Itoa(blockFrom)+"\n") {
		if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	e.kill(ctx, t, id)
	before := append([]driver.JobResult(nil), got...)
	if len(before) != blockFrom {
		t.Fatalf("%d results journaled before the kill, want %d: %+v", len(before), blockFrom, before)
	}

	if err := os.WriteFile(e.gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := e.k.Resume(ctx, id, ""); err != nil {
		t.Fatal(err)
	}
	s := e.follow(ctx, t, id, &cursor, &got, func(s driver.JobStatus) bool { return s.Job.Final() || s.Lost })
	if s.Job.State != driver.JobSucceeded || s.Job.Resumed != 1 || s.Job.Done != n || s.Job.Failed != 0 {
		t.Fatalf("resumed job: %+v, want succeeded, resumed once, %d done", s.Job, n)
	}
	seen := map[int]int{}
	for _, r := range got {
		seen[r.Task]++
		arg, count, _ := strings.Cut(string(r.Value), ":")
		if arg != strconv.Itoa(r.Task) {
			t.Errorf("task %d's result is %q: the result of another task", r.Task, r.Value)
		}
		if r.Task < blockFrom && count != "1" {
			t.Errorf("task %d ran %s times; its result was journaled before the kill", r.Task, count)
		}
	}
	for i := range n {
		if seen[i] != 1 {
			t.Errorf("task %d: %d results, want exactly one (results %+v)", i, seen[i], got)
		}
	}
	if len(got) != n {
		t.Errorf("%d results, want %d", len(got), n)
	}
	counts := e.executionCounts(t)
	for i := range n {
		want := 1
		if i == blockFrom {
			want = 2 // running when its supervisor died: its result was never journaled
		}
		if c := counts[strconv.Itoa(i)]; c != want {
			t.Errorf("argument %d was run %d times, want %d", i, c, want)
		}
	}
	l, err := e.k.JobLog(ctx, "", id, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"run 0 of argument 0", "run 0 of argument 5", "run 1 of argument 5", "run 1 of argument 9"} {
		if !strings.Contains(string(l.Log), want) {
			t.Errorf("the log lacks %q:\n%s", want, l.Log)
		}
	}
	if strings.Contains(string(l.Log), "run 1 of argument 4") {
		t.Errorf("the resumed run ran a task whose result was journaled:\n%s", l.Log)
	}
	// Read from an offset inside the first run's log, the two read as one.
	if l2, err := e.k.JobLog(ctx, "", id, 3); err != nil || string(l2.Log) != string(l.Log[3:]) {
		t.Errorf("log from offset 3 = %q, %v; want %q", l2.Log, err, l.Log[3:])
	}
	if err := e.k.Resume(ctx, id, ""); !errors.Is(err, driver.ErrJobFinished) {
		t.Errorf("resuming a finished job: %v, want ErrJobFinished", err)
	}
}

// A supervisor started on a job another supervisor runs is refused; one
// started on a job cancelled while its supervisor was down records the
// cancel and runs nothing; a lost job that was cancelled is not resumed.
func TestOnlyALostUncancelledJobIsResumed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newResumeEnv(t, 0) // every task waits for the gate, which never opens
	start := func(id string) error {
		return startSupervisor(ctx, e.st, id, "", e.logs, e.env...)
	}
	waitRunning := func(id string) {
		var none []driver.JobResult
		var c uint64
		e.follow(ctx, t, id, &c, &none, func(s driver.JobStatus) bool { return s.Job.State == driver.JobRunning })
	}

	e.submitMap(ctx, t, "busy", 3)
	waitRunning("busy")
	if err := start("busy"); err == nil || !strings.Contains(err.Error(), "already supervised by process") {
		t.Fatalf("a second supervisor of a running job: %v, want it refused", err)
	}
	if err := e.k.Resume(ctx, "busy", ""); err == nil || !strings.Contains(err.Error(), "is not lost") {
		t.Fatalf("resuming a running job: %v, want it refused", err)
	}
	if _, err := e.k.CancelJob(ctx, "", "busy"); err != nil {
		t.Fatal(err)
	}

	// Cancel requested, then the supervisor died before it saw it: a
	// supervisor restarted on the job (as a controller restarts it)
	// records it cancelled.
	e.submitMap(ctx, t, "cancel-down", 3)
	waitRunning("cancel-down")
	e.kill(ctx, t, "cancel-down")
	if _, err := e.st.Commit(ctx, "cancel-down", nil, func(r *journal.Record) error {
		r.CancelRequested = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ran := e.executionCounts(t)["0"]
	if err := start("cancel-down"); err == nil || !strings.Contains(err.Error(), "cancelled while its supervisor was down") {
		t.Fatalf("supervisor of a job cancelled while it was down: %v", err)
	}
	if r, err := e.st.Get(ctx, "cancel-down"); err != nil || r.State != driver.JobCancelled || r.Resumed != 0 {
		t.Fatalf("job cancelled while its supervisor was down: %+v, %v; want cancelled, never resumed", r, err)
	}
	if c := e.executionCounts(t)["0"]; c != ran {
		t.Fatalf("a cancelled job ran a task again (%d executions, %d before)", c, ran)
	}

	// Cancelled once lost: Cancel records the end, and it is not resumed.
	e.submitMap(ctx, t, "lost-cancelled", 3)
	waitRunning("lost-cancelled")
	e.kill(ctx, t, "lost-cancelled")
	if s, err := e.k.CancelJob(ctx, "", "lost-cancelled"); err != nil || s.Job.State != driver.JobCancelled {
		t.Fatalf("cancelling a lost job: %+v, %v", s.Job, err)
	}
	if err := e.k.Resume(ctx, "lost-cancelled", ""); !errors.Is(err, driver.ErrJobFinished) {
		t.Fatalf("resuming a cancelled job: %v, want ErrJobFinished", err)
	}
	if err := start("lost-cancelled"); err == nil || !strings.Contains(err.Error(), "has already ended") {
		t.Fatalf("a supervisor started on an ended job: %v", err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return string(b)
}

// startControlled starts a supervisor of job id as a controller does
// (EnvSuperviseSubmission): this test binary, its job's submission in
// file.
func (e *resumeEnv) startControlled(t *testing.T, id, file string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), e.env...)
	cmd.Env = append(cmd.Env, EnvSupervise+"="+id, EnvSuperviseState+"="+e.st.Dir(), EnvSuperviseSubmission+"="+file)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// Until it has journaled the submission, the journal lacks the job.
	for {
		if _, err := e.st.Get(context.Background(), id); err == nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	return cmd
}

// A supervisor started by a controller journals the submission it is
// given; a SIGTERM with no cancel request is a shutdown, which leaves the
// job running with what was received journaled, and the supervisor the
// controller starts next resumes it; a cancel ends it for good.
func TestAControllerRestartedSupervisorResumesAfterAShutdown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const n, blockFrom = 8, 4
	e := newResumeEnv(t, blockFrom)
	const id = "controlled"
	args := make([][]byte, n)
	for i := range args {
		args[i] = []byte(strconv.Itoa(i))
	}
	sub := driver.JobSubmission{Job: driver.Job{ID: id, Kind: driver.JobMap, Host: "local", Function: &driver.JobFunc{Name: "f"}, Spec: []byte("{}"), Total: n}, Args: args}
	file := filepath.Join(t.TempDir(), "submission.json")
	b, _ := json.Marshal(sub)
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	first := e.startControlled(t, id, file)
	var got []driver.JobResult
	var cursor uint64
	e.follow(ctx, t, id, &cursor, &got, func(driver.JobStatus) bool { return len(got) >= blockFrom })
	first.Process.Signal(syscall.SIGTERM)
	err := first.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 143 {
		t.Fatalf("supervisor shut down: %v, want exit status 143", err)
	}
	if r, err := e.st.Get(ctx, id); err != nil || r.State != driver.JobRunning || r.CancelRequested {
		t.Fatalf("after the shutdown: %+v, %v; want the job running, to be resumed", r, err)
	}
	if err := os.WriteFile(e.gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	second := e.startControlled(t, id, file)
	if err := second.Wait(); err != nil {
		t.Fatalf("the resumed supervisor: %v", err)
	}
	s := e.follow(ctx, t, id, &cursor, &got, func(s driver.JobStatus) bool { return s.Job.Final() })
	if s.Job.State != driver.JobSucceeded || s.Job.Resumed != 1 || len(got) != n {
		t.Fatalf("resumed job %+v with %d results, want succeeded with %d", s.Job, len(got), n)
	}
	seen := map[int]bool{}
	for _, r := range got {
		if seen[r.Task] || string(r.Value) != fmt.Sprintf("%d:1", r.Task) && r.Task < blockFrom {
			t.Errorf("result %+v (value %q): a task seen twice or run again", r, r.Value)
		}
		seen[r.Task] = true
	}
	// Started again after the end, it has nothing to do and says so
	// with success, so that its controller stops.
	if err := e.startControlled(t, id, file).Wait(); err != nil {
		t.Fatalf("a supervisor started on an ended job: %v, want exit status 0", err)
	}

	// A cancel (the journal marked, then SIGTERM) ends the job for good.
	sub.Job.ID = "controlled-cancel"
	b, _ = json.Marshal(sub)
	os.Remove(e.gate)
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	third := e.startControlled(t, sub.Job.ID, file)
	var none []driver.JobResult
	var c uint64
	e.follow(ctx, t, sub.Job.ID, &c, &none, func(driver.JobStatus) bool { return len(none) >= blockFrom })
	if s, err := e.k.CancelJob(ctx, "", sub.Job.ID); err != nil || s.Job.State != driver.JobCancelled {
		t.Fatalf("cancel: %+v, %v", s.Job, err)
	}
	if err := third.Wait(); err != nil {
		t.Fatalf("the cancelled supervisor: %v, want exit status 0", err)
	}
}
