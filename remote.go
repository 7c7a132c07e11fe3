package meadowrun

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/agent"
	"github.com/meadowrun-go/meadowrun/internal/journal"
)

// Durable jobs of SSH hosts. The supervisor runs on a machine of the
// host, started by its agent, and journals the job in that machine's
// journal (in the agent's directory); the submitting side keeps a copy of
// the record, with the machine, in its own journal, and reaches the job
// through the agent: results, log, cancel (see docs/durable-jobs.md).

func init() { agent.Jobs = agentJobs{} }

// agentJobs is how an agent runs durable jobs on its machine.
type agentJobs struct{}

// Start starts a supervisor in dir with XDG_STATE_HOME inside the
// agent's directory, so that its journal is st and its logs are next to
// it.
func (agentJobs) Start(ctx context.Context, st *journal.Store, id, dir string) error {
	return startSupervisor(ctx, st, id, dir, filepath.Join(st.Dir(), "logs"), "XDG_STATE_HOME="+filepath.Dir(st.Dir()))
}

func (agentJobs) Cancel(ctx context.Context, st *journal.Store, id string) error {
	return cancelJob(ctx, st, id)
}

func (agentJobs) Lost(r journal.Record) bool { return isLost(r) }

// jobKeeper is a driver whose machines keep durable jobs themselves, with
// an agent (SSH hosts: internal/sshhost).
type jobKeeper interface {
	// Supervise has the agent of a machine journal and start the job of
	// req in a working directory holding files (paths relative to this
	// process's working directory), and names the machine.
	Supervise(ctx context.Context, req agent.Request, files []string) (string, error)
	// JobRequest asks machine's agent about a job.
	JobRequest(ctx context.Context, machine string, req agent.Request) (agent.Response, error)
	// Closed reports whether the driver was closed.
	Closed() bool
}

// keeperHost is a host whose driver keeps durable jobs on its machines.
type keeperHost struct {
	drv jobKeeper
	url string
}

// keeperOf returns h as a keeperHost, if its driver keeps jobs on its
// machines and it has a URL that reopens it.
func keeperOf(ctx context.Context, h Host) *keeperHost {
	inner := h
	if uh, ok := h.(urlHost); ok {
		inner = uh.Host
	}
	switch inner.(type) {
	case nil, Local, *LocalHost, *InProcessHost:
		return nil // this machine: nothing to open
	}
	u, ok := HostURL(h)
	if !ok {
		return nil
	}
	drv, err := h.Driver(ctx)
	if err != nil {
		return nil
	}
	k, ok := drv.(jobKeeper)
	if !ok {
		return nil
	}
	return &keeperHost{drv: k, url: u}
}

// submitRemote journals a job here, with the machine that keeps it, and
// has the agent of the first machine it reaches journal it there and
// start its supervisor.
func submitRemote(ctx context.Context, st *journal.Store, rec journal.Record, spec durableSpec, sh *keeperHost,
	args iter.Seq[rawArg], n int) (*remoteJob, error) {
	// The files go with the job; the supervisor there expands the same
	// globs in a directory holding just them.
	files, err := MirrorLocal(spec.Globs, nil).files()
	if err != nil {
		return nil, err
	}
	// The log directory is the machine's (see agent.StateDir).
	spec.LogDir = ""
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("meadowrun: encoding the job's options: %w", err)
	}
	var raw [][]byte
	if args != nil {
		for a := range args {
			if a.err != nil {
				return nil, fmt.Errorf("meadowrun: %s: encoding argument %d: %w", rec.Function.Name, len(raw), a.err)
			}
			raw = append(raw, a.b)
		}
		n = len(raw)
	}
	rec.ID, rec.Spec, rec.Submitted, rec.Total = newJobID(), b, time.Now(), n
	rec.State, rec.Detached = "submitted", true
	rec.PID, rec.Proc = os.Getpid(), journal.Self()
	if err := st.Create(ctx, rec); err != nil {
		return nil, fmt.Errorf("meadowrun: %w", err)
	}
	there := rec
	there.Host = "local"
	machine, err := sh.drv.Supervise(ctx, agent.Request{Job: &there, Args: raw}, files)
	if err != nil {
		err = fmt.Errorf("meadowrun: starting job %s on %s: %w", rec.ID, sh.url, err)
		st.Commit(context.WithoutCancel(ctx), rec.ID, nil, func(r *journal.Record) error {
			r.State, r.Error, r.Finished = "failed", err.Error(), time.Now()
			return nil
		})
		return nil, err
	}
	if _, err := st.Commit(ctx, rec.ID, nil, func(r *journal.Record) error {
		r.Machine = machine
		return nil
	}); err != nil {
		return nil, fmt.Errorf("meadowrun: job %s runs on %s, but recording that here failed: %w", rec.ID, machine, err)
	}
	return &remoteJob{st: st, id: rec.ID, url: rec.Host, machine: machine, host: sh}, nil
}

