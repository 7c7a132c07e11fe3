package meadowrun

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"reflect"
	"time"

	"github.com/meadowrun-go/meadowrun/internal/journal"
)

// Detached is the handle of a durable function or command job: another
// process gets the same handle from Attach or AttachCommand and the job's
// id.
type Detached[T any] struct {
	id     string
	st     *journal.Store
	local  *localJob
	remote *remoteJob // a job of an SSH host
	take   func(journal.Record, journal.Result) (T, error)
}

// ID identifies the job in every process.
func (d *Detached[T]) ID() string { return d.id }

// Info returns the job's description from the journal.
func (d *Detached[T]) Info(ctx context.Context) (JobInfo, error) {
	if d.remote != nil {
		return d.remote.info(ctx)
	}
	r, err := d.st.Get(ctx, d.id)
	if err != nil {
		return JobInfo{}, notFound(err, d.id)
	}
	return infoOf(r), nil
}

// Cancel stops the job (see CancelJob).
func (d *Detached[T]) Cancel(ctx context.Context) error {
	if d.local != nil {
		d.local.runner.stop()
	}
	if d.remote != nil {
		return d.remote.cancel(ctx)
	}
	return CancelJob(ctx, d.id)
}

// Wait waits until the job has finished and returns its result, read
// from the journal (or, for an in-process job, as it arrives). If ctx
// ends first, Wait returns ctx's error and the job goes on. A finished
// job's result can be read any number of times, from any process.
func (d *Detached[T]) Wait(ctx context.Context) (T, error) {
	var zero T
	if d.local != nil && d.local.runner.local.take() {
		var got *journal.Result
		if err := d.local.runner.local.all(ctx, func(r journal.Result) bool {
			got = &r
			return false
		}); err != nil {
			return zero, err
		}
		select {
		case <-d.local.done:
		case <-ctx.Done():
			return zero, ctx.Err()
		}
		if got == nil {
			return zero, errors.Join(errors.New("meadowrun: the job ended without a result"), d.local.err)
		}
		v, err := d.take(d.local.runner.record(), *got)
		if d.local.err != nil {
			err = errors.Join(err, d.local.err)
		}
		return v, err
	}
	var got *journal.Result
	var rec journal.Record
	rec, err := follow(ctx, d.st, d.remote, d.id, func(r journal.Record, res journal.Result) bool {
		rec = r
		got = &res
		return false
	})
	if got != nil {
		return d.take(rec, *got)
	}
	if err != nil {
		return zero, err
	}
	if rec.Error != "" {
		return zero, &jobError{msg: rec.Error, canceled: rec.State == JobCancelled}
	}
	return zero, fmt.Errorf("meadowrun: job %s ended (%s) without a result", d.id, rec.State)
}

// DetachedMap is the handle of a durable map: another process gets the
// same handle from AttachMap and the job's id.
type DetachedMap[R any] struct {
	id     string
	st     *journal.Store
	local  *localJob
	remote *remoteJob // a job of an SSH host
	dec    func([]byte) (R, error)
	fn     string
}

// ID identifies the job in every process.
func (m *DetachedMap[R]) ID() string { return m.id }

// Info returns the job's description from the journal.
func (m *DetachedMap[R]) Info(ctx context.Context) (JobInfo, error) {
	if m.remote != nil {
		return m.remote.info(ctx)
	}
	r, err := m.st.Get(ctx, m.id)
	if err != nil {
		return JobInfo{}, notFound(err, m.id)
	}
	return infoOf(r), nil
}

// Cancel stops the map (see CancelJob).
func (m *DetachedMap[R]) Cancel(ctx context.Context) error {
	if m.local != nil {
		m.local.runner.stop()
	}
	if m.remote != nil {
		return m.remote.cancel(ctx)
	}
	return CancelJob(ctx, m.id)
}

func (m *DetachedMap[R]) result(rec journal.Record, r journal.Result) TaskResult[R] {
	tr := TaskResult[R]{TaskID: r.Task, Attempt: r.Attempt, Err: errorOfFailure(r.Err, r, rec.LogFile), Worker: r.Worker,
		Machine: r.Machine, LogFile: rec.LogFile, Duration: time.Duration(r.Nanos), PeakMemoryBytes: r.Peak}
	if tr.Err == nil {
		v, err := m.dec(r.Value)
		if err != nil {
			tr.Err = &TaskError{TaskID: r.Task, Attempt: r.Attempt, Kind: KindEncoding, Type: fmt.Sprintf("%T", err),
				Message: fmt.Sprintf("decoding the result of %s: %v", m.fn, err), Worker: r.Worker, Machine: r.Machine, LogFile: rec.LogFile}
		} else {
			tr.Value = v
		}
	}
	return tr
}

// AsCompleted yields each task's final result as it completes: those
// already journaled first, then the others as they arrive, until the map
// has finished. It can be ranged over any number of times, from any
// process; breaking out of the loop does not cancel the map. A map that
// stopped before every argument became a task (cancellation, an error
// that affects every task, a lost supervisor) ends with a TaskResult of
// TaskID -1 that carries the reason. If ctx ends, so does the iteration,
// with a last TaskResult of TaskID -1 carrying ctx's error.
func (m *DetachedMap[R]) AsCompleted(ctx context.Context) iter.Seq[TaskResult[R]] {
	return func(yield func(TaskResult[R]) bool) {
		if m.local != nil && m.local.runner.local.take() {
			stopped := false
			err := m.local.runner.local.all(ctx, func(r journal.Result) bool {
				if !yield(m.result(m.local.runner.record(), r)) {
					stopped = true
					return false
				}
				return true
			})
			if stopped {
				return
			}
			if err == nil {
				select {
				case <-m.local.done:
					err = m.local.err
				case <-ctx.Done():
					err = ctx.Err()
				}
			}
			if err != nil {
				yield(TaskResult[R]{TaskID: -1, Err: err})
			}
			return
		}
		stopped := false
		_, err := follow(ctx, m.st, m.remote, m.id, func(rec journal.Record, r journal.Result) bool {
			if !yield(m.result(rec, r)) {
				stopped = true
				return false
			}
			return true
		})
		if err != nil && !stopped {
			yield(TaskResult[R]{TaskID: -1, Err: err})
		}
	}
}

