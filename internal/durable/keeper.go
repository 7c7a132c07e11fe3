package durable

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"path/filepath"
	"time"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/journal"
)

// Keeper keeps durable jobs in a journal on this machine, each run by a
// supervisor: this program re-executed in its own session, so that the
// job outlives whoever submitted it. It is the job keeper of this machine
// (the handles of local jobs follow them through it) and the one an agent
// keeps its machine's jobs with; the agent-backed keeper
// (internal/agentclient) reaches it over the agent protocol.
type Keeper struct {
	st *journal.Store
	// logDir is where the supervisors' own logs go.
	logDir string
	// env is added to the supervisors' environment.
	env []string
}

var _ driver.JobKeeper = (*Keeper)(nil)

// NewKeeper returns the keeper of the jobs of journal st, whose
// supervisors write their own logs to logDir ("" means st's directory's
// logs) and run with env added to this process's environment.
func NewKeeper(st *journal.Store, logDir string, env ...string) *Keeper {
	if logDir == "" {
		logDir = filepath.Join(st.Dir(), "logs")
	}
	return &Keeper{st: st, logDir: logDir, env: env}
}

// SubmitJob implements driver.JobKeeper: the job is journaled with its
// arguments and its supervisor started, in sub.Dir ("" for this process's
// working directory), before it returns. This machine has no name to
// give: it returns "".
func (k *Keeper) SubmitJob(ctx context.Context, machine string, sub driver.JobSubmission) (string, error) {
	var args iter.Seq[Arg]
	if sub.Job.Kind == driver.JobMap {
		args = func(yield func(Arg) bool) {
			for _, a := range sub.Args {
				if !yield(Arg{B: a}) {
					return
				}
			}
		}
	}
	return "", k.Submit(ctx, sub.Job, args, len(sub.Args), sub.Dir)
}

// Submit journals rec with its arguments (nil for a job that is no map;
// n < 0 when their number is unknown) and starts its supervisor in dir
// ("" for this process's working directory).
func (k *Keeper) Submit(ctx context.Context, rec journal.Record, args iter.Seq[Arg], n int, dir string) error {
	if rec.ID == "" {
		return errors.New("meadowrun: submitting a job without an id")
	}
	// Until its supervisor takes it, the job is this process's: a job
	// whose supervisor never starts shows as lost once this one is gone.
	rec.State, rec.Detached, rec.PID, rec.Proc, rec.Machine = driver.JobSubmitted, true, os.Getpid(), journal.Self(), ""
	if rec.Submitted.IsZero() {
		rec.Submitted = time.Now()
	}
	if err := k.st.Create(ctx, rec); err != nil {
		return fmt.Errorf("meadowrun: %w", err)
	}
	if args != nil {
		if err := journalArguments(ctx, k.st, &rec, args, n); err != nil {
			return err
		}
	}
	return startJournaled(ctx, k.st, rec.ID, dir, k.logDir, k.env...)
}

// InspectJob implements driver.JobKeeper.
func (k *Keeper) InspectJob(ctx context.Context, machine, id string, results bool, after uint64) (driver.JobStatus, error) {
	if !results {
		rec, err := k.get(ctx, id)
		return driver.JobStatus{Job: rec, Lost: IsLost(rec)}, err
	}
	res, last, rec, err := k.st.Results(ctx, id, after)
	if err != nil {
		return driver.JobStatus{}, notFound(k.st, err, id)
	}
	// The record of the same snapshot as the results, so that a final
	// record comes with every result.
	return driver.JobStatus{Job: rec, Lost: IsLost(rec), Results: res, Cursor: last}, nil
}

