package coord

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/wire"
)

// task is one argument of a job and its current attempt.
type task struct {
	index   int
	payload []byte // encoded argument, kept until the task is final
	// attempt is the 1-based number of the task's current (or next)
	// start: it counts every time the task actually started.
	attempt int
	// free counts the starts that do not count against MaxAttempts: runs
	// cut short because the machine under them was lost.
	free int
	lane int // memory multiplier: attempt n of a memory retry runs in lane n
	// requeued counts the times the task went back to the queue without
	// losing an attempt: its machine was lost, or its worker died before
	// it started.
	requeued int
	// cost is what its attempts that ended with a result cost (cost.go).
	cost float64
}

// charged is the number of the current attempt as MaxAttempts counts it.
func (t *task) charged() int { return t.attempt - t.free }

// maxRequeued is how many times a task goes back to the queue without
// losing an attempt (its machine was lost while it ran, or its worker died
// before it started). Beyond it, the task is suspected of taking its
// machines or workers down and fails like a crash.
const maxRequeued = 3

// Outcome is a task's final result, before typed decoding.
type Outcome struct {
	// Index is the task's position in the job's arguments, Attempt the
	// 1-based number of the start that produced the outcome.
	Index, Attempt int
	// Payload is the encoded result on success.
	Payload []byte
	// Failure is the task's last failed attempt; nil on success or when
	// Err is set.
	Failure *Failure
	// Err is a job-level error that ended the task: the job was stopped
	// (cancelled, or a worker could not start).
	Err error
	// Worker and Machine say where the task ran.
	Worker, Machine string
	// Duration is how long the task ran on its worker.
	Duration time.Duration
	// PeakMemoryBytes is the peak memory seen for the attempt, 0 if unknown.
	PeakMemoryBytes int64
	// CostUSD is the task's share of the job's cost (cost.go).
	CostUSD float64
}

// Spec is everything the coordinator needs to run a job. The caller has
// validated it; the coordinator knows nothing of options or typed values.
type Spec struct {
	// Func is the function the tasks call; its Name is "" for commands.
	Func wire.Function
	// Command: each task is an encoded wire.Command run by the worker.
	Command bool
	// Resources returns a worker's resources with memory multiplied by
	// mult (1, or the attempt number when retrying with more memory).
	Resources func(mult int) driver.Resources
	// Worker is the template of the workers to start: deployment,
	// runtime, environment, files, ports, sidecars. Its Name and
	// Resources are set per worker.
	Worker driver.WorkerSpec
	// PoolKey identifies the deployment among the pool's warm workers;
	// the coordinator adds the resources, ports and sidecars.
	PoolKey string
	// Concurrency is how many workers the job uses at most (>= 1).
	Concurrency int
	// MaxAttempts is how often a task may start (>= 1).
	MaxAttempts int
	// RetryMemory: retry a task that ran out of (or close to) its memory
	// limit with more memory. Set it only when a limit was requested.
	RetryMemory bool
	// Pool lends the job its workers.
	Pool *Pool
	// Logs receives the job's output.
	Logs *Logs
	// TasksHint is the number of tasks when known, for buffer sizes; 0 if
	// not.
	TasksHint int
}

// Job is the coordinator of one job: the task table, dispatch to
// workers, retries, and the stream of final outcomes. The same code runs
// every host.
//
// Dispatch is event-driven: whatever changes the state (tasks queued, a
// result, a worker acquired or lost) calls pumpLocked, which decides under
// the lock which tasks go to which worker and which workers to borrow or
// return, and the caller carries those actions out after unlocking. There
// is no goroutine per worker, so a call on a warm worker costs two pipe
// writes and one channel receive.
type Job struct {
	spec       Spec
	ctx        context.Context
	cancel     context.CancelFunc
	stopWatch  func() bool
	out        chan []Outcome
	feederWait sync.Cond // on mu
	feed       feeder

	mu           sync.Mutex
	lanes        map[int]*lane
	held         map[*workerConn]int // tasks of this job sent or being sent to each worker
	feederDone   bool
	outstanding  int // fed and not final
	stopErr      error
	avgNanos     float64
	closed       bool
	stoppedEarly atomic.Bool
	cost         cost
}

