package meadowrun

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"iter"
	"slices"
	"sync"

	"github.com/meadowrun-go/meadowrun/internal/coord"
)

// MapJob is a map started with StartMap: the handle of fire-and-forget
// work in this process.
type MapJob[R any] struct {
	run   *coord.Job
	id    string
	logs  *coord.Logs
	dec   func(coord.Outcome) TaskResult[R]
	total int // -1: unknown (iterator)
	mu    sync.Mutex
	taken bool
}

// ID identifies the job.
func (m *MapJob[R]) ID() string { return m.id }

// LogFile is where the job's output is kept.
func (m *MapJob[R]) LogFile() string { return m.logs.Path() }

// Cancel stops the map: workers running its tasks are killed.
func (m *MapJob[R]) Cancel() {
	m.run.Stop(fmt.Errorf("meadowrun: job %s cancelled: %w", m.ID(), context.Canceled))
}

// AsCompleted yields each task's final result as it completes. It can be
// ranged over once. Breaking out of the loop cancels the rest of the map.
// If the map stops before every argument became a task (cancellation, or
// an error that affects every task), a last TaskResult with TaskID -1
// carries the reason.
func (m *MapJob[R]) AsCompleted() iter.Seq[TaskResult[R]] {
	return func(yield func(TaskResult[R]) bool) {
		m.mu.Lock()
		taken := m.taken
		m.taken = true
		m.mu.Unlock()
		if taken {
			yield(TaskResult[R]{TaskID: -1, Err: errors.New("meadowrun: the results of a map can be iterated only once")})
			return
		}
		for o := range m.run.Outcomes() {
			if !yield(m.dec(o)) {
				m.Cancel()
				go func() {
					for range m.run.Outcomes() {
					}
				}()
				return
			}
		}
		if m.run.StoppedEarly() {
			yield(TaskResult[R]{TaskID: -1, Err: m.run.StopError()})
		}
	}
}

