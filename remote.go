package meadowrun

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/journal"
)

// Durable jobs of SSH hosts. The supervisor runs on a machine of the
// host, started by its agent, and journals the job in that machine's
// journal (in the agent's directory); the submitting side keeps a copy of
// the record, with the machine, in its own journal, and reaches the job
// through the agent: results, log, cancel (see docs/durable-jobs.md).

// keeperHost is a host whose driver keeps durable jobs on its machines.
type keeperHost struct {
	drv driver.JobKeeper
	url string
}

// keeperOf returns h as a keeperHost, if its driver keeps jobs on its
// machines and it has a URL that reopens it.
func keeperOf(ctx context.Context, h *Host) *keeperHost {
	k := h.keeper(ctx)
	if k == nil {
		return nil
	}
	return &keeperHost{drv: k, url: h.URL()}
}

// submitRemote journals a job here, with the machines that keep it, and
// has their agents journal it there and start its supervisor: a map is
// split across the machines that can run its tasks (see planParts), any
// other job goes to the first machine reached.
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
	rec.State, rec.Detached = JobSubmitted, true
	rec.PID, rec.Proc = os.Getpid(), journal.Self()
	if err := st.Create(ctx, rec); err != nil {
		return nil, fmt.Errorf("meadowrun: %w", err)
	}
	fail := func(err error) (*remoteJob, error) {
		err = fmt.Errorf("meadowrun: starting job %s on %s: %w", rec.ID, sh.url, err)
		st.Commit(context.WithoutCancel(ctx), rec.ID, nil, func(r *journal.Record) error {
			r.State, r.Error, r.Finished = JobFailed, err.Error(), time.Now()
			return nil
		})
		return nil, err
	}
	var parts []journal.Part
	machine := "" // the first reached
	if rec.Kind == JobMap && n > 1 {
		if parts, machine, err = sh.startParts(ctx, rec, spec, raw, files); err != nil {
			return fail(err)
		}
	}
	if parts == nil {
		// One machine: the job keeps its id there.
		there := rec
		there.Host = "local"
		if machine, err = sh.drv.SubmitJob(ctx, machine, driver.JobSubmission{Job: there, Args: raw, Files: files}); err != nil {
			return fail(err)
		}
		parts = []journal.Part{{Machine: machine, ID: rec.ID}}
	}
	if _, err := st.Commit(ctx, rec.ID, nil, func(r *journal.Record) error {
		r.Machine = machinesOf(parts)
		if len(parts) > 1 {
			r.Parts = parts
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("meadowrun: job %s runs on %s, but recording that here failed: %w", rec.ID, machinesOf(parts), err)
	}
	rec.Machine, rec.Parts = machinesOf(parts), parts
	return newRemoteJob(st, rec, sh), nil
}

// remoteJob is a durable job that agents of machines of an SSH host keep:
// one, or one per part of a map split across machines.
type remoteJob struct {
	st    *journal.Store // this side's journal, which keeps a copy
	id    string
	url   string // the host's
	parts []journal.Part
	deal  *dealer // nil unless split

	mu   sync.Mutex
	host *keeperHost
	seen journal.Record // as last copied to st
}

// newRemoteJob is the handle of rec, a job that agents of sh keep.
func newRemoteJob(st *journal.Store, rec journal.Record, sh *keeperHost) *remoteJob {
	rj := &remoteJob{st: st, id: rec.ID, url: rec.Host, parts: rec.Parts, host: sh}
	if len(rj.parts) == 0 {
		rj.parts = []journal.Part{{Machine: rec.Machine, ID: rec.ID}}
	}
	if len(rj.parts) > 1 {
		weights := make([]int, len(rj.parts))
		for k, p := range rj.parts {
			weights[k] = max(1, p.Weight)
		}
		rj.deal = newDealer(weights)
	}
	return rj
}

// openKeeper opens the host of job id from its URL.
func openKeeper(ctx context.Context, id, url string) (*keeperHost, error) {
	h, err := OpenHost(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("meadowrun: job %s: %w", id, err)
	}
	sh := keeperOf(ctx, h)
	if sh == nil {
		return nil, fmt.Errorf("meadowrun: job %s: its host %q is not an SSH host", id, url)
	}
	return sh, nil
}

// openRemote reopens the host of a job of an SSH host from its URL.
func openRemote(ctx context.Context, st *journal.Store, rec journal.Record) (*remoteJob, error) {
	sh, err := openKeeper(ctx, rec.ID, rec.Host)
	if err != nil {
		return nil, err
	}
	return newRemoteJob(st, rec, sh), nil
}

// keeper returns the job's host, reopened from its URL, as another
// process would, when the one it was submitted with was closed.
func (rj *remoteJob) keeper(ctx context.Context) (*keeperHost, error) {
	rj.mu.Lock()
	defer rj.mu.Unlock()
	if !rj.host.drv.Closed() {
		return rj.host, nil
	}
	sh, err := openKeeper(ctx, rj.id, rj.url)
	if err != nil {
		return nil, err
	}
	rj.host = sh
	return sh, nil
}

// jobCall is one of a keeper's operations on job id of machine.
type jobCall func(ctx context.Context, k driver.JobKeeper, machine, id string) (driver.JobStatus, error)

// inspectCall asks for a job's record and, with results, its results
// after cursor after.
func inspectCall(results bool, after uint64) jobCall {
	return func(ctx context.Context, k driver.JobKeeper, machine, id string) (driver.JobStatus, error) {
		return k.InspectJob(ctx, machine, id, results, after)
	}
}

// logCall asks for a job's log from offset.
func logCall(offset int64) jobCall {
	return func(ctx context.Context, k driver.JobKeeper, machine, id string) (driver.JobStatus, error) {
		return k.JobLog(ctx, machine, id, offset)
	}
}

// cancelCall cancels a job.
func cancelCall(ctx context.Context, k driver.JobKeeper, machine, id string) (driver.JobStatus, error) {
	return k.CancelJob(ctx, machine, id)
}

// call does op on part p of the job, on its machine, and returns the
// part's record as seen from here.
func (rj *remoteJob) call(ctx context.Context, p journal.Part, op jobCall) (driver.JobStatus, error) {
	sh, err := rj.keeper(ctx)
	if err != nil {
		return driver.JobStatus{}, err
	}
	resp, err := op(ctx, sh.drv, p.Machine, p.ID)
	switch {
	case errors.Is(err, ErrJobNotFound), errors.Is(err, ErrJobFinished):
		return resp, err
	case err != nil:
		return resp, fmt.Errorf("meadowrun: job %s on %s: %w", rj.id, p.Machine, err)
	}
	resp.Job.Host, resp.Job.Machine = rj.url, p.Machine
	return resp, nil
}

// callRetry is call, retried while the machine is unreachable, for up to
// a minute.
func (rj *remoteJob) callRetry(ctx context.Context, p journal.Part, op jobCall) (driver.JobStatus, error) {
	end := time.Now().Add(time.Minute)
	for {
		resp, err := rj.call(ctx, p, op)
		if err == nil || !errors.Is(err, driver.ErrUnreachable) || time.Now().After(end) {
			return resp, err
		}
		if err := sleepCtx(ctx, time.Second); err != nil {
			return resp, err
		}
	}
}

// merge makes the job's record of its parts' records (in the order of
// rj.parts) and copies it to this side's journal.
func (rj *remoteJob) merge(ctx context.Context, recs []journal.Record) journal.Record {
	m := recs[0]
	if len(recs) > 1 {
		m.ID, m.Machine, m.Parts, m.LogFile, m.ExitCode = rj.id, machinesOf(rj.parts), rj.parts, "", nil
		m.Total, m.Done, m.Failed = 0, 0, 0
		final, states := true, map[JobState]bool{}
		var errs []string
		for k, r := range recs {
			if m.Total >= 0 && r.Total >= 0 {
				m.Total += r.Total
			} else {
				m.Total = -1
			}
			m.Done += r.Done
			m.Failed += r.Failed
			final = final && r.Final()
			states[r.State] = true
			m.CancelRequested = m.CancelRequested || r.CancelRequested
			if !r.Started.IsZero() && (m.Started.IsZero() || r.Started.Before(m.Started)) {
				m.Started = r.Started
			}
			if r.Finished.After(m.Finished) {
				m.Finished = r.Finished
			}
			if r.Error != "" {
				errs = append(errs, rj.parts[k].Machine+": "+r.Error)
			}
		}
		m.Error = strings.Join(errs, "; ")
		switch {
		case !final && states[JobRunning]:
			m.State, m.Finished = JobRunning, time.Time{}
		case !final:
			m.State, m.Finished = JobSubmitted, time.Time{}
		case states[JobCancelled]:
			m.State = JobCancelled
		case states[JobFailed]:
			m.State = JobFailed
		default:
			m.State = JobSucceeded
		}
	}
	rj.copy(ctx, m)
	return m
}

// copy records the job's record in this side's journal when it changed,
// keeping what only this side knows.
func (rj *remoteJob) copy(ctx context.Context, r journal.Record) {
	rj.mu.Lock()
	defer rj.mu.Unlock()
	s := rj.seen
	if s.State == r.State && s.Done == r.Done && s.Failed == r.Failed && s.Total == r.Total && s.LogFile == r.LogFile &&
		s.PID == r.PID && s.Error == r.Error && s.CancelRequested == r.CancelRequested && s.Finished.Equal(r.Finished) {
		return
	}
	_, err := rj.st.Commit(context.WithoutCancel(ctx), rj.id, nil, func(l *journal.Record) error {
		spec, submitted, parts := l.Spec, l.Submitted, l.Parts
		*l = r
		l.ID, l.Spec, l.Submitted, l.Detached, l.Parts = rj.id, spec, submitted, true, parts
		return nil
	})
	if err == nil {
		rj.seen = r
	}
}

// lostError says that the process running part k of the job ended before
// it did.
func (rj *remoteJob) lostError(k int, r journal.Record) error {
	return fmt.Errorf("the process running the job (pid %d on %s) ended before the job did", r.PID, rj.parts[k].Machine)
}

// records asks every part's agent for its record, at once: recs[k] is
// part k's record, or errs[k] why it could not be had; lost[k] is set if
// the process running part k ended before it did.
func (rj *remoteJob) records(ctx context.Context) (recs []journal.Record, lost, errs []error) {
	recs = make([]journal.Record, len(rj.parts))
	errs = make([]error, len(rj.parts))
	lost = make([]error, len(rj.parts))
	var wg sync.WaitGroup
	for k, p := range rj.parts {
		wg.Go(func() {
			resp, err := rj.call(ctx, p, inspectCall(false, 0))
			if err != nil {
				errs[k] = err
				return
			}
			recs[k] = resp.Job
			if resp.Lost {
				lost[k] = rj.lostError(k, recs[k])
			}
		})
	}
	wg.Wait()
	return recs, lost, errs
}

// info returns the job's description from its machines.
func (rj *remoteJob) info(ctx context.Context) (JobInfo, error) {
	recs, lost, errs := rj.records(ctx)
	if err := errors.Join(errs...); err != nil {
		return JobInfo{}, err
	}
	m := rj.merge(ctx, recs)
	j := infoOf(m)
	if err := errors.Join(lost...); err != nil && !m.Final() {
		j.State = JobLost
		if j.Error == "" {
			j.Error = err.Error()
		}
	}
	if rj.deal != nil {
		for k, r := range recs {
			p := PartInfo{Machine: rj.parts[k].Machine, ID: rj.parts[k].ID, State: JobState(r.State),
				Tasks: r.Total, Done: r.Done, Failed: r.Failed, Error: r.Error}
			if lost[k] != nil && !r.Final() {
				p.State, p.Error = JobLost, cmp.Or(p.Error, lost[k].Error())
			}
			j.Parts = append(j.Parts, p)
		}
	}
	return j, nil
}

// check checks that the job's machines still have it. A part whose
// machine cannot be reached now is no error while another part answers:
// following the map waits for that machine.
func (rj *remoteJob) check(ctx context.Context) error {
	recs, _, errs := rj.records(ctx)
	var unreachable []error
	for _, err := range errs {
		switch {
		case err == nil:
		case errors.Is(err, driver.ErrUnreachable):
			unreachable = append(unreachable, err)
		default:
			return err
		}
	}
	if len(unreachable) == len(errs) {
		return errors.Join(unreachable...)
	}
	if len(unreachable) == 0 {
		rj.merge(ctx, recs)
	}
	return nil
}

// cancel has the agents of the job's machines cancel it. It is
// ErrJobFinished only when every part had finished.
func (rj *remoteJob) cancel(ctx context.Context) error {
	errs := make([]error, len(rj.parts))
	var wg sync.WaitGroup
	for k, p := range rj.parts {
		wg.Go(func() {
			_, errs[k] = rj.call(ctx, p, cancelCall)
		})
	}
	wg.Wait()
	var other []error
	for _, err := range errs {
		if err != nil && !errors.Is(err, ErrJobFinished) {
			other = append(other, err)
		}
	}
	rj.info(ctx) // refresh this side's copy
	if len(other) > 0 {
		return errors.Join(other...)
	}
	if !slices.Contains(errs, nil) {
		return errs[0]
	}
	return nil
}

// remotePoll bounds the interval at which followers ask the agent.
const remotePoll = 200 * time.Millisecond

// follow is followResults through the agents: each part's results, with
// the map's task indices. The record yielded with a result is its part's.
// Parts are followed at once, so that a machine that cannot be reached
// for a while holds back only its own part's results. A lost part ends
// the follow with ErrJobLost once every other part has ended.
func (rj *remoteJob) follow(ctx context.Context, yield func(journal.Record, journal.Result) bool) (journal.Record, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type batch struct {
		k       int
		rec     journal.Record
		results []journal.Result
		end     bool
		err     error
	}
	ch := make(chan batch)
	for k := range rj.parts {
		go func() {
			rec, err := rj.followPart(ctx, k, func(rec journal.Record, rs []journal.Result) bool {
				select {
				case ch <- batch{k: k, rec: rec, results: rs}:
					return true
				case <-ctx.Done():
					return false
				}
			})
			select {
			case ch <- batch{k: k, rec: rec, end: true, err: err}:
			case <-ctx.Done():
			}
		}()
	}
	recs := make([]journal.Record, len(rj.parts))
	var lost []error
	for open := len(rj.parts); open > 0; {
		var b batch
		select {
		case b = <-ch:
		case <-ctx.Done():
			return journal.Record{}, ctx.Err()
		}
		if b.err == nil || errors.Is(b.err, ErrJobLost) {
			recs[b.k] = b.rec
		}
		// This side's copy follows the job while someone does.
		if !slices.ContainsFunc(recs, func(r journal.Record) bool { return r.ID == "" }) {
			rj.merge(ctx, recs)
		}
		for _, r := range b.results {
			if rj.deal != nil {
				r.Task = rj.deal.task(b.k, r.Task)
			}
			if !yield(b.rec, r) {
				return b.rec, nil
			}
		}
		if !b.end {
			continue
		}
		open--
		switch {
		case errors.Is(b.err, ErrJobLost):
			lost = append(lost, b.err)
		case b.err != nil:
			return journal.Record{}, b.err
		}
	}
	return rj.merge(ctx, recs), errors.Join(lost...)
}

// followPart polls part k's agent for its results, and passes each batch
// to emit, until the part has ended (its final record) or emit returns
// false.
func (rj *remoteJob) followPart(ctx context.Context, k int, emit func(journal.Record, []journal.Result) bool) (journal.Record, error) {
	var after uint64
	delay := 10 * time.Millisecond
	for {
		resp, err := rj.callRetry(ctx, rj.parts[k], inspectCall(true, after))
		if err != nil {
			return journal.Record{}, err
		}
		rec := resp.Job
		after = max(after, resp.Cursor)
		if len(resp.Results) > 0 && !emit(rec, resp.Results) {
			return rec, nil
		}
		switch {
		case rec.Final():
			return rec, nil
		case resp.Lost:
			return rec, fmt.Errorf("%w: %s: %s", ErrJobLost, rj.id, rj.lostError(k, rec))
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

// log is JobLog through the agents. The parts of a split map are read at
// once, and their lines written as they come, with the map's task
// indices; a part's own lines ("[meadowrun] ...", "[worker w1] ...") are
// prefixed with its machine.
func (rj *remoteJob) log(ctx context.Context, lf *logFollower) error {
	if rj.deal == nil {
		return rj.logPart(ctx, 0, lf)
	}
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	w := writerFunc(func(b []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return lf.w.Write(b)
	})
	errs := make([]error, len(rj.parts))
	var wg sync.WaitGroup
	for k, p := range rj.parts {
		f := &logFollower{w: w, opts: lf.opts, prefix: "[" + p.Machine + "] ", task: func(j int) int { return rj.deal.task(k, j) }}
		wg.Go(func() {
			if errs[k] = rj.logPart(ctx, k, f); errs[k] != nil && !errors.Is(errs[k], ErrJobLost) {
				cancel() // the first failure ends the others
			}
		})
	}
	wg.Wait()
	var lost []error
	for _, err := range errs {
		switch {
		case err == nil:
		case errors.Is(err, ErrJobLost):
			lost = append(lost, err)
		case !errors.Is(err, context.Canceled) || parent.Err() != nil:
			return err
		}
	}
	if err := parent.Err(); err != nil {
		return err
	}
	return errors.Join(lost...)
}

// logPart writes part k's log through f: what is there, or with Follow
// until the part has ended.
func (rj *remoteJob) logPart(ctx context.Context, k int, f *logFollower) error {
	delay := 10 * time.Millisecond
	for {
		resp, err := rj.callRetry(ctx, rj.parts[k], logCall(f.off))
		if err != nil {
			f.flush()
			return err
		}
		if err := f.feed(resp.Log); err != nil {
			return err
		}
		if len(resp.Log) == driver.MaxJobLog {
			continue // more is there already
		}
		// The agent read the record before the log: when the record is
		// final, the log is complete.
		rec := resp.Job
		if rj.deal == nil {
			rj.copy(ctx, rec)
		}
		if rec.Final() || resp.Lost || !f.opts.Follow {
			f.flush()
			if f.opts.Follow && resp.Lost {
				return fmt.Errorf("%w: %s: %s", ErrJobLost, rj.id, rj.lostError(k, rec))
			}
			return nil
		}
		if len(resp.Log) > 0 {
			delay = 10 * time.Millisecond
		} else {
			delay = min(2*delay, remotePoll)
		}
		if err := sleepCtx(ctx, delay); err != nil {
			f.flush()
			return err
		}
	}
}

// writerFunc is an io.Writer of a function.
type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

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
