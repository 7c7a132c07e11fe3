package durable

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/journal"
)

// lostGraceSubmitted is how long a submitted job may wait for its
// supervisor before it counts as lost.
const lostGraceSubmitted = 10 * time.Second

// IsLost reports whether the process running a job of this machine's
// journal died before the job ended. A copy of a job kept on another
// machine (r.Machine set) is never lost here: only that machine can tell.
func IsLost(r journal.Record) bool {
	if r.Machine != "" {
		// Only the machine can tell (see remoteJob).
		return false
	}
	if r.Final() || journal.Alive(r.PID, r.Proc) {
		return false
	}
	return r.State != driver.JobSubmitted || time.Since(r.Submitted) > lostGraceSubmitted
}

// Cancel cancels job id of st, on this machine: it marks the journal,
// signals the job's supervisor, and waits (within ctx, at most 15 s) until
// the job has stopped, killing the supervisor's session if it has not.
func Cancel(ctx context.Context, st *journal.Store, id string) error {
	type finished struct{ r journal.Record }
	var fin *finished
	rec, err := st.Commit(ctx, id, nil, func(r *journal.Record) error {
		if r.Final() {
			fin = &finished{*r}
			return driver.ErrJobFinished
		}
		r.CancelRequested = true
		return nil
	})
	if fin != nil {
		return fmt.Errorf("%w: job %s %s at %s; its results are kept", driver.ErrJobFinished, id, fin.r.State, fin.r.Finished.Format(time.DateTime))
	}
	if err != nil {
		return notFound(st, err, id)
	}
	markCancelled := func(why string) error {
		_, err := st.Commit(ctx, id, nil, func(r *journal.Record) error {
			if !r.Final() {
				r.State, r.Finished = driver.JobCancelled, time.Now()
				if r.Error == "" {
					r.Error = why
				}
			}
			return nil
		})
		return err
	}
	if IsLost(rec) {
		return markCancelled("cancelled after the process running it had ended")
	}
	if rec.Detached && journal.Alive(rec.PID, rec.Proc) {
		syscall.Kill(rec.PID, syscall.SIGTERM)
	}
	// The job's process sees the request (at once for a signalled
	// supervisor, within cancelPoll otherwise) and records the end.
	wait, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	r, err := followRecord(wait, st, id, func(r journal.Record) bool { return r.Final() || IsLost(r) })
	switch {
	case err == nil && r.Final():
		return nil
	case err == nil:
		return markCancelled("cancelled after the process running it had ended")
	case ctx.Err() != nil:
		return ctx.Err()
	}
	if rec.Detached && journal.Alive(rec.PID, rec.Proc) {
		// It did not stop in time: end the supervisor and everything in
		// its session; its workers stop when their coordinator is gone.
		syscall.Kill(-rec.PID, syscall.SIGKILL)
		return markCancelled("cancelled: its supervisor was killed after it did not stop in time")
	}
	return fmt.Errorf("meadowrun: job %s: cancel requested, but the process running it (pid %d) has not stopped it yet", id, rec.PID)
}

// followRecord polls a job's record until done reports true.
func followRecord(ctx context.Context, st *journal.Store, id string, done func(journal.Record) bool) (journal.Record, error) {
	p := newPoller(st)
	for {
		if p.changed() {
			r, err := st.Get(ctx, id)
			if err != nil {
				return r, err
			}
			if done(r) {
				return r, nil
			}
		}
		if err := p.wait(ctx); err != nil {
			return journal.Record{}, err
		}
	}
}

// poller paces a follower of the journal: it reads only when the journal
// changed (or every second, to notice a process that died), waiting a
// little longer each time nothing changes, up to 100 ms.
type poller struct {
	st      *journal.Store
	version string
	read    time.Time
	delay   time.Duration
}

func newPoller(st *journal.Store) *poller { return &poller{st: st, version: "-"} }

func (p *poller) changed() bool {
	v := p.st.Version()
	if v != p.version || time.Since(p.read) > time.Second {
		p.version, p.read, p.delay = v, time.Now(), 0
		return true
	}
	return false
}

func (p *poller) wait(ctx context.Context) error {
	p.delay = min(max(2*p.delay, 2*time.Millisecond), 100*time.Millisecond)
	return sleepCtx(ctx, p.delay)
}

// notFound says that job id is not in st, or wraps st's error (nil for
// none).
func notFound(st *journal.Store, err error, id string) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, journal.ErrNotFound) {
		return fmt.Errorf("%w: job %s is not in the journal %s", driver.ErrJobNotFound, id, st.Path())
	}
	return fmt.Errorf("meadowrun: %w", err)
}