// remoteJob is a durable job that the agent of a machine of an SSH host
// keeps.
type remoteJob struct {
	st      *journal.Store // this side's journal, which keeps a copy
	id      string
	url     string // the host's
	machine string
	host    *keeperHost

	mu   sync.Mutex
	seen journal.Record // as last copied to st
}

// openRemote reopens the host of a job of an SSH host from its URL.
func openRemote(ctx context.Context, st *journal.Store, rec journal.Record) (*remoteJob, error) {
	h, err := OpenHost(ctx, rec.Host)
	if err != nil {
		return nil, fmt.Errorf("meadowrun: job %s: %w", rec.ID, err)
	}
	sh := keeperOf(ctx, h)
	if sh == nil {
		return nil, fmt.Errorf("meadowrun: job %s: its host %q is not an SSH host", rec.ID, rec.Host)
	}
	return &remoteJob{st: st, id: rec.ID, url: rec.Host, machine: rec.Machine, host: sh}, nil
}

// call sends a request about the job to its machine's agent, and copies
// the record it answers to this side's journal.
func (rj *remoteJob) call(ctx context.Context, req agent.Request) (agent.Response, error) {
	req.ID = rj.id
	rj.mu.Lock()
	sh := rj.host
	rj.mu.Unlock()
	if sh.drv.Closed() {
		// The handle outlives the host it was submitted with: reopen the
		// host from its URL, as another process would.
		h, err := OpenHost(ctx, rj.url)
		if err != nil {
			return agent.Response{}, fmt.Errorf("meadowrun: job %s: %w", rj.id, err)
		}
		if sh = keeperOf(ctx, h); sh == nil {
			return agent.Response{}, fmt.Errorf("meadowrun: job %s: its host %q is not an SSH host", rj.id, rj.url)
		}
		rj.mu.Lock()
		rj.host = sh
		rj.mu.Unlock()
	}
	resp, err := sh.drv.JobRequest(ctx, rj.machine, req)
	switch {
	case resp.Kind == agent.KindNotFound:
		return resp, fmt.Errorf("%w: %q is not in the journal of %s (was the agent's directory there removed?): %s", ErrJobNotFound, rj.id, rj.machine, resp.Error)
	case resp.Kind == agent.KindFinished:
		return resp, fmt.Errorf("%w: %s", ErrJobFinished, resp.Error)
	case err != nil:
		return resp, fmt.Errorf("meadowrun: job %s on %s: %w", rj.id, rj.machine, err)
	case resp.Job == nil:
		return resp, fmt.Errorf("meadowrun: job %s on %s: the agent answered no record", rj.id, rj.machine)
	}
	// The machine's record, as seen from here.
	resp.Job.Host, resp.Job.Machine = rj.url, rj.machine
	rj.copy(ctx, *resp.Job)
	return resp, nil
}

// callRetry is call, retried while the machine is unreachable, for up to
// a minute, so that a follower rides out a short network problem.
func (rj *remoteJob) callRetry(ctx context.Context, req agent.Request) (agent.Response, error) {
	end := time.Now().Add(time.Minute)
	for {
		resp, err := rj.call(ctx, req)
		if err == nil || !errors.Is(err, driver.ErrUnreachable) || time.Now().After(end) {
			return resp, err
		}
		if err := sleepCtx(ctx, time.Second); err != nil {
			return resp, err
		}
	}
}