// Wait collects every result in argument order. See RunMap.
func (m *MapJob[R]) Wait(ctx context.Context) ([]R, error) {
	type res struct {
		v   []R
		err error
	}
	done := make(chan res, 1)
	go func() {
		v, err := m.collect()
		done <- res{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (m *MapJob[R]) collect() ([]R, error) { return collectResults(m.AsCompleted(), m.total) }

// collectResults gathers a map's results in argument order (total: the
// number of tasks, or -1 when unknown). Failed tasks are reported together
// in a *MapError; job-level errors (TaskID -1, or an error shared by every
// task) once each.
func collectResults[R any](results iter.Seq[TaskResult[R]], total int) ([]R, error) {
	var out []R
	if total >= 0 {
		out = make([]R, total)
	}
	var failed []*TaskError
	var errs []error
	n := 0
	for r := range results {
		if r.TaskID >= 0 {
			n++
			for r.TaskID >= len(out) {
				var zero R
				out = append(out, zero)
			}
			if r.Err == nil {
				out[r.TaskID] = r.Value
				continue
			}
		}
		var te *TaskError
		if r.TaskID >= 0 && errors.As(r.Err, &te) {
			failed = append(failed, te)
		} else if !slices.ContainsFunc(errs, func(e error) bool { return e.Error() == r.Err.Error() }) {
			errs = append(errs, r.Err)
		}
	}
	slices.SortFunc(failed, func(a, b *TaskError) int { return cmp.Compare(a.TaskID, b.TaskID) })
	if len(failed) > 0 {
		errs = append(errs, &MapError{Failed: failed, Total: max(total, n)})
	}
	return out, errors.Join(errs...)
}

// StartMap starts a map of f over args and returns at once with a handle
// (the reference's wait_for_result=False). The job is not tied to ctx,
// which only bounds the start; use MapJob.Cancel to stop it.
func StartMap[A, R any](ctx context.Context, f Func[A, R], args []A, host *Host, opts *MapOptions) (*MapJob[R], error) {
	return startMap(ctx, context.WithoutCancel(ctx), f, nil, args, len(args), host, opts)
}

// RunMap runs f on every argument, in parallel, and returns the results in
// argument order. When tasks still fail after all their attempts, the
// results of the others are returned together with a *MapError listing
// every failed task (index, attempt, error, log file). Cancelling ctx kills
// the map's workers and returns the results received so far with an error
// wrapping ctx's.
func RunMap[A, R any](ctx context.Context, f Func[A, R], args []A, host *Host, opts *MapOptions) ([]R, error) {
	if len(args) == 0 {
		if opts == nil {
			opts = &MapOptions{}
		}
		if err := opts.validate(); err != nil {
			return nil, err
		}
		return []R{}, nil
	}
	m, err := startMap(ctx, ctx, f, nil, args, len(args), host, opts)
	if err != nil {
		return nil, err
	}
	out, err := m.collect()
	if ctx.Err() != nil {
		err = causedBy(fmt.Errorf("meadowrun: map cancelled: %w", ctx.Err()), err, ctx.Err())
	}
	return out, err
}

// causedBy puts cause ahead of the errors joined in err, leaving out those
// that only repeat plain, the bare error cause already wraps.
func causedBy(cause, err, plain error) error {
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	keep := []error{cause}
	for _, e := range errs {
		if e != nil && e.Error() != plain.Error() {
			keep = append(keep, e)
		}
	}
	return errors.Join(keep...)
}

// RunMapAsCompleted runs f on every argument and yields each task's final
// result as it completes, with its task id and attempt. Breaking out of the
// loop cancels the rest of the map.
func RunMapAsCompleted[A, R any](ctx context.Context, f Func[A, R], args []A, host *Host, opts *MapOptions) iter.Seq[TaskResult[R]] {
	return RunMapSeq(ctx, f, slices.Values(args), host, opts)
}

// RunMapSeq is RunMapAsCompleted over an iterator of arguments: arguments
// are read as workers need them, so a map of millions of tasks runs in
// bounded memory.
func RunMapSeq[A, R any](ctx context.Context, f Func[A, R], args iter.Seq[A], host *Host, opts *MapOptions) iter.Seq[TaskResult[R]] {
	return func(yield func(TaskResult[R]) bool) {
		m, err := startMap(ctx, ctx, f, args, nil, -1, host, opts)
		if err != nil {
			yield(TaskResult[R]{TaskID: -1, Err: err})
			return
		}
		for r := range m.AsCompleted() {
			if !yield(r) {
				return
			}
		}
	}
}

// startMap starts a map over args, or, when args is nil, over list (read
// by index).
func startMap[A, R any](ctx, runCtx context.Context, f Func[A, R], args iter.Seq[A], list []A, n int, host *Host, opts *MapOptions) (*MapJob[R], error) {
	if f.name == "" {
		return nil, errors.New("meadowrun: RunMap: the function has no name (use Register or Named)")
	}
	if f.err != nil {
		return nil, fmt.Errorf("meadowrun: %s: %w", f.name, f.err)
	}
	if opts == nil {
		opts = &MapOptions{}
	}
	if err := opts.validate(); err != nil {
		return nil, err
	}
	p, err := prepare(ctx, host, &opts.Options)
	if err != nil {
		return nil, err
	}
	spec := p.spec(&opts.Options, f.desc, false)
	spec.MaxAttempts = max(1, opts.MaxAttempts)
	spec.RetryMemory = opts.RetryWithMoreMemory && opts.resources().MemoryGB > 0
	spec.TasksHint = n
	if n < 0 {
		spec.TasksHint = 1024
	}
	switch {
	case opts.Concurrency > 0:
		spec.Concurrency = opts.Concurrency
	case n >= 0:
		spec.Concurrency = n/2 + 1
	default:
		spec.Concurrency = p.fits
	}
	spec.Concurrency = max(1, min(spec.Concurrency, p.fits))
	if n >= 0 {
		spec.Concurrency = min(spec.Concurrency, max(n, 1))
	}
	var next func() (A, bool)
	var stop func()
	if args != nil {
		next, stop = pullBatched(args)
	} else {
		i := 0
		next = func() (A, bool) {
			if i == len(list) {
				var zero A
				return zero, false
			}
			i++
			return list[i-1], true
		}
	}
	var slab []byte
	pull := func() ([]byte, error, bool) {
		a, ok := next()
		if !ok {
			return nil, nil, false
		}
		if app := f.argCodec.app; app != nil {
			// Small encodings share a slab: one allocation per few
			// hundred arguments instead of one each.
			if cap(slab)-len(slab) < 32 {
				slab = make([]byte, 0, 4096)
			}
			start := len(slab)
			slab = app(slab, a)
			return slab[start:len(slab):len(slab)], nil, true
		}
		b, err := f.argCodec.enc(a)
		return b, err, true
	}
	run := coord.Start(runCtx, spec.Spec, pull, stop)
	dec := func(o coord.Outcome) TaskResult[R] {
		r := TaskResult[R]{TaskID: o.Index, Attempt: o.Attempt, Err: outcomeErr(o), Worker: o.Worker, Machine: o.Machine,
			LogFile: spec.Logs.Existing(), Duration: o.Duration, PeakMemoryBytes: o.PeakMemoryBytes, CostUSD: o.CostUSD}
		if r.Err == nil {
			v, err := f.resCodec.dec(o.Payload)
			if err != nil {
				r.Err = &TaskError{TaskID: o.Index, Attempt: o.Attempt, Kind: KindEncoding, Type: fmt.Sprintf("%T", err),
					Message: fmt.Sprintf("decoding the result of %s: %v", f.name, err), Worker: o.Worker, Machine: o.Machine, LogFile: spec.Logs.Existing()}
			} else {
				r.Value = v
			}
		}
		return r
	}
	return &MapJob[R]{run: run, id: spec.id, logs: spec.Logs, dec: dec, total: n}, nil
}