// lane holds the tasks that run with one memory multiplier, and the workers
// borrowed for them.
type lane struct {
	mult     int
	queue    taskQueue
	conns    []*workerConn
	starting int // acquisitions in progress
	spec     driver.WorkerSpec
	key      string
}

// action is work pumpLocked decided on, done after unlocking.
type action struct {
	c       *workerConn
	batch   []*task
	release bool
}

// maxWindow bounds how many tasks a job holds in memory at once, so that an
// iterator of a million arguments is never materialised.
const maxWindow = 1 << 16

// maxBatchBytes bounds the argument bytes of one batch sent to a worker.
const maxBatchBytes = 16 << 20

// feedBatch is how many arguments are encoded between two dispatches.
const feedBatch = 1024

// Start starts the coordinator of a job whose arguments come from next
// (payload, encoding error, ok); release, if not nil, is called once no
// more arguments will be read. The first arguments are queued and sent
// before Start returns; the rest are read by a goroutine.
func Start(ctx context.Context, spec Spec, next func() ([]byte, error, bool), release func()) *Job {
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	r := &Job{
		spec: spec, ctx: ctx, cancel: cancel,
		out:   make(chan []Outcome, min(64, max(1, spec.TasksHint))),
		lanes: map[int]*lane{},
		held:  map[*workerConn]int{},
	}
	r.feederWait.L = &r.mu
	// Only the parent's end needs watching (the job cancels its own
	// context itself, after stopWatch); a parent that never ends, as
	// most calls' context.Background, costs nothing.
	r.stopWatch = func() bool { return true }
	if parent.Done() != nil {
		r.stopWatch = context.AfterFunc(parent, func() { r.Stop(parent.Err()) })
	}
	// The feeder lives in the job: one allocation less per call.
	f := &r.feed
	*f = feeder{r: r, next: next, release: release}
	if f.step() {
		go func() {
			for f.step() {
			}
		}()
	}
	return r
}

// feeder reads arguments into tasks.
type feeder struct {
	r       *Job
	next    func() ([]byte, error, bool)
	release func()
	index   int
}

// step queues up to feedBatch arguments and reports whether more may come.
func (f *feeder) step() bool {
	r := f.r
	window := max(maxWindow, r.spec.Concurrency*256)
	r.mu.Lock()
	for r.outstanding >= window && r.stopErr == nil {
		r.feederWait.Wait()
	}
	stopped := r.stopErr != nil
	r.mu.Unlock()
	var batch []*task
	var bad []*task
	more := !stopped
	// Tasks are allocated together, a batch at a time: the first batch of
	// a single call holds two (the second read finds the end), later ones
	// grow to feedBatch.
	slab := make([]task, min(feedBatch, max(2, f.index)))
	batch = make([]*task, 0, len(slab))
	for more && len(batch)+len(bad) < len(slab) {
		payload, encErr, ok := f.next()
		if !ok {
			more = false
			break
		}
		t := &slab[len(batch)+len(bad)]
		*t = task{index: f.index, payload: payload, attempt: 1, lane: 1}
		f.index++
		if encErr != nil {
			t.payload = []byte(encErr.Error())
			bad = append(bad, t)
			continue
		}
		batch = append(batch, t)
	}
	if stopped {
		if _, _, ok := f.next(); ok {
			r.stoppedEarly.Store(true)
		}
	}
	r.mu.Lock()
	r.outstanding += len(batch) + len(bad)
	l := r.laneLocked(1)
	l.queue.pushBack(batch)
	if !more {
		r.feederDone = true
	}
	acts := r.pumpLocked()
	r.maybeCloseLocked()
	r.mu.Unlock()
	if !more && f.release != nil {
		f.release()
	}
	for _, t := range bad {
		msg := string(t.payload)
		r.finish(t, Outcome{Failure: &Failure{TaskID: t.index, Attempt: 1, Kind: KindEncoding, Type: "encoding",
			Message: "encoding the argument: " + msg, LogFile: r.spec.Logs.Existing()}})
	}
	r.do(acts)
	return more
}

