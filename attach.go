package meadowrun

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"reflect"
	"time"

	"github.com/meadowrun-go/meadowrun/internal/durable"
	"github.com/meadowrun-go/meadowrun/internal/journal"
)

// Detached is the handle of a durable function or command job: another
// process gets the same handle from Attach or AttachCommand and the job's
// id.
type Detached[T any] struct {
	job *durable.Job
	// local, for a job this process runs, receives its outcomes directly.
	local *localJob
	take  func(journal.Record, journal.Result) (T, error)
}

// ID identifies the job in every process.
func (d *Detached[T]) ID() string { return d.job.ID() }

// Info returns the job's description from the journal.
func (d *Detached[T]) Info(ctx context.Context) (JobInfo, error) {
	return jobInfo(ctx, d.job)
}

// jobInfo describes job h.
func jobInfo(ctx context.Context, h *durable.Job) (JobInfo, error) {
	in, err := h.Info(ctx)
	if err != nil {
		return JobInfo{}, err
	}
	return infoFrom(in), nil
}

// Cancel stops the job (see CancelJob).
func (d *Detached[T]) Cancel(ctx context.Context) error {
	return cancelJob(ctx, d.job, d.local)
}

// cancelJob cancels job h, which this process runs when local is set.
func cancelJob(ctx context.Context, h *durable.Job, local *localJob) error {
	if local != nil {
		local.runner.Stop()
	}
	return h.Cancel(ctx)
}

// Wait waits until the job has finished and returns its result, read
// from the journal (or, for an in-process job, as it arrives). If ctx
// ends first, Wait returns ctx's error and the job goes on. A finished
// job's result can be read any number of times, from any process.
func (d *Detached[T]) Wait(ctx context.Context) (T, error) {
	var zero T
	if d.local != nil && d.local.runner.Local().Take() {
		var got *journal.Result
		if err := d.local.runner.Local().All(ctx, func(r journal.Result) bool {
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
		v, err := d.take(d.local.runner.Record(), *got)
		if d.local.err != nil {
			err = errors.Join(err, d.local.err)
		}
		return v, err
	}
	var got *journal.Result
	var rec journal.Record
	rec, err := d.job.Follow(ctx, func(r journal.Record, res journal.Result) bool {
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
	return zero, fmt.Errorf("meadowrun: job %s ended (%s) without a result", d.ID(), rec.State)
}

// DetachedMap is the handle of a durable map: another process gets the
// same handle from AttachMap and the job's id.
type DetachedMap[R any] struct {
	job *durable.Job
	// local, for a map this process runs, receives its outcomes directly.
	local *localJob
	dec   func([]byte) (R, error)
	fn    string
}

// ID identifies the job in every process.
func (m *DetachedMap[R]) ID() string { return m.job.ID() }

// Info returns the job's description from the journal.
func (m *DetachedMap[R]) Info(ctx context.Context) (JobInfo, error) {
	return jobInfo(ctx, m.job)
}

// Cancel stops the map (see CancelJob).
func (m *DetachedMap[R]) Cancel(ctx context.Context) error {
	return cancelJob(ctx, m.job, m.local)
}

func (m *DetachedMap[R]) result(rec journal.Record, r journal.Result) TaskResult[R] {
	tr := TaskResult[R]{TaskID: r.Task, Attempt: r.Attempt, Err: errorOfFailure(r.Err, r, rec.LogFile), Worker: r.Worker,
		Machine: r.Machine, LogFile: rec.LogFile, Duration: time.Duration(r.Nanos), PeakMemoryBytes: r.Peak, CostUSD: r.Cost}
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
		if m.local != nil && m.local.runner.Local().Take() {
			stopped := false
			err := m.local.runner.Local().All(ctx, func(r journal.Result) bool {
				if !yield(m.result(m.local.runner.Record(), r)) {
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
		_, err := m.job.Follow(ctx, func(rec journal.Record, r journal.Result) bool {
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

// attachRecord reads a job's record and returns its handle; for a job of
// a host whose machines keep it, it also reconnects to them, and checks
// that the job is still there.
func attachRecord(ctx context.Context, id string, kind JobKind) (journal.Record, *durable.Job, error) {
	js := defaultJobs()
	rec, err := js.Store.Get(ctx, id)
	if err != nil {
		return rec, nil, notFound(err, id)
	}
	if rec.Kind != kind {
		hint := map[JobKind]string{JobFunction: "Attach", JobCommand: "AttachCommand", JobMap: "AttachMap"}[rec.Kind]
		return rec, nil, fmt.Errorf("meadowrun: job %s is a %s job, not a %s job; use %s", id, rec.Kind, kind, hint)
	}
	h, err := js.Open(ctx, rec)
	if err != nil {
		return rec, nil, err
	}
	if err := h.Check(ctx); err != nil {
		return rec, nil, err
	}
	return rec, h, nil
}

// Attach returns the handle of a durable function job from its id, in any
// process. R must be the function's result type, or []byte for the result
// as encoded, or json.RawMessage for a JSON-encoded result undecoded.
func Attach[R any](ctx context.Context, id string) (*Detached[R], error) {
	rec, h, err := attachRecord(ctx, id, JobFunction)
	if err != nil {
		return nil, err
	}
	dec, err := decoderFor[R](rec)
	if err != nil {
		return nil, err
	}
	return &Detached[R]{job: h, take: functionTaker(rec.Function.Name, dec)}, nil
}

// AttachCommand returns the handle of a durable command job from its id,
// in any process.
func AttachCommand(ctx context.Context, id string) (*Detached[*JobCompletion], error) {
	_, h, err := attachRecord(ctx, id, JobCommand)
	if err != nil {
		return nil, err
	}
	return &Detached[*JobCompletion]{job: h, take: takeCompletion}, nil
}

// AttachMap returns the handle of a durable map from its id, in any
// process. R must be the mapped function's result type, or []byte or
// json.RawMessage as for Attach.
func AttachMap[R any](ctx context.Context, id string) (*DetachedMap[R], error) {
	rec, h, err := attachRecord(ctx, id, JobMap)
	if err != nil {
		return nil, err
	}
	dec, err := decoderFor[R](rec)
	if err != nil {
		return nil, err
	}
	return &DetachedMap[R]{job: h, dec: dec, fn: rec.Function.Name}, nil
}
