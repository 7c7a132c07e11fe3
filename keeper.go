package meadowrun

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
	"github.com/meadowrun-go/meadowrun/internal/agent"
	"github.com/meadowrun-go/meadowrun/internal/journal"
)

// localKeeper keeps durable jobs in a journal on this machine, each run by
// a supervisor: this program re-executed in its own session, so that the
// job outlives whoever submitted it. It is the job keeper of this machine
// and the one an agent keeps its machine's jobs with; the agent-backed
// keeper (internal/agentclient) reaches it over the agent protocol.
type localKeeper struct {
	st *journal.Store
	// logDir is where the supervisors' own logs go; "" means the job's
	// log directory.
	logDir string
	// env is added to the supervisors' environment.
	env []string
}

var _ driver.JobKeeper = (*localKeeper)(nil)

// The agent keeps the jobs of its machine in a journal of its own (see
// agent.StateDir): its supervisors run with XDG_STATE_HOME pointing there,
// so that the journal they open is that one and their logs are next to it.
func init() {
	agent.Jobs = func(st *journal.Store) driver.JobKeeper {
		return &localKeeper{st: st, logDir: filepath.Join(st.Dir(), "logs"), env: []string{"XDG_STATE_HOME=" + filepath.Dir(st.Dir())}}
	}
}

// SubmitJob implements driver.JobKeeper: the job is journaled with its
// arguments and its supervisor started, in sub.Dir ("" for this process's
// working directory), before it returns. This machine has no name to
// give: it returns "".
func (k *localKeeper) SubmitJob(ctx context.Context, machine string, sub driver.JobSubmission) (string, error) {
	var args iter.Seq[rawArg]
	if sub.Job.Kind == JobMap {
		args = func(yield func(rawArg) bool) {
			for _, a := range sub.Args {
				if !yield(rawArg{b: a}) {
					return
				}
			}
		}
	}
	return "", k.submit(ctx, sub.Job, args, len(sub.Args), sub.Dir)
}

// submit journals rec with its arguments (nil for a job that is no map;
// n < 0 when their number is unknown) and starts its supervisor in dir.
func (k *localKeeper) submit(ctx context.Context, rec journal.Record, args iter.Seq[rawArg], n int, dir string) error {
	if rec.ID == "" {
		return errors.New("meadowrun: submitting a job without an id")
	}
	// Until its supervisor takes it, the job is this process's: a job
	// whose supervisor never starts shows as lost once this one is gone.
	rec.State, rec.Detached, rec.PID, rec.Proc, rec.Machine = JobSubmitted, true, os.Getpid(), journal.Self(), ""
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
	logDir := k.logDir
	if logDir == "" {
		logDir = defaultLogDir()
	}
	return startJournaled(ctx, k.st, rec.ID, dir, logDir, k.env...)
}

// InspectJob implements driver.JobKeeper.
func (k *localKeeper) InspectJob(ctx context.Context, machine, id string, results bool, after uint64) (driver.JobStatus, error) {
	if !results {
		rec, err := k.get(ctx, id)
		return driver.JobStatus{Job: rec, Lost: isLost(rec)}, err
	}
	res, last, rec, err := k.st.Results(ctx, id, after)
	if err != nil {
		return driver.JobStatus{}, k.notFound(err, id)
	}
	// The record of the same snapshot as the results, so that a final
	// record comes with every result.
	return driver.JobStatus{Job: rec, Lost: isLost(rec), Results: res, Cursor: last}, nil
}

// JobLog implements driver.JobKeeper. The record is read before the log:
// when it is final, the log is complete.
func (k *localKeeper) JobLog(ctx context.Context, machine, id string, offset int64) (driver.JobStatus, error) {
	rec, err := k.get(ctx, id)
	if err != nil {
		return driver.JobStatus{}, err
	}
	s := driver.JobStatus{Job: rec, Lost: isLost(rec)}
	if rec.LogFile == "" {
		return s, nil
	}
	if s.Log, err = readAt(rec.LogFile, offset, driver.MaxJobLog); err != nil {
		return s, fmt.Errorf("meadowrun: reading the log of job %s: %w", id, err)
	}
	return s, nil
}

// CancelJob implements driver.JobKeeper.
func (k *localKeeper) CancelJob(ctx context.Context, machine, id string) (driver.JobStatus, error) {
	rec, err := k.get(ctx, id)
	if err != nil {
		return driver.JobStatus{}, err
	}
	if rec.Final() {
		return driver.JobStatus{Job: rec}, fmt.Errorf("%w: job %s %s at %s; its results are kept", ErrJobFinished, id, rec.State, rec.Finished.Format(time.DateTime))
	}
	if err := cancelJob(ctx, k.st, id); err != nil {
		return driver.JobStatus{}, err
	}
	rec, err = k.get(ctx, id)
	return driver.JobStatus{Job: rec}, err
}

// Closed implements driver.JobKeeper: a journal is never closed.
func (k *localKeeper) Closed() bool { return false }

func (k *localKeeper) get(ctx context.Context, id string) (journal.Record, error) {
	rec, err := k.st.Get(ctx, id)
	return rec, k.notFound(err, id)
}

func (k *localKeeper) notFound(err error, id string) error {
	if errors.Is(err, journal.ErrNotFound) {
		return fmt.Errorf("%w: job %s is not in the journal %s", ErrJobNotFound, id, k.st.Path())
	}
	return err
}

// journalArguments journals a map's arguments, a chunk at a time, before
// its supervisor starts: once it is submitted, the job no longer depends
// on the submitting process. n < 0 means the count is not known yet: it is
// recorded once the arguments are in. The job is deleted if they cannot
// all be journaled.
func journalArguments(ctx context.Context, st *journal.Store, rec *journal.Record, args iter.Seq[rawArg], n int) error {
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
		if a.err != nil {
			name := ""
			if rec.Function != nil {
				name = rec.Function.Name + ": "
			}
			return fail(fmt.Errorf("meadowrun: %sencoding argument %d: %w", name, count, a.err))
		}
		batch = append(batch, a.b)
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
			if r.State == JobSubmitted {
				r.State, r.Error, r.Finished = JobFailed, err.Error(), time.Now()
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