// laneLocked returns the lane of memory multiplier mult, creating it.
func (r *Job) laneLocked(mult int) *lane {
	l := r.lanes[mult]
	if l == nil {
		spec := r.spec.Worker
		spec.Resources = r.spec.Resources(mult)
		key := laneKey(r.spec.PoolKey, spec.Resources)
		if len(spec.Ports)+len(spec.Sidecars) > 0 {
			// Workers with ports or sidecars are not interchangeable.
			key += fmt.Sprintf("|%v|%v", spec.Ports, spec.Sidecars)
		}
		l = &lane{mult: mult, spec: spec, key: key}
		r.lanes[mult] = l
	}
	return l
}

// laneKeys caches laneKey: a warm call would otherwise format its
// resources for every call.
var laneKeys struct {
	sync.Mutex
	m map[laneKeyOf]string
}

type laneKeyOf struct {
	pool, flags                   string
	cpu, gpus, evict              float64
	mem, gpuMem, ephemeral, flagN int64
}

// laneKey is the pool key of workers of deployment pool with resources res.
func laneKey(pool string, res driver.Resources) string {
	k := laneKeyOf{pool: pool, cpu: res.LogicalCPU, gpus: res.GPUs, evict: res.MaxEvictionRate,
		mem: res.MemoryBytes, gpuMem: res.GPUMemoryBytes, ephemeral: res.EphemeralBytes, flagN: int64(len(res.Flags))}
	if len(res.Flags) > 0 {
		k.flags = fmt.Sprintf("%q", res.Flags)
	}
	laneKeys.Lock()
	defer laneKeys.Unlock()
	if s, ok := laneKeys.m[k]; ok {
		return s
	}
	if laneKeys.m == nil || len(laneKeys.m) >= 1024 {
		laneKeys.m = map[laneKeyOf]string{}
	}
	s := pool + "|" + res.String()
	laneKeys.m[k] = s
	return s
}

// want is how many workers a lane may use: the job's concurrency in the
// first lane, one in each memory-retry lane.
func (r *Job) want(l *lane) int {
	if l.mult == 1 {
		return r.spec.Concurrency
	}
	return 1
}

// batchLimitLocked is how many tasks a worker may hold at once: enough to
// hide the round trip for short tasks, few enough that long tasks spread
// over all workers.
func (r *Job) batchLimitLocked() int {
	switch {
	case r.spec.Command:
		return 2
	case r.avgNanos == 0:
		return 1024 // not measured yet
	}
	// About batchWork of work per worker, from the measured task duration.
	return int(max(2, min(maxBatch, float64(batchWork)/r.avgNanos)))
}

// batchWork is how much work, by measured task duration, a worker is
// given at once; maxBatch bounds the tasks of one batch.
const (
	batchWork = 4 * time.Millisecond
	maxBatch  = 4096
)

// pumpLocked decides what to send where, which workers to borrow and which
// to give back. The returned actions must be done after unlocking.
func (r *Job) pumpLocked() []action {
	if r.stopErr != nil || r.closed {
		return nil
	}
	var acts []action
	for _, l := range r.lanes {
		acts = r.dispatchLocked(l, acts)
		// Borrow more workers while tasks wait.
		for l.queue.len() > 0 && len(l.conns)+l.starting < r.want(l) {
			if c := r.spec.Pool.tryIdle(r, l.key); c != nil {
				l.conns = append(l.conns, c)
				r.held[c] = 0
				acts = r.dispatchLocked(l, acts)
				continue
			}
			l.starting++
			go r.acquire(l)
		}
		// Give back workers the lane no longer needs, warm.
		if l.queue.len() == 0 && (l.mult > 1 || r.feederDone) {
			keep := l.conns[:0]
			for _, c := range l.conns {
				if r.held[c] == 0 {
					delete(r.held, c)
					acts = append(acts, action{c: c, release: true})
				} else {
					keep = append(keep, c)
				}
			}
			l.conns = keep
		}
	}
	return acts
}

