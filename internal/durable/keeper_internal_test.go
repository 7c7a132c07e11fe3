package durable

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/journal"
)

// The local job keeper through driver.JobKeeper, as an agent uses it: jobs
// journaled in a state directory of their own and run by real supervisor
// processes (this test binary re-executed, running commands with
// execCommand rather than the API's coordinator).
func TestTheLocalJobKeeper(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	state := filepath.Join(t.TempDir(), "meadowrun")
	st := journal.New(state, journal.Options{})
	var k driver.JobKeeper = NewKeeper(st, filepath.Join(state, "logs"), "XDG_STATE_HOME="+filepath.Dir(state))
	submit := func(t *testing.T, id string, argv ...string) {
		t.Helper()
		job := driver.Job{ID: id, Kind: driver.JobCommand, Host: "local", Command: argv, Spec: []byte("{}"), Total: 1}
		if _, err := k.SubmitJob(ctx, "", driver.JobSubmission{Job: job}); err != nil {
			t.Fatal(err)
		}
	}
	// wait follows id's results until its record is final.
	wait := func(t *testing.T, id string) (driver.JobStatus, []driver.JobResult) {
		t.Helper()
		var after uint64
		var all []driver.JobResult
		for {
			s, err := k.InspectJob(ctx, "", id, true, after)
			if err != nil {
				t.Fatal(err)
			}
			all, after = append(all, s.Results...), s.Cursor
			if s.Job.Final() || s.Lost {
				return s, all
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	t.Run("a job runs under its supervisor and keeps its results and log", func(t *testing.T) {
		submit(t, "k-exit3", "sh", "-c", "echo hello; exit 3")
		s, rs := wait(t, "k-exit3")
		if s.Job.State != driver.JobFailed || s.Lost || len(rs) != 1 || rs[0].Err == nil || rs[0].Err.ExitCode != 3 {
			t.Fatalf("status %+v, results %+v; want a failed job whose task exited 3", s.Job, rs)
		}
		l, err := k.JobLog(ctx, "", "k-exit3", 0)
		if err != nil || !strings.Contains(string(l.Log), "hello") {
			t.Fatalf("log %q, %v", l.Log, err)
		}
		if _, err := k.CancelJob(ctx, "", "k-exit3"); !errors.Is(err, driver.ErrJobFinished) {
			t.Fatalf("cancelling a finished job: %v, want ErrJobFinished", err)
		}
	})
	t.Run("a running job is cancelled", func(t *testing.T) {
		submit(t, "k-sleep", "sleep", "60")
		s, err := k.CancelJob(ctx, "", "k-sleep")
		if err != nil || s.Job.State != driver.JobCancelled {
			t.Fatalf("cancel: %+v, %v; want it cancelled", s.Job, err)
		}
	})
	t.Run("an unknown job is ErrJobNotFound", func(t *testing.T) {
		for _, err := range []error{
			func() error { _, err := k.InspectJob(ctx, "", "nope", false, 0); return err }(),
			func() error { _, err := k.JobLog(ctx, "", "nope", 0); return err }(),
			func() error { _, err := k.CancelJob(ctx, "", "nope"); return err }(),
		} {
			if !errors.Is(err, driver.ErrJobNotFound) {
				t.Fatalf("error = %v, want ErrJobNotFound", err)
			}
		}
	})
}
