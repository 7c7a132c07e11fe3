package meadowrun_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/meadowrun-go/meadowrun"
)

// Where a new user stumbles: each error says what went wrong once, in
// readable words, and options that cannot work are refused.
func TestWhatANewUserReads(t *testing.T) {
	ctx := context.Background()
	t.Run("a request that never fits prints its size without an exponent", func(t *testing.T) {
		o := quiet(t)
		o.Resources = &meadowrun.Resources{MemoryGB: 1e4}
		_, err := meadowrun.RunFunction(ctx, typed.With(1), meadowrun.Local(), &o)
		if !errors.Is(err, meadowrun.ErrNeverFits) || !strings.Contains(err.Error(), "10000GiB") || strings.Contains(err.Error(), "e+") {
			t.Fatalf("error = %v, want ErrNeverFits naming 10000GiB", err)
		}
	})
	t.Run("an unknown function names what the worker registers, not its build id", func(t *testing.T) {
		o := quiet(t)
		_, err := meadowrun.RunFunction(ctx, meadowrun.Named[int, int]("nobody.Registered").With(1), meadowrun.Local(), &o)
		msg := err.Error()
		if !errors.Is(err, meadowrun.ErrUnknownFunction) || strings.Contains(msg, "tasks not sent") || strings.Contains(msg, "go:") ||
			!strings.Contains(msg, "which registers bench.Inc") || strings.Count(msg, "meadowrun:") != 1 {
			t.Fatalf("error = %q", msg)
		}
	})
	t.Run("a cancelled map says so once", func(t *testing.T) {
		o := quiet(t)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		_, err := meadowrun.RunMap(cctx, typed, []int{1, 2}, meadowrun.Local(), &meadowrun.MapOptions{Options: o})
		if !errors.Is(err, context.Canceled) || err.Error() != "meadowrun: map cancelled: context canceled" {
			t.Fatalf("error = %q", err)
		}
	})
	t.Run("RetryWithMoreMemory without MemoryGB or retries is refused", func(t *testing.T) {
		o := quiet(t)
		_, err := meadowrun.RunMap(ctx, typed, []int{1}, meadowrun.Local(), &meadowrun.MapOptions{Options: o, MaxAttempts: 3, RetryWithMoreMemory: true})
		if !errors.Is(err, meadowrun.ErrInvalidOptions) || !strings.Contains(err.Error(), "MemoryGB") {
			t.Fatalf("without MemoryGB: %v", err)
		}
		o.Resources = &meadowrun.Resources{MemoryGB: 0.25}
		_, err = meadowrun.RunMap(ctx, typed, []int{1}, meadowrun.Local(), &meadowrun.MapOptions{Options: o, RetryWithMoreMemory: true})
		if !errors.Is(err, meadowrun.ErrInvalidOptions) || !strings.Contains(err.Error(), "MaxAttempts") {
			t.Fatalf("without MaxAttempts: %v", err)
		}
		_, err = meadowrun.SubmitMap(ctx, typed, []int{1}, meadowrun.Local(), &meadowrun.MapOptions{Options: quiet(t), MaxAttempts: 2, RetryWithMoreMemory: true}, nil)
		if !errors.Is(err, meadowrun.ErrInvalidOptions) {
			t.Fatalf("SubmitMap: %v", err)
		}
	})
	t.Run("a result names no log file when nothing was printed", func(t *testing.T) {
		o := quiet(t)
		for r := range meadowrun.RunMapAsCompleted(ctx, typed, []int{1, 2}, meadowrun.Local(), &meadowrun.MapOptions{Options: o}) {
			if r.Err != nil || r.LogFile != "" {
				t.Fatalf("task %d: log %q, %v; want no log file", r.TaskID, r.LogFile, r.Err)
			}
		}
		jc, err := meadowrun.RunCommand(ctx, []string{"true"}, meadowrun.Local(), &meadowrun.CommandOptions{Options: o})
		if err != nil || jc.LogFile != "" {
			t.Fatalf("command: %+v, %v; want no log file", jc, err)
		}
		jc, err = meadowrun.RunCommand(ctx, []string{"echo", "hi"}, meadowrun.Local(), &meadowrun.CommandOptions{Options: o})
		if err != nil || jc.LogFile == "" {
			t.Fatalf("command that prints: %+v, %v; want its log file", jc, err)
		}
		if b, err := os.ReadFile(jc.LogFile); err != nil || string(b) != "[task 0] hi\n" {
			t.Fatalf("log %q, %v", b, err)
		}
	})
	t.Run("a job-level error is told apart from a task's", func(t *testing.T) {
		o := quiet(t)
		o.Resources = &meadowrun.Resources{LogicalCPU: -1}
		n := 0
		for r := range meadowrun.RunMapAsCompleted(ctx, typed, []int{1, 2}, meadowrun.Local(), &meadowrun.MapOptions{Options: o}) {
			n++
			if err := r.JobError(); r.TaskID != -1 || !errors.Is(err, meadowrun.ErrInvalidResources) {
				t.Fatalf("task %d: JobError() = %v, Err = %v; want the invalid resources as the job's error", r.TaskID, err, r.Err)
			}
		}
		if n != 1 {
			t.Fatalf("%d results, want the job's error alone", n)
		}
		r := meadowrun.TaskResult[int]{TaskID: 0, Err: errors.New("a task's own failure")}
		if r.JobError() != nil {
			t.Fatal("a task's own error was taken for the job's")
		}
	})
}