// dispatchLocked gives queued tasks of l to its workers.
func (r *Job) dispatchLocked(l *lane, acts []action) []action {
	limit := r.batchLimitLocked()
	slots := max(len(l.conns)+l.starting, r.want(l))
	for _, c := range l.conns {
		q := &l.queue
		if q.len() == 0 {
			break
		}
		held := r.held[c]
		limit := limit
		if len(q.front().payload) > 1<<20 {
			// Big arguments: one running, one on its way.
			limit = 2
		}
		if limit > 2 && held > limit/2 {
			// Top a worker up in large batches, not one task per result.
			continue
		}
		n := min(q.len(), limit-held)
		// Leave work for the other workers of the lane.
		total := q.len()
		for _, oc := range l.conns {
			total += r.held[oc]
		}
		if share := (total+slots-1)/slots - held; n > share {
			n = share
		}
		// Large payloads go a few at a time: a worker should not have to
		// read half a gigabyte before it starts.
		if n <= 0 {
			continue
		}
		n = q.prefixUnder(n, maxBatchBytes)
		batch := q.popFront(n)
		r.held[c] = held + n
		acts = append(acts, action{c: c, batch: batch})
	}
	return acts
}

// acquire borrows a worker for l, starting one if needed, in its own
// goroutine since that may wait for capacity.
func (r *Job) acquire(l *lane) {
	c, err := r.spec.Pool.acquire(r.ctx, r, l.key, l.spec)
	r.mu.Lock()
	l.starting--
	if err != nil {
		r.maybeCloseLocked()
		r.mu.Unlock()
		if r.ctx.Err() == nil {
			r.fail(err)
		}
		return
	}
	if r.stopErr != nil || r.closed {
		r.maybeCloseLocked()
		r.mu.Unlock()
		r.spec.Pool.release(c)
		return
	}
	l.conns = append(l.conns, c)
	r.held[c] = 0
	acts := r.pumpLocked()
	r.maybeCloseLocked()
	r.mu.Unlock()
	r.do(acts)
}

// do carries out pumped actions.
func (r *Job) do(acts []action) {
	for _, a := range acts {
		if a.release {
			r.spec.Pool.release(a.c)
			continue
		}
		err := a.c.send(r, r.spec.Func, r.spec.Command, a.c.digest, a.batch)
		if err == nil || !errors.Is(err, errNotSent) {
			// Sent, or the stream broke while writing: the worker's reader
			// then reports every task in flight.
			continue
		}
		// The tasks never reached the worker: queue them again, or end
		// them if the job is stopping.
		r.mu.Lock()
		if stopErr := r.stopErr; stopErr != nil {
			delete(r.held, a.c)
			for _, l := range r.lanes {
				l.conns = slices.DeleteFunc(l.conns, func(x *workerConn) bool { return x == a.c })
			}
			r.mu.Unlock()
			r.spec.Pool.release(a.c)
			for _, t := range a.batch {
				r.finish(t, Outcome{Err: stopErr})
			}
			continue
		}
		l := r.laneLocked(a.batch[0].lane)
		l.queue.pushFront(a.batch)
		delete(r.held, a.c)
		l.conns = slices.DeleteFunc(l.conns, func(x *workerConn) bool { return x == a.c })
		var more []action
		if errors.Is(err, errWorkerGone) {
			more = r.pumpLocked()
		}
		r.mu.Unlock()
		if !errors.Is(err, errWorkerGone) {
			// The worker cannot run this function (unknown, other types).
			r.spec.Pool.release(a.c)
			r.fail(err)
			continue
		}
		r.do(more)
	}
}