// copy records the machine's record in this side's journal when it
// changed, keeping what only this side knows.
func (rj *remoteJob) copy(ctx context.Context, r journal.Record) {
	rj.mu.Lock()
	defer rj.mu.Unlock()
	s := rj.seen
	if s.State == r.State && s.Done == r.Done && s.Failed == r.Failed && s.Total == r.Total && s.LogFile == r.LogFile &&
		s.PID == r.PID && s.Error == r.Error && s.CancelRequested == r.CancelRequested && s.Finished.Equal(r.Finished) {
		return
	}
	_, err := rj.st.Commit(context.WithoutCancel(ctx), rj.id, nil, func(l *journal.Record) error {
		spec, submitted := l.Spec, l.Submitted
		*l = r
		l.Spec, l.Submitted, l.Detached = spec, submitted, true
		return nil
	})
	if err == nil {
		rj.seen = r
	}
}

// infoOf describes a record that the machine answered.
func (rj *remoteJob) infoOf(r journal.Record, lost bool) JobInfo {
	j := infoOf(r)
	if lost {
		j.State = JobLost
		if j.Error == "" {
			j.Error = fmt.Sprintf("the process running the job (pid %d on %s) ended before the job did", r.PID, rj.machine)
		}
	}
	return j
}

// info returns the job's description from its machine.
func (rj *remoteJob) info(ctx context.Context) (JobInfo, error) {
	resp, err := rj.call(ctx, agent.Request{Op: agent.OpJob})
	if err != nil {
		return JobInfo{}, err
	}
	return rj.infoOf(*resp.Job, resp.Lost), nil
}

// cancel has the machine's agent cancel the job.
func (rj *remoteJob) cancel(ctx context.Context) error {
	_, err := rj.call(ctx, agent.Request{Op: agent.OpCancel})
	return err
}

// remotePoll bounds the interval at which followers ask the agent.
const remotePoll = 200 * time.Millisecond

// follow is followResults through the agent.
func (rj *remoteJob) follow(ctx context.Context, yield func(journal.Record, journal.Result) bool) (journal.Record, error) {
	var after uint64
	delay := 10 * time.Millisecond
	for {
		resp, err := rj.callRetry(ctx, agent.Request{Op: agent.OpJob, Results: true, After: after})
		if err != nil {
			return journal.Record{}, err
		}
		rec := *resp.Job
		after = max(after, resp.Last)
		for _, r := range resp.Results {
			if !yield(rec, r) {
				return rec, nil
			}
		}
		if rec.Final() {
			return rec, nil
		}
		if resp.Lost {
			return rec, fmt.Errorf("%w: %s: %s", ErrJobLost, rj.id, rj.infoOf(rec, true).Error)
		}
		if len(resp.Results) > 0 {
			delay = 10 * time.Millisecond
		} else {
			delay = min(2*delay, remotePoll)
		}
		if err := sleepCtx(ctx, delay); err != nil {
			return journal.Record{}, err
		}
	}
}

// log is JobLog through the agent.
func (rj *remoteJob) log(ctx context.Context, lf *logFollower) error {
	delay := 10 * time.Millisecond
	for {
		resp, err := rj.callRetry(ctx, agent.Request{Op: agent.OpLog, Offset: lf.off})
		if err != nil {
			lf.flush()
			return err
		}
		if err := lf.feed(resp.Log); err != nil {
			return err
		}
		if len(resp.Log) == agent.MaxLog {
			continue // more is there already
		}
		// The agent read the record before the log: when the record is
		// final, the log is complete.
		rec := *resp.Job
		if rec.Final() || resp.Lost || !lf.opts.Follow {
			lf.flush()
			if lf.opts.Follow && resp.Lost {
				return fmt.Errorf("%w: %s: %s", ErrJobLost, rj.id, rj.infoOf(rec, true).Error)
			}
			return nil
		}
		if len(resp.Log) > 0 {
			delay = 10 * time.Millisecond
		} else {
			delay = min(2*delay, remotePoll)
		}
		if err := sleepCtx(ctx, delay); err != nil {
			lf.flush()
			return err
		}
	}
}

// follow yields a job's results: from the journal, or through the agent
// of its machine.
func follow(ctx context.Context, st *journal.Store, rj *remoteJob, id string, yield func(journal.Record, journal.Result) bool) (journal.Record, error) {
	if rj != nil {
		return rj.follow(ctx, yield)
	}
	return followResults(ctx, st, id, yield)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
