package durable

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/journal"
)

// A job is followed through a driver.JobKeeper wherever it runs: the
// Keeper of this machine's journal for a job of this machine, the host's
// keeper (its machines' agents) for a job of a host whose machines keep
// their jobs. A job of such a host is supervised on a machine of the
// host, journaled in that machine's journal (in the agent's directory);
// this side keeps a copy of its record, with the machine, in its own
// journal, refreshed by every answer (see docs/durable-jobs.md).

// Submission is a job for the machines of a host that keeps jobs: its
// record (kind, host, function, command and a fresh id set), its
// arguments, and what splitting a map across machines needs.
type Submission struct {
	Job journal.Record
	// Args are a map's encoded arguments (nil for other jobs), N their
	// number (-1 while unknown).
	Args iter.Seq[Arg]
	N    int
	// Files are the deployment's files, relative to the working
	// directory: they go with the job.
	Files []string
	// Resources are what one task needs, and Concurrency the map's
	// concurrency (0: the default): a map is split across machines by
	// how many of its tasks each runs at once.
	Resources   driver.Resources
	Concurrency int
	// Spec encodes the job's options (driver.Job.Spec) with concurrency
	// c: the map's own, or a part's share of it.
	Spec func(c int) ([]byte, error)
}

// SubmitRemote journals a job here, with the machines that keep it, and
// has the keeper k of host url journal it there and start its
// supervisor: a map is split across the machines that can run its tasks
// (see planParts), any other job goes to the first machine reached.
func (js *Jobs) SubmitRemote(ctx context.Context, k driver.JobKeeper, url string, sub Submission) (*Job, error) {
	rec, n := sub.Job, sub.N
	var raw [][]byte
	if sub.Args != nil {
		for a := range sub.Args {
			if a.Err != nil {
				return nil, fmt.Errorf("meadowrun: %s: encoding argument %d: %w", rec.Function.Name, len(raw), a.Err)
			}
			raw = append(raw, a.B)
		}
		n = len(raw)
	}
	b, err := sub.Spec(sub.Concurrency)
	if err != nil {
		return nil, fmt.Errorf("meadowrun: encoding the job's options: %w", err)
	}
	rec.Spec, rec.Submitted, rec.Total = b, time.Now(), n
	rec.State, rec.Detached = driver.JobSubmitted, true
	rec.PID, rec.Proc = os.Getpid(), journal.Self()
	st := js.Store
	if err := st.Create(ctx, rec); err != nil {
		return nil, fmt.Errorf("meadowrun: %w", err)
	}
	fail := func(err error) (*Job, error) {
		err = fmt.Errorf("meadowrun: starting job %s on %s: %w", rec.ID, url, err)
		st.Commit(context.WithoutCancel(ctx), rec.ID, nil, func(r *journal.Record) error {
			r.State, r.Error, r.Finished = driver.JobFailed, err.Error(), time.Now()
			return nil
		})
		return nil, err
	}
	var parts []journal.Part
	machine := "" // the first reached
	if rec.Kind == driver.JobMap && n > 1 {
		if parts, machine, err = startParts(ctx, k, rec, sub, raw); err != nil {
			return fail(err)
		}
	}
	if parts == nil {
		// One machine: the job keeps its id there.
		there := rec
		there.Host = "local"
		if machine, err = k.SubmitJob(ctx, machine, driver.JobSubmission{Job: there, Args: raw, Files: sub.Files}); err != nil {
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
	return js.handle(rec, k), nil
}

// Job is the handle of a durable job, the same for every keeper: one
// part, or one per part of a map split across machines, each followed
// through its keeper.
type Job struct {
	js    *Jobs
	id    string
	url   string // the host's
	parts []journal.Part
	deal  *dealer // nil unless split
	// here: the keeper is this machine's Keeper of js.Store, which is
	// the job's own record, not a copy.
	here bool

	mu     sync.Mutex
	keeper driver.JobKeeper
	seen   journal.Record // as last copied to js.Store
}

// ID identifies the job in every process.
func (j *Job) ID() string { return j.id }

// Open returns the handle of the job rec of js.Store: a job of this
// machine is followed through this machine's keeper; a job of a host
// whose machines keep it (rec.Machine set) through that host's keeper,
// reopened from its URL.
func (js *Jobs) Open(ctx context.Context, rec journal.Record) (*Job, error) {
	if rec.Machine == "" {
		return js.handle(rec, nil), nil
	}
	k, err := js.openKeeper(ctx, rec.ID, rec.Host)
	if err != nil {
		return nil, err
	}
	return js.handle(rec, k), nil
}

// handle is the handle of rec, a job that k keeps (nil: this machine's
// keeper).
func (js *Jobs) handle(rec journal.Record, k driver.JobKeeper) *Job {
	j := &Job{js: js, id: rec.ID, url: rec.Host, parts: rec.Parts, keeper: k}
	if k == nil {
		j.keeper, j.here = NewKeeper(js.Store, ""), true
	}
	if len(j.parts) == 0 {
		j.parts = []journal.Part{{Machine: rec.Machine, ID: rec.ID}}
	}
	if len(j.parts) > 1 {
		weights := make([]int, len(j.parts))
		for k, p := range j.parts {
			weights[k] = max(1, p.Weight)
		}
		j.deal = newDealer(weights)
	}
	return j
}

// openKeeper opens the host of job id from its URL.
func (js *Jobs) openKeeper(ctx context.Context, id, url string) (driver.JobKeeper, error) {
	if js.OpenKeeper == nil {
		return nil, fmt.Errorf("meadowrun: job %s: no way to open its host %q", id, url)
	}
	k, err := js.OpenKeeper(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("meadowrun: job %s: %w", id, err)
	}
	if k == nil {
		return nil, fmt.Errorf("meadowrun: job %s: its host %q is not an SSH host", id, url)
	}
	return k, nil
}

// keeperNow returns the job's keeper; a host's keeper is reopened from
// its URL, as another process would, when the one it was submitted with
// was closed.
func (j *Job) keeperNow(ctx context.Context) (driver.JobKeeper, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if !j.keeper.Closed() {
		return j.keeper, nil
	}
	k, err := j.js.openKeeper(ctx, j.id, j.url)
	if err != nil {
		return nil, err
	}
	j.keeper = k
	return k, nil
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
func (rj *Job) call(ctx context.Context, p journal.Part, op jobCall) (driver.JobStatus, error) {
	k, err := rj.keeperNow(ctx)
	if err != nil {
		return driver.JobStatus{}, err
	}
	resp, err := op(ctx, k, p.Machine, p.ID)
	switch {
	case errors.Is(err, driver.ErrJobNotFound), errors.Is(err, driver.ErrJobFinished), err != nil && rj.here:
		return resp, err
	case err != nil:
		return resp, fmt.Errorf("meadowrun: job %s on %s: %w", rj.id, p.Machine, err)
	}
	resp.Job.Host, resp.Job.Machine = rj.url, p.Machine
	return resp, nil
}

// callRetry is call, retried while the machine is unreachable, for up to
// a minute.
func (rj *Job) callRetry(ctx context.Context, p journal.Part, op jobCall) (driver.JobStatus, error) {
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
func (rj *Job) merge(ctx context.Context, recs []journal.Record) journal.Record {
	m := recs[0]
	if len(recs) > 1 {
		m.ID, m.Machine, m.Parts, m.LogFile, m.ExitCode = rj.id, machinesOf(rj.parts), rj.parts, "", nil
		m.Total, m.Done, m.Failed, m.CostUSD = 0, 0, 0, 0
		final, states := true, map[driver.JobState]bool{}
		var errs []string
		for k, r := range recs {
			if m.Total >= 0 && r.Total >= 0 {
				m.Total += r.Total
			} else {
				m.Total = -1
			}
			m.Done += r.Done
			m.Failed += r.Failed
			m.CostUSD += r.CostUSD
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
		case !final && states[driver.JobRunning]:
			m.State, m.Finished = driver.JobRunning, time.Time{}
		case !final:
			m.State, m.Finished = driver.JobSubmitted, time.Time{}
		case states[driver.JobCancelled]:
			m.State = driver.JobCancelled
		case states[driver.JobFailed]:
			m.State = driver.JobFailed
		default:
			m.State = driver.JobSucceeded
		}
	}
	rj.copy(ctx, m)
	return m
}

// copy records the job's record in this side's journal when it changed,
// keeping what only this side knows. A job of this machine's journal has
// no copy: its record is the one.
func (rj *Job) copy(ctx context.Context, r journal.Record) {
	if rj.here {
		return
	}
	rj.mu.Lock()
	defer rj.mu.Unlock()
	s := rj.seen
	if s.State == r.State && s.Done == r.Done && s.Failed == r.Failed && s.Total == r.Total && s.LogFile == r.LogFile &&
		s.PID == r.PID && s.Error == r.Error && s.CancelRequested == r.CancelRequested && s.Finished.Equal(r.Finished) {
		return
	}
	_, err := rj.js.Store.Commit(context.WithoutCancel(ctx), rj.id, nil, func(l *journal.Record) error {
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
func (rj *Job) lostError(k int, r journal.Record) error {
	if rj.parts[k].Machine == "" {
		return fmt.Errorf("the process running the job (pid %d) ended before the job did", r.PID)
	}
	return fmt.Errorf("the process running the job (pid %d on %s) ended before the job did", r.PID, rj.parts[k].Machine)
}

// records asks every part's agent for its record, at once: recs[k] is
// part k's record, or errs[k] why it could not be had; lost[k] is set if
// the process running part k ended before it did.
func (rj *Job) records(ctx context.Context) (recs []journal.Record, lost, errs []error) {
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

// Info is a job's state as its keepers report it.
type Info struct {
	// Job is the job's record: for a map split across machines, its
	// parts' records merged.
	Job journal.Record
	// Lost, when the job has not ended, says why it never will: the
	// process running it (or a part of it) died.
	Lost string
	// Parts are the parts of a map split across machines, in order.
	Parts []PartInfo
}

// PartInfo is one part of a map split across machines.
type PartInfo struct {
	journal.Part
	Job  journal.Record
	Lost string // as Info.Lost
}

// Info returns the job's state from its keepers.
func (rj *Job) Info(ctx context.Context) (Info, error) {
	recs, lost, errs := rj.records(ctx)
	if err := errors.Join(errs...); err != nil {
		return Info{}, err
	}
	in := Info{Job: rj.merge(ctx, recs)}
	if err := errors.Join(lost...); err != nil && !in.Job.Final() {
		in.Lost = err.Error()
	}
	if rj.deal != nil {
		for k, r := range recs {
			p := PartInfo{Part: rj.parts[k], Job: r}
			if lost[k] != nil && !r.Final() {
				p.Lost = lost[k].Error()
			}
			in.Parts = append(in.Parts, p)
		}
	}
	return in, nil
}

// Check checks that the job's machines still have it. A part whose
// machine cannot be reached now is no error while another part answers:
// following the map waits for that machine. A job of this machine's
// journal needs no check: its record is the one just read.
func (rj *Job) Check(ctx context.Context) error {
	if rj.here {
		return nil
	}
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

// Cancel has the job's keepers cancel it (see Cancel). It is
// driver.ErrJobFinished only when every part had finished.
func (rj *Job) Cancel(ctx context.Context) error {
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
		if err != nil && !errors.Is(err, driver.ErrJobFinished) {
			other = append(other, err)
		}
	}
	if !rj.here {
		rj.Info(ctx) // refresh this side's copy
	}
	if len(other) > 0 {
		return errors.Join(other...)
	}
	if !slices.Contains(errs, nil) {
		return errs[0]
	}
	return nil
}

// remotePoll bounds the interval at which followers ask a host's keeper.
const remotePoll = 200 * time.Millisecond

// Follow yields the job's results through its keepers, those already
// recorded first, until the job ends or ctx does, and returns the final
// record: each part's results, with the map's task indices. The record yielded with a result is its part's.
// Parts are followed at once, so that a machine that cannot be reached
// for a while holds back only its own part's results. A lost part ends
// the follow with ErrJobLost once every other part has ended.
func (rj *Job) Follow(ctx context.Context, yield func(journal.Record, journal.Result) bool) (journal.Record, error) {
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
func (rj *Job) followPart(ctx context.Context, k int, emit func(journal.Record, []journal.Result) bool) (journal.Record, error) {
	var after uint64
	pace := rj.pacer()
	for {
		if !pace.ready() {
			if err := pace.wait(ctx, false); err != nil {
				return journal.Record{}, err
			}
			continue
		}
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
		if err := pace.wait(ctx, len(resp.Results) > 0); err != nil {
			return journal.Record{}, err
		}
	}
}

// Log writes the job's log to w through its keepers: what is there, or
// with opts.Follow until the job has ended. The parts of a split map are
// read at once, and their lines written as they come, with the map's task
// indices; a part's own lines ("[meadowrun] ...", "[worker w1] ...") are
// prefixed with its machine.
func (rj *Job) Log(ctx context.Context, w io.Writer, opts LogOptions) error {
	lf := &logFollower{w: w, opts: opts}
	if rj.deal == nil {
		return rj.logPart(ctx, 0, lf)
	}
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sw := &syncWriter{w: lf.w}
	errs := make([]error, len(rj.parts))
	var wg sync.WaitGroup
	for k, p := range rj.parts {
		f := &logFollower{w: sw, opts: lf.opts, prefix: "[" + p.Machine + "] ", task: func(j int) int { return rj.deal.task(k, j) }}
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
func (rj *Job) logPart(ctx context.Context, k int, f *logFollower) error {
	pace := rj.pacer()
	for {
		if !pace.ready() {
			if err := pace.wait(ctx, false); err != nil {
				f.flush()
				return err
			}
			continue
		}
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
		if err := pace.wait(ctx, len(resp.Log) > 0); err != nil {
			f.flush()
			return err
		}
	}
}

// pacer paces a follower of one part: this machine's journal is read only
// when it changed (see poller); a host's keeper is asked every 10 ms
// while answers bring something new, backing off to remotePoll.
type pacer interface {
	// ready reports whether to ask the keeper now.
	ready() bool
	// wait waits before the next question; got says whether the last
	// answer brought something new.
	wait(ctx context.Context, got bool) error
}

func (rj *Job) pacer() pacer {
	if rj.here {
		return journalPacer{newPoller(rj.js.Store)}
	}
	return &backoff{delay: 10 * time.Millisecond}
}

type journalPacer struct{ p *poller }

func (j journalPacer) ready() bool                            { return j.p.changed() }
func (j journalPacer) wait(ctx context.Context, _ bool) error { return j.p.wait(ctx) }

type backoff struct{ delay time.Duration }

func (b *backoff) ready() bool { return true }
func (b *backoff) wait(ctx context.Context, got bool) error {
	if got {
		b.delay = 10 * time.Millisecond
	} else {
		b.delay = min(2*b.delay, remotePoll)
	}
	return sleepCtx(ctx, b.delay)
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