// settled is a task whose attempt ended: its result, or its failure.
type settled struct {
	t   *task
	res wire.Result
	te  *Failure
	o   Outcome
}

// completed handles results received from c, all for this job.
func (r *Job) completed(c *workerConn, done []settled) {
	for i := range done {
		d := &done[i]
		t, res := d.t, d.res
		d.o = Outcome{Worker: c.w.Name(), Machine: c.w.Machine(), Duration: time.Duration(res.Nanos), PeakMemoryBytes: int64(res.PeakMemory)}
		t.cost += c.attemptCost(d.o.Duration)
		if res.Status == wire.StatusOK {
			d.o.Payload = res.Payload
			continue
		}
		f := failureOfResult(res)
		te := &Failure{TaskID: t.index, Attempt: t.attempt, Type: f.Type, Message: f.Message, Stack: f.Stack,
			PeakMemoryBytes: d.o.PeakMemoryBytes, LimitBytes: r.spec.Resources(t.lane).MemoryBytes,
			Worker: d.o.Worker, Machine: d.o.Machine, LogFile: r.spec.Logs.Existing()}
		switch res.Status {
		case wire.StatusError:
			te.Kind = KindError
		case wire.StatusPanic:
			te.Kind = KindPanic
		case wire.StatusBadInput, wire.StatusBadOutput:
			te.Kind = KindEncoding
		case wire.StatusUnknown:
			te.Kind = KindUnknownFunction
		default:
			te.Kind = KindCanceled
		}
		d.te = te
	}
	r.settle(c, done)
}

// workerDied handles the tasks that were in flight on c when its stream
// ended, in the order they were sent. If running, the first of them was
// running: it is the one the death is charged to, as a failed attempt.
// The others never started (the worker sends every result before it
// starts the next task) and go back to the front of the queue as they
// were. When the machine was lost (cut off, or its agent killed), even
// the running task is not to blame: it runs again elsewhere without
// losing an attempt, up to maxRequeued times.
func (r *Job) workerDied(c *workerConn, lost []*task, running bool, st driver.ExitStatus) {
	c.charge()
	r.mu.Lock()
	delete(r.held, c)
	for _, l := range r.lanes {
		l.conns = slices.DeleteFunc(l.conns, func(x *workerConn) bool { return x == c })
	}
	if err := r.stopErr; err != nil {
		// The worker may have answered all it held before its stream
		// ended (a killed task that saw its context cancelled): then it
		// was the last thing the job waited for.
		r.maybeCloseLocked()
		r.mu.Unlock()
		for _, t := range lost {
			r.finish(t, Outcome{Err: err})
		}
		return
	}
	var culprit *task
	waiting := lost
	if running {
		culprit, waiting = lost[0], lost[1:]
	}
	if st.Lost && (culprit == nil || culprit.requeued < maxRequeued) {
		if culprit != nil {
			culprit.attempt++
			culprit.free++
		}
		r.requeueFrontAndUnlock(lost, func(t *task) { t.requeued++ })
		if len(lost) > 0 {
			r.spec.Logs.note(fmt.Sprintf("%d tasks were on worker %s on %s when the machine was lost; they run again", len(lost), c.w.Name(), c.w.Machine()))
		}
		return
	}
	if culprit == nil {
		// The worker died between tasks: none of them is to blame, unless
		// workers keep dying before they start it.
		i := slices.IndexFunc(waiting, func(t *task) bool { return t.requeued >= maxRequeued })
		if i < 0 {
			r.requeueFrontAndUnlock(waiting, func(t *task) { t.requeued++ })
			return
		}
		culprit = waiting[i]
		waiting = slices.Delete(slices.Clone(waiting), i, i+1)
	}
	r.requeueFrontAndUnlock(waiting, func(*task) {})
	t := culprit
	te := &Failure{TaskID: t.index, Attempt: t.attempt, ExitCode: st.Code, Signal: st.Signal,
		PeakMemoryBytes: st.PeakMemoryBytes, LimitBytes: st.LimitBytes,
		Worker: c.w.Name(), Machine: c.w.Machine(), LogFile: r.spec.Logs.Existing()}
	switch {
	case st.OOMKilled:
		te.Kind = KindOOM
	case st.Lost:
		te.Kind = KindLost
	case st.Signal != "":
		te.Kind = KindCrash
	default:
		te.Kind = KindExit
	}
	te.Type = "worker-" + te.Kind.String()
	if errors.Is(st.Cause, driver.ErrSidecarExited) {
		te.Type = TypeSidecarExited
	}
	if running {
		te.Message = fmt.Sprintf("worker %s on %s ended while running the task: %s", c.w.Name(), c.w.Machine(), describeExit(st))
	} else {
		te.Message = fmt.Sprintf("%d workers ended before they started the task, the last %s on %s: %s", t.requeued+1, c.w.Name(), c.w.Machine(), describeExit(st))
	}
	if len(st.Output) > 0 {
		te.Stack = tail(st.Output, 8<<10)
	}
	r.settle(nil, []settled{{t: t, te: te, o: Outcome{Worker: c.w.Name(), Machine: c.w.Machine(), PeakMemoryBytes: st.PeakMemoryBytes}}})
}

