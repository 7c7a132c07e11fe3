package meadowrun_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/local"
)

// The reference's EdgeCases and MapRetries tests, restated for Python
// workers.

func TestPythonSysExitGivesItsExitCode(t *testing.T) {
	h := newLocal(t, local.Options{})
	o := pyOptions(t, nil)
	_, err := meadowrun.RunFunction(context.Background(), meadowrun.Named[int, int]("mrtest.fns.exits").With(101), h, &o)
	var te *meadowrun.TaskError
	if !errors.As(err, &te) || te.Kind != meadowrun.KindExit || te.ExitCode != 101 {
		t.Fatalf("error = %v, want KindExit with exit code 101", err)
	}
}

func TestPythonUnencodableResultFailsThatTaskOnly(t *testing.T) {
	h := newLocal(t, local.Options{})
	o := pyOptions(t, nil)
	f := meadowrun.Named[int, int]("mrtest.fns.unencodable_if")
	rs := map[int]meadowrun.TaskResult[int]{}
	for r := range meadowrun.RunMapAsCompleted(context.Background(), f, []int{1, 2, 3}, h, &meadowrun.MapOptions{Options: o, Concurrency: 1}) {
		rs[r.TaskID] = r
	}
	if len(rs) != 3 || rs[0].Err != nil || rs[0].Value != 1 || rs[2].Err != nil || rs[2].Value != 3 {
		t.Fatalf("results %+v: want tasks 0 and 2 to succeed", rs)
	}
	var te *meadowrun.TaskError
	if !errors.As(rs[1].Err, &te) || te.Kind != meadowrun.KindEncoding || !strings.Contains(te.Message, "JSON") ||
		!strings.Contains(te.Message, "unencodable_if") {
		t.Fatalf("task 1: %v, want a KindEncoding error naming the function and JSON", rs[1].Err)
	}
}

func TestPythonAlwaysFailingTasksEndAtTheirLastAttempt(t *testing.T) {
	h := newLocal(t, local.Options{})
	o := pyOptions(t, nil)
	f := meadowrun.Named[int, int]("mrtest.fns.always_fails")
	n := 0
	for r := range meadowrun.RunMapAsCompleted(context.Background(), f, []int{0, 1, 2, 3}, h,
		&meadowrun.MapOptions{Options: o, Concurrency: 2, MaxAttempts: 3}) {
		n++
		var te *meadowrun.TaskError
		if !errors.As(r.Err, &te) || te.Attempt != 3 || r.Attempt != 3 || te.Type != "RuntimeError" ||
			te.Message != fmt.Sprintf("task %d always fails", r.TaskID) {
			t.Fatalf("task %d: attempt %d, %v; want RuntimeError at attempt 3", r.TaskID, r.Attempt, r.Err)
		}
	}
	if n != 4 {
		t.Fatalf("%d results, want 4", n)
	}
}

func TestPythonUserCodeMayRunItsOwnEventLoop(t *testing.T) {
	h := newLocal(t, local.Options{})
	o := pyOptions(t, nil)
	f := meadowrun.Named[int, int]("mrtest.fns.uses_asyncio")
	if got, err := meadowrun.RunFunction(context.Background(), f.With(21), h, &o); err != nil || got != 42 {
		t.Fatalf("asyncio.run in a function = %d, %v; want 42", got, err)
	}
	got, err := meadowrun.RunMap(context.Background(), f, []int{1, 2, 3}, h, &meadowrun.MapOptions{Options: o, Concurrency: 2})
	if err != nil || fmt.Sprint(got) != "[2 4 6]" {
		t.Fatalf("asyncio.run in a map = %v, %v; want [2 4 6]", got, err)
	}
}

func TestPythonImportErrorKeepsItsTraceback(t *testing.T) {
	h := newLocal(t, local.Options{})
	o := pyOptions(t, nil)
	_, err := meadowrun.RunFunction(context.Background(), meadowrun.Named[int, int]("mrtest.broken.f").With(1), h, &o)
	te := &meadowrun.TaskError{}
	if !errors.As(err, &te) || te.Type != "KeyError" || !strings.Contains(te.Message, "importing mrtest.broken") ||
		!strings.Contains(te.Stack, "broken.py") || !strings.Contains(te.Stack, "MRTEST_SURELY_UNSET_VARIABLE") {
		t.Fatalf("error = %v (stack %q), want the KeyError of the import with its traceback", err, te.Stack)
	}
}