// Wait waits until the map has finished and returns the results in
// argument order; failed tasks are reported together in a *MapError, as
// RunMap does.
func (m *DetachedMap[R]) Wait(ctx context.Context) ([]R, error) {
	total := -1
	if info, err := m.Info(ctx); err == nil {
		total = info.Tasks
	}
	return collectResults(m.AsCompleted(ctx), total)
}

// decoderFor checks that a journaled job's function returns R and returns
// the decoder of its results.
func decoderFor[R any](rec journal.Record) (func([]byte) (R, error), error) {
	c, err := codecFor[R]()
	if err != nil {
		return nil, fmt.Errorf("meadowrun: attaching to job %s: %w", rec.ID, err)
	}
	if rec.Function == nil {
		return nil, fmt.Errorf("meadowrun: job %s is a %s, not a function or map", rec.ID, rec.Kind)
	}
	want := qualifiedName(reflect.TypeFor[R]())
	_, resCodec, _ := cutCodec(rec.Function.Codec)
	switch any(*new(R)).(type) {
	case []byte:
		// Any result, as encoded.
		return c.dec, nil
	case json.RawMessage:
		if resCodec == codecJSON {
			return c.dec, nil
		}
	}
	if rec.Function.Result != want || resCodec != c.name {
		return nil, fmt.Errorf("%w: job %s runs %s, which returns %s (codec %s), not %s (codec %s)",
			ErrRegistryMismatch, rec.ID, rec.Function.Name, rec.Function.Result, resCodec, want, c.name)
	}
	return c.dec, nil
}

func cutCodec(s string) (string, string, bool) {
	for i := range len(s) {
		if s[i] == '/' {
			return s[:i], s[i+1:], true
		}
	}
	return s, s, false
}

// attachRecord reads a job's record; for a job of an SSH host, it also
// reconnects to the machines that keep it, and checks that the job is
// still there.
func attachRecord(ctx context.Context, id string, kind JobKind) (*journal.Store, journal.Record, *remoteJob, error) {
	st := defaultStore()
	rec, err := st.Get(ctx, id)
	if err != nil {
		return nil, rec, nil, notFound(err, id)
	}
	if rec.Kind != kind {
		hint := map[JobKind]string{JobFunction: "Attach", JobCommand: "AttachCommand", JobMap: "AttachMap"}[rec.Kind]
		return nil, rec, nil, fmt.Errorf("meadowrun: job %s is a %s job, not a %s job; use %s", id, rec.Kind, kind, hint)
	}
	if rec.Machine == "" {
		return st, rec, nil, nil
	}
	rj, err := openRemote(ctx, st, rec)
	if err != nil {
		return nil, rec, nil, err
	}
	if err := rj.check(ctx); err != nil {
		return nil, rec, nil, err
	}
	return st, rec, rj, nil
}

// Attach returns the handle of a durable function job from its id, in any
// process. R must be the function's result type, or []byte for the result
// as encoded, or json.RawMessage for a JSON-encoded result undecoded.
func Attach[R any](ctx context.Context, id string) (*Detached[R], error) {
	st, rec, rj, err := attachRecord(ctx, id, JobFunction)
	if err != nil {
		return nil, err
	}
	dec, err := decoderFor[R](rec)
	if err != nil {
		return nil, err
	}
	return &Detached[R]{id: id, st: st, remote: rj, take: functionTaker(rec.Function.Name, dec)}, nil
}

// AttachCommand returns the handle of a durable command job from its id,
// in any process.
func AttachCommand(ctx context.Context, id string) (*Detached[*JobCompletion], error) {
	st, _, rj, err := attachRecord(ctx, id, JobCommand)
	if err != nil {
		return nil, err
	}
	return &Detached[*JobCompletion]{id: id, st: st, remote: rj, take: takeCompletion}, nil
}

// AttachMap returns the handle of a durable map from its id, in any
// process. R must be the mapped function's result type, or []byte or
// json.RawMessage as for Attach.
func AttachMap[R any](ctx context.Context, id string) (*DetachedMap[R], error) {
	st, rec, rj, err := attachRecord(ctx, id, JobMap)
	if err != nil {
		return nil, err
	}
	dec, err := decoderFor[R](rec)
	if err != nil {
		return nil, err
	}
	return &DetachedMap[R]{id: id, st: st, remote: rj, dec: dec, fn: rec.Function.Name}, nil
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

// followResults yields a job's results from the journal, those already
// recorded first, until the job ends or ctx does, and returns the final
// record. A job whose process died ends with an error wrapping ErrJobLost.
func followResults(ctx context.Context, st *journal.Store, id string, yield func(journal.Record, journal.Result) bool) (journal.Record, error) {
	p := newPoller(st)
	var after uint64
	for {
		if p.changed() {
			res, last, rec, err := st.Results(ctx, id, after)
			if err != nil {
				return rec, notFound(err, id)
			}
			after = last
			for _, r := range res {
				if !yield(rec, r) {
					return rec, nil
				}
			}
			if rec.Final() {
				return rec, nil
			}
			if isLost(rec) {
				return rec, fmt.Errorf("%w: %s: %s", ErrJobLost, id, infoOf(rec).Error)
			}
		}
		if err := p.wait(ctx); err != nil {
			return journal.Record{}, err
		}
	}
}