// requeueFrontAndUnlock puts ts, each marked, back at the front of their
// lanes in their order, unlocks r.mu (held by the caller) and dispatches.
func (r *Job) requeueFrontAndUnlock(ts []*task, mark func(*task)) {
	byLane := map[int][]*task{}
	var lanes []int
	for _, t := range ts {
		mark(t)
		if _, ok := byLane[t.lane]; !ok {
			lanes = append(lanes, t.lane)
		}
		byLane[t.lane] = append(byLane[t.lane], t)
	}
	for _, mult := range lanes {
		r.laneLocked(mult).queue.pushFront(byLane[mult])
	}
	acts := r.pumpLocked()
	r.maybeCloseLocked()
	r.mu.Unlock()
	r.do(acts)
}

// settle records the end of attempts (on c, nil when c died): a task is
// retried when attempts remain and retrying can help, otherwise its outcome
// is final. Workers the job no longer needs go back to the pool before the
// outcomes are delivered, so that the caller's next call finds them idle.
func (r *Job) settle(c *workerConn, done []settled) {
	var retried []settled
	// Final outcomes are kept in done's own array: each is written at or
	// before the index it is read from.
	final := done[:0]
	r.mu.Lock()
	if c != nil {
		if n, ok := r.held[c]; ok {
			r.held[c] = n - len(done)
		}
	}
	for _, d := range done {
		t, te := d.t, d.te
		if c != nil {
			const alpha = 0.1
			if r.avgNanos == 0 {
				r.avgNanos = float64(d.o.Duration)
			} else {
				r.avgNanos = (1-alpha)*r.avgNanos + alpha*float64(d.o.Duration)
			}
		}
		if te == nil || r.stopErr != nil || !te.Kind.Retryable() || t.charged() >= r.spec.MaxAttempts {
			switch {
			case te != nil && r.stopErr != nil:
				// Stopping the job cancelled the attempt (its failure
				// raced the kill): the job's reason is the task's.
				d.o.Err = r.stopErr
			case te != nil:
				d.o.Failure = te
			}
			final = append(final, d)
			continue
		}
		t.attempt++
		if r.spec.RetryMemory && te.LimitBytes > 0 &&
			(te.Kind == KindOOM || float64(te.PeakMemoryBytes) >= 0.95*float64(te.LimitBytes)) {
			// Attempt n gets n times the requested memory, as far as the
			// host can ever offer it.
			if n, err := r.spec.Pool.drv.Fit(r.ctx, r.spec.Resources(t.charged())); err == nil && n > 0 {
				t.lane = t.charged()
			}
		}
		l := r.laneLocked(t.lane)
		l.queue.pushBack([]*task{t})
		retried = append(retried, d)
	}
	acts := r.pumpLocked()
	r.mu.Unlock()
	// Noted before the retries are sent: a retry that fails at once must
	// find the job's log (TaskError.LogFile) holding this note.
	for _, d := range retried {
		r.spec.Logs.note(fmt.Sprintf("task %d attempt %d failed (%s), retrying", d.t.index, d.t.attempt-1, d.te.Kind))
	}
	r.do(acts)
	if len(final) > 0 {
		r.finishAll(final)
	}
}

