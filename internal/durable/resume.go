package durable

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/journal"
)

// A job whose supervisor died before the job ended is resumed by the next
// supervisor started on it: one started again by a controller that
// restarts it (a Kubernetes Job's pod), or by Keeper.Resume. The new
// supervisor runs only the tasks with no journaled result, and gives each
// result the job's own task number, so that followers, which read the
// journal's results in order, see every result once. A task that was
// running when the supervisor died, its result not yet journaled, runs
// again, from attempt 1: attempts are counted within a supervisor's run.

// errNothingToDo ends a supervisor started on a job that has ended: it
// exits successfully, so that a controller restarting it stops.
var errNothingToDo = errors.New("nothing to do")

// takeJob is how a supervisor takes job r in the journal: a submitted job
// is started, a running one whose supervisor is gone is resumed (resume
// is set), a cancelled one is recorded as such.
func takeJob(r *journal.Record, resume *bool) error {
	now := time.Now()
	switch {
	case r.State == driver.JobSubmitted:
	case r.Final():
		return fmt.Errorf("%w: job %s has already ended (%s)", errNothingToDo, r.ID, r.State)
	case r.State == driver.JobRunning && r.Detached && !journal.Alive(r.PID, r.Proc):
		if r.CancelRequested {
			// Cancelled while its supervisor was down: not resumed.
			r.State, r.Finished = driver.JobCancelled, now
			if r.Error == "" {
				r.Error = "cancelled while its supervisor was down"
			}
			return nil
		}
		*resume = true
		r.Resumed++
		if r.LogFile != "" {
			r.EarlierLogs = append(r.EarlierLogs, r.LogFile)
			r.LogFile = ""
		}
	case r.State == driver.JobRunning && r.Detached:
		return fmt.Errorf("meadowrun: job %s is already supervised by process %d", r.ID, r.PID)
	default:
		return fmt.Errorf("meadowrun: job %s is %s in the process that submitted it, not waiting for a supervisor", r.ID, r.State)
	}
	r.State, r.PID, r.Proc, r.Started = driver.JobRunning, os.Getpid(), journal.Self(), now
	return nil
}

// resumeFrom readies the runner of a resumed job: the tasks whose result
// is journaled are not run again.
func (r *Runner) resumeFrom(ctx context.Context) error {
	res, _, rec, err := r.st.Results(ctx, r.rec.ID, 0)
	if err != nil {
		return fmt.Errorf("meadowrun: resuming job %s: %w", r.rec.ID, err)
	}
	total := 1
	if rec.Kind == driver.JobMap {
		total = rec.Total
	}
	if total < 0 {
		return fmt.Errorf("meadowrun: job %s cannot be resumed: its number of tasks was never journaled", r.rec.ID)
	}
	done := make([]bool, total)
	for _, x := range res {
		if x.Task >= 0 && x.Task < total {
			done[x.Task] = true
		}
	}
	pending := make([]int, 0, total)
	for i, d := range done {
		if !d {
			pending = append(pending, i)
		}
	}
	r.pending, r.done = pending, done
	return nil
}

// Resume starts a new supervisor for job id, whose supervisor died before
// the job ended (the job is lost), in dir ("" for this process's working
// directory; it must hold the deployment's files). The supervisor runs
// only the tasks with no journaled result. A job cancelled meanwhile is
// recorded as cancelled and not resumed; a job that is not lost is an
// error.
func (k *Keeper) Resume(ctx context.Context, id, dir string) error {
	rec, err := k.get(ctx, id)
	if err != nil {
		return err
	}
	if rec.Final() {
		return fmt.Errorf("%w: job %s %s at %s; its results are kept", driver.ErrJobFinished, id, rec.State, rec.Finished.Format(time.DateTime))
	}
	if !rec.Detached || !IsLost(rec) {
		return fmt.Errorf("meadowrun: job %s is not lost: process %d still runs it", id, rec.PID)
	}
	if rec.CancelRequested {
		_, err := k.st.Commit(ctx, id, nil, func(r *journal.Record) error {
			if !r.Final() {
				r.State, r.Finished = driver.JobCancelled, time.Now()
			}
			return nil
		})
		if err != nil {
			return notFound(k.st, err, id)
		}
		return fmt.Errorf("%w: job %s was cancelled; it is not resumed", driver.ErrJobFinished, id)
	}
	return startSupervisor(ctx, k.st, id, dir, k.logDir, k.env...)
}

// readLogs reads up to max bytes from offset off of the files, read one
// after the other as one log (the earlier files are complete; the last
// may grow).
func readLogs(files []string, off int64, max int) ([]byte, error) {
	var out []byte
	for i, f := range files {
		if i == len(files)-1 {
			b, err := readAt(f, off, max-len(out))
			return append(out, b...), err
		}
		fi, err := os.Stat(f)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return out, err
		}
		if off >= fi.Size() {
			off -= fi.Size()
			continue
		}
		b, err := readAt(f, off, max-len(out))
		if err != nil {
			return out, err
		}
		out, off = append(out, b...), 0
		if len(out) >= max {
			return out, nil
		}
	}
	return out, nil
}

// journalSubmission journals job id from the driver.JobSubmission in file
// unless the journal has it: what a supervisor started by a controller
// (EnvSuperviseSubmission) does first.
func journalSubmission(ctx context.Context, st *journal.Store, id, file string) error {
	if _, err := st.Get(ctx, id); err == nil || !errors.Is(err, journal.ErrNotFound) {
		return notFound(st, err, id)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("meadowrun: job %s: reading its submission: %w", id, err)
	}
	var sub driver.JobSubmission
	if err := json.Unmarshal(b, &sub); err != nil {
		return fmt.Errorf("meadowrun: job %s: decoding its submission %s: %w", id, file, err)
	}
	rec := sub.Job
	if rec.ID != id {
		return fmt.Errorf("meadowrun: the submission %s is job %q's, not job %s's", file, rec.ID, id)
	}
	rec.State, rec.Detached, rec.PID, rec.Proc, rec.Machine = driver.JobSubmitted, true, os.Getpid(), journal.Self(), ""
	if rec.Submitted.IsZero() {
		rec.Submitted = time.Now()
	}
	if err := st.Create(ctx, rec); errors.Is(err, journal.ErrExists) {
		return nil
	} else if err != nil {
		return fmt.Errorf("meadowrun: %w", err)
	}
	if rec.Kind != driver.JobMap {
		return nil
	}
	return journalArguments(ctx, st, &rec, func(yield func(Arg) bool) {
		for _, a := range sub.Args {
			if !yield(Arg{B: a}) {
				return
			}
		}
	}, len(sub.Args))
}