// JobLog implements driver.JobKeeper. The record is read before the log:
// when it is final, the log is complete.
func (k *Keeper) JobLog(ctx context.Context, machine, id string, offset int64) (driver.JobStatus, error) {
	rec, err := k.get(ctx, id)
	if err != nil {
		return driver.JobStatus{}, err
	}
	s := driver.JobStatus{Job: rec, Lost: IsLost(rec)}
	files := rec.EarlierLogs
	if rec.LogFile != "" {
		files = append(files[:len(files):len(files)], rec.LogFile)
	}
	if len(files) == 0 {
		return s, nil
	}
	if s.Log, err = readLogs(files, offset, driver.MaxJobLog); err != nil {
		return s, fmt.Errorf("meadowrun: reading the log of job %s: %w", id, err)
	}
	return s, nil
}

// CancelJob implements driver.JobKeeper.
func (k *Keeper) CancelJob(ctx context.Context, machine, id string) (driver.JobStatus, error) {
	rec, err := k.get(ctx, id)
	if err != nil {
		return driver.JobStatus{}, err
	}
	if rec.Final() {
		return driver.JobStatus{Job: rec}, fmt.Errorf("%w: job %s %s at %s; its results are kept", driver.ErrJobFinished, id, rec.State, rec.Finished.Format(time.DateTime))
	}
	if err := Cancel(ctx, k.st, id); err != nil {
		return driver.JobStatus{}, err
	}
	rec, err = k.get(ctx, id)
	return driver.JobStatus{Job: rec}, err
}

// Closed implements driver.JobKeeper: a journal is never closed.
func (k *Keeper) Closed() bool { return false }

func (k *Keeper) get(ctx context.Context, id string) (journal.Record, error) {
	rec, err := k.st.Get(ctx, id)
	return rec, notFound(k.st, err, id)
}

// journalArguments journals a map's arguments, a chunk at a time, before
// its supervisor starts: once it is submitted, the job no longer depends
// on the submitting process. n < 0 means the count is not known yet: it is
// recorded once the arguments are in. The job is deleted if they cannot
// all be journaled.
func journalArguments(ctx context.Context, st *journal.Store, rec *journal.Record, args iter.Seq[Arg], n int) error {
	const chunk = 4096
	batch := make([][]byte, 0, chunk)
	count := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := st.PutArgs(ctx, rec.ID, count-len(batch), batch)
		batch = batch[:0]
		return err
	}
	fail := func(err error) error {
		st.Delete(context.WithoutCancel(ctx), rec.ID)
		return err
	}
	for a := range args {
		if a.Err != nil {
			name := ""
			if rec.Function != nil {
				name = rec.Function.Name + ": "
			}
			return fail(fmt.Errorf("meadowrun: %sencoding argument %d: %w", name, count, a.Err))
		}
		batch = append(batch, a.B)
		count++
		if len(batch) == chunk {
			if err := flush(); err != nil {
				return fail(fmt.Errorf("meadowrun: %w", err))
			}
		}
	}
	err := flush()
	if err == nil && n < 0 {
		_, err = st.Commit(ctx, rec.ID, nil, func(r *journal.Record) error {
			r.Total = count
			return nil
		})
		rec.Total = count
	}
	if err != nil {
		return fail(fmt.Errorf("meadowrun: %w", err))
	}
	return nil
}

// startJournaled starts the supervisor of journaled job id in dir; if it
// cannot start, the job is recorded as failed with the reason.
func startJournaled(ctx context.Context, st *journal.Store, id, dir, logDir string, env ...string) error {
	err := startSupervisor(ctx, st, id, dir, logDir, env...)
	if err != nil {
		st.Commit(context.WithoutCancel(ctx), id, nil, func(r *journal.Record) error {
			if r.State == driver.JobSubmitted {
				r.State, r.Error, r.Finished = driver.JobFailed, err.Error(), time.Now()
			}
			return nil
		})
	}
	return err
}

// readAt reads up to max bytes of a file from off; a file not yet created
// reads as empty.
func readAt(path string, off int64, max int) ([]byte, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size()-off < int64(max) {
		max = int(fi.Size() - min(off, fi.Size()))
	}
	b := make([]byte, max)
	n, err := f.ReadAt(b, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return b[:n], nil
}