// finish records t's final outcome.
func (r *Job) finish(t *task, o Outcome) { r.finishAll([]settled{{t: t, o: o}}) }

// finishAll records final outcomes.
func (r *Job) finishAll(ds []settled) {
	outs := make([]Outcome, len(ds))
	for i, d := range ds {
		outs[i] = d.o
		outs[i].Index, outs[i].Attempt, outs[i].CostUSD = d.t.index, d.t.attempt, d.t.cost
		d.t.payload = nil
	}
	r.out <- outs
	r.mu.Lock()
	r.outstanding -= len(ds)
	r.feederWait.Broadcast()
	acts := r.pumpLocked()
	r.maybeCloseLocked()
	r.mu.Unlock()
	r.do(acts)
}

// maybeCloseLocked ends the stream of outcomes once every task is final
// and every worker of the job has been returned to the pool.
func (r *Job) maybeCloseLocked() {
	if r.closed || !r.feederDone || r.outstanding > 0 {
		return
	}
	for _, l := range r.lanes {
		if l.starting > 0 || len(l.conns) > 0 {
			return
		}
	}
	r.closed = true
	close(r.out)
	r.stopWatch()
	r.cancel()
	r.spec.Logs.close()
}

// fail stops the job because of an error that affects every task (a
// worker that cannot start, a registry mismatch).
func (r *Job) fail(err error) { r.Stop(err) }

// Stop ends the job: queued tasks are finalised with err, workers holding
// its tasks are killed (those tasks are finalised as their streams end),
// idle ones go back to the pool, and no more arguments are read. Stopping
// a job that already stopped or finished does nothing.
func (r *Job) Stop(err error) {
	r.mu.Lock()
	if r.stopErr != nil || r.closed {
		r.mu.Unlock()
		return
	}
	r.stopErr = err
	var queued []*task
	var kill, release []*workerConn
	for _, l := range r.lanes {
		queued = append(queued, l.queue.drain()...)
		for _, c := range l.conns {
			if r.held[c] > 0 {
				kill = append(kill, c)
			} else {
				release = append(release, c)
			}
		}
		// Workers being killed stay counted until their tasks are final.
		l.conns = slices.DeleteFunc(l.conns, func(c *workerConn) bool { return r.held[c] == 0 })
	}
	for _, c := range release {
		delete(r.held, c)
	}
	r.feederWait.Broadcast()
	r.maybeCloseLocked()
	r.mu.Unlock()
	for _, c := range release {
		r.spec.Pool.release(c)
	}
	for _, c := range kill {
		c.w.Kill()
	}
	for _, t := range queued {
		r.finish(t, Outcome{Err: err})
	}
	r.cancel()
}

// Outcomes yields the final outcomes, one per task that was read, in the
// order they became final. It ends once every task is final and every
// worker of the job is back in the pool. Outcomes arrive in batches (the
// results of one frame); a loop that stops early leaves the rest of its
// batch unread, and a later loop goes on with the next batch.
func (r *Job) Outcomes() iter.Seq[Outcome] {
	return func(yield func(Outcome) bool) {
		for batch := range r.out {
			for _, o := range batch {
				if !yield(o) {
					return
				}
			}
		}
	}
}

// StopError is the error the job was stopped with, nil if it was not.
func (r *Job) StopError() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stopErr
}

// StoppedEarly reports whether the job stopped before every argument
// became a task.
func (r *Job) StoppedEarly() bool { return r.stoppedEarly.Load() }
