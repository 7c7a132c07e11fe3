package meadowrun

import (
	"context"
	"fmt"
	"os"
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
	attempt int    // 1-based
	lane    int    // memory multiplier: attempt n of a memory retry runs in lane n
	key     uint64 // key on conn while in flight
	conn    *workerConn
	isolate bool // run alone on its worker: it was in flight when a worker died
}

// outcome is a task's final result, before typed decoding.
type outcome struct {
	index   int
	attempt int
	ok      []byte // payload on success
	err     error  // *TaskError, or a job-level error
	worker  string
	machine string
	nanos   uint64
	peak    int64
}

// jobSpec is everything the coordinator needs to run a job.
type jobSpec struct {
	id          string
	fn          wire.Function // Name "" for commands
	command     bool
	res         Resources
	deploy      Deployment
	concurrency int
	maxAttempts int
	retryMem    bool
	pool        *pool
	drv         driver.Host
	logs        *logSink
}

// jobRun is the coordinator of one job: the task table, dispatch to
// workers, retries, and the stream of final outcomes. The same code runs
// every host.
type jobRun struct {
	spec   jobSpec
	ctx    context.Context
	cancel context.CancelFunc
	out    chan outcome

	mu           sync.Mutex
	cond         *sync.Cond
	queues       map[int][]*task
	runners      map[int]int
	conns        map[*workerConn]bool
	fid          map[*workerConn]uint64
	feederDone   bool
	outstanding  int // fed and not final
	total        int // fed so far
	stopErr      error
	avgNanos     float64
	closed       bool
	stoppedEarly atomic.Bool
}

// maxWindow bounds how many tasks a job holds in memory at once, so that an
// iterator of a million arguments is never materialised.
const maxWindow = 1 << 16

// startJob starts the coordinator of a job whose arguments come from next
// (payload, encoding error, ok); release, if not nil, is called once no
// more arguments will be read.
func startJob(ctx context.Context, spec jobSpec, next func() ([]byte, error, bool), release func()) *jobRun {
	ctx, cancel := context.WithCancel(ctx)
	r := &jobRun{
		spec: spec, ctx: ctx, cancel: cancel,
		out:     make(chan outcome, 1024),
		queues:  map[int][]*task{},
		runners: map[int]int{},
		conns:   map[*workerConn]bool{},
		fid:     map[*workerConn]uint64{},
	}
	r.cond = sync.NewCond(&r.mu)
	go func() {
		r.feed(next)
		if release != nil {
			release()
		}
	}()
	go func() {
		<-ctx.Done()
		r.stop(ctx.Err())
	}()
	return r
}

// feed pulls arguments and queues them as tasks, at most maxWindow
// outstanding at a time.
func (r *jobRun) feed(next func() ([]byte, error, bool)) {
	window := max(maxWindow, r.spec.concurrency*256)
	index := 0
	for {
		r.mu.Lock()
		for r.outstanding >= window && r.stopErr == nil {
			r.cond.Wait()
		}
		stopped := r.stopErr != nil
		r.mu.Unlock()
		if stopped {
			break
		}
		payload, encErr, ok := next()
		if !ok {
			break
		}
		t := &task{index: index, payload: payload, attempt: 1, lane: 1}
		index++
		r.mu.Lock()
		r.outstanding++
		r.total++
		if encErr != nil {
			r.mu.Unlock()
			r.finish(t, outcome{err: &TaskError{TaskID: t.index, Attempt: 1, Kind: KindEncoding, Type: fmt.Sprintf("%T", encErr),
				Message: fmt.Sprintf("encoding the argument: %v", encErr), LogFile: r.spec.logs.path}})
			continue
		}
		r.queues[1] = append(r.queues[1], t)
		r.ensureRunnersLocked(1)
		r.cond.Broadcast()
		r.mu.Unlock()
	}
	r.mu.Lock()
	r.feederDone = true
	stopped := r.stopErr != nil
	r.mu.Unlock()
	if stopped {
		if _, _, more := next(); more {
			r.stoppedEarly.Store(true)
		}
	}
	r.mu.Lock()
	r.cond.Broadcast()
	r.maybeCloseLocked()
	r.mu.Unlock()
}

// ensureRunnersLocked starts workers for lane while it has queued tasks:
// up to the job's concurrency in the first lane, one in each memory-retry
// lane.
func (r *jobRun) ensureRunnersLocked(lane int) {
	want := 1
	if lane == 1 {
		want = r.spec.concurrency
	}
	for r.runners[lane] < want && r.runners[lane] < len(r.queues[lane]) && r.stopErr == nil {
		r.runners[lane]++
		go r.runner(lane)
	}
}

// laneIdleLocked reports whether a runner of lane with connection c has
// nothing left to do.
func (r *jobRun) laneIdleLocked(lane int, c *workerConn) bool {
	if len(r.queues[lane]) > 0 {
		return false
	}
	if lane == 1 && !r.feederDone {
		return false
	}
	return c == nil || c.isDead() || c.inFlight() == 0
}

// batchLimit is how many tasks a worker may hold at once: enough to hide
// the round trip for short tasks, few enough that long tasks spread over
// all workers.
func (r *jobRun) batchLimitLocked() int {
	if r.avgNanos > float64(time.Millisecond) || r.spec.command {
		return 2
	}
	return 256
}

// runner drives one worker slot of a lane: it borrows a worker, keeps it
// fed, replaces it when it dies, and returns it warm when the lane is done.
func (r *jobRun) runner(lane int) {
	var c *workerConn
	defer func() {
		if c != nil {
			r.mu.Lock()
			delete(r.conns, c)
			r.mu.Unlock()
			r.spec.pool.release(c)
		}
		r.mu.Lock()
		r.runners[lane]--
		// Tasks may have been queued after this runner decided to stop.
		r.ensureRunnersLocked(lane)
		r.cond.Broadcast()
		r.maybeCloseLocked()
		r.mu.Unlock()
	}()
	spec := driver.WorkerSpec{Resources: r.spec.res.driverResources(lane), Env: r.spec.deploy.env}
	key := r.spec.deploy.key() + "|" + spec.Resources.String()
	for {
		r.mu.Lock()
		for r.stopErr == nil && len(r.queues[lane]) == 0 && !r.laneIdleLocked(lane, c) && (c == nil || !c.isDead()) {
			r.cond.Wait()
		}
		if r.stopErr != nil || r.laneIdleLocked(lane, c) {
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()

		if c == nil || c.isDead() {
			if c != nil {
				r.mu.Lock()
				delete(r.conns, c)
				r.mu.Unlock()
				c = nil
			}
			nc, fid, err := r.borrow(key, spec)
			if err != nil {
				if r.ctx.Err() == nil {
					r.fail(err)
				}
				return
			}
			c = nc
			r.mu.Lock()
			r.conns[c] = true
			r.fid[c] = fid
			stopped := r.stopErr != nil
			r.mu.Unlock()
			if stopped {
				return
			}
		}

		r.mu.Lock()
		limit := r.batchLimitLocked()
		for r.stopErr == nil && !c.isDead() && len(r.queues[lane]) > 0 && c.inFlight() >= limit {
			r.cond.Wait()
		}
		if r.stopErr != nil {
			r.mu.Unlock()
			return
		}
		q := r.queues[lane]
		n := min(len(q), limit-c.inFlight())
		// Leave work for the other workers of the lane.
		slots := r.runners[lane]
		if lane == 1 {
			slots = max(slots, r.spec.concurrency)
		}
		held := 0
		for oc := range r.conns {
			held += oc.inFlight()
		}
		if share := (len(q)+held+slots-1)/max(1, slots) - c.inFlight(); n > share {
			n = max(0, share)
		}
		// A task under suspicion runs alone.
		for i := 0; i < n; i++ {
			if q[i].isolate {
				if i == 0 && c.inFlight() == 0 {
					n = 1
				} else {
					n = i
				}
				break
			}
		}
		if !c.isDead() && n <= 0 && len(q) > 0 {
			// An isolated task waits for the worker to finish what it holds.
			r.cond.Wait()
		}
		if c.isDead() || n <= 0 {
			r.mu.Unlock()
			continue
		}
		batch := make([]*task, n)
		copy(batch, q[:n])
		r.queues[lane] = q[n:]
		fid := r.fid[c]
		r.mu.Unlock()
		// A failed send means the worker died: its reader reports the
		// tasks in flight, which go back to the queue.
		c.send(r, fid, batch)
	}
}

// borrow gets a worker from the pool and defines the job's function on it.
func (r *jobRun) borrow(key string, spec driver.WorkerSpec) (*workerConn, uint64, error) {
	c, err := r.spec.pool.acquire(r.ctx, r, key, spec)
	if err != nil {
		return nil, 0, err
	}
	if r.spec.command {
		return c, wire.FuncCommand, nil
	}
	fid, err := c.define(r.spec.fn, r.spec.pool.digest)
	if err != nil {
		r.spec.pool.release(c)
		return nil, 0, err
	}
	return c, fid, nil
}

// completed handles a result received for t.
func (r *jobRun) completed(c *workerConn, t *task, res wire.Result) {
	r.mu.Lock()
	const alpha = 0.1
	if r.avgNanos == 0 {
		r.avgNanos = float64(res.Nanos)
	} else {
		r.avgNanos = (1-alpha)*r.avgNanos + alpha*float64(res.Nanos)
	}
	r.cond.Broadcast()
	r.mu.Unlock()
	o := outcome{worker: c.w.Name(), machine: c.w.Machine(), nanos: res.Nanos, peak: int64(res.PeakMemory)}
	if res.Status == wire.StatusOK {
		o.ok = res.Payload
		r.finish(t, o)
		return
	}
	f := failureOfResult(res)
	te := &TaskError{TaskID: t.index, Attempt: t.attempt, Type: f.Type, Message: f.Message, Stack: f.Stack,
		PeakMemoryBytes: o.peak, LimitBytes: r.spec.res.driverResources(t.lane).MemoryBytes,
		Worker: o.worker, Machine: o.machine, LogFile: r.spec.logs.path}
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
	r.failed(t, te, o)
}

// workerDied handles a task that was in flight on a worker that ended.
// running says whether it was the task the worker was running; the others
// had not started and are queued again without losing an attempt.
func (r *jobRun) workerDied(c *workerConn, t *task, st driver.ExitStatus, running bool) {
	r.mu.Lock()
	if err := r.stopErr; err != nil {
		r.mu.Unlock()
		r.finish(t, outcome{err: err})
		return
	}
	if !running {
		t.isolate = true
		r.queues[t.lane] = append([]*task{t}, r.queues[t.lane]...)
		r.ensureRunnersLocked(t.lane)
		r.cond.Broadcast()
		r.mu.Unlock()
		return
	}
	r.cond.Broadcast()
	r.mu.Unlock()
	te := &TaskError{TaskID: t.index, Attempt: t.attempt, ExitCode: st.Code, Signal: st.Signal,
		PeakMemoryBytes: st.PeakMemoryBytes, LimitBytes: st.LimitBytes,
		Worker: c.w.Name(), Machine: c.w.Machine(), LogFile: r.spec.logs.path}
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
	te.Message = fmt.Sprintf("worker %s on %s ended while running the task: %s", c.w.Name(), c.w.Machine(), describeExit(st))
	if len(st.Output) > 0 {
		te.Stack = tail(st.Output, 8<<10)
	}
	r.failed(t, te, outcome{worker: c.w.Name(), machine: c.w.Machine(), peak: st.PeakMemoryBytes})
}

// failed retries t when attempts remain and retrying can help, or records
// the failure as final.
func (r *jobRun) failed(t *task, te *TaskError, o outcome) {
	r.mu.Lock()
	if r.stopErr == nil && te.Kind.Retryable() && t.attempt < r.spec.maxAttempts {
		t.attempt++
		if r.spec.retryMem && r.spec.res.MemoryGB > 0 && te.LimitBytes > 0 &&
			(te.Kind == KindOOM || float64(te.PeakMemoryBytes) >= 0.95*float64(te.LimitBytes)) {
			// Attempt n gets n times the requested memory, as far as the
			// host can ever offer it.
			if n, err := r.spec.drv.Fit(r.ctx, r.spec.res.driverResources(t.attempt)); err == nil && n > 0 {
				t.lane = t.attempt
			}
		}
		r.queues[t.lane] = append(r.queues[t.lane], t)
		r.ensureRunnersLocked(t.lane)
		r.cond.Broadcast()
		r.mu.Unlock()
		r.spec.logs.note(fmt.Sprintf("task %d attempt %d failed (%s), retrying", t.index, t.attempt-1, te.Kind))
		return
	}
	r.mu.Unlock()
	o.err = te
	r.finish(t, o)
}

// finish records t's final outcome.
func (r *jobRun) finish(t *task, o outcome) {
	o.index, o.attempt = t.index, t.attempt
	t.payload = nil
	r.out <- o
	r.mu.Lock()
	r.outstanding--
	r.cond.Broadcast()
	r.maybeCloseLocked()
	r.mu.Unlock()
}

// maybeCloseLocked ends the stream of outcomes once every task is final
// and every worker of the job has been returned to the pool, so that the
// next call finds them warm.
func (r *jobRun) maybeCloseLocked() {
	busy := 0
	for _, n := range r.runners {
		busy += n
	}
	if r.feederDone && r.outstanding == 0 && busy == 0 && !r.closed {
		r.closed = true
		close(r.out)
		r.cancel()
		r.spec.logs.close()
	}
}

// fail stops the job because of an error that affects every task (a
// worker that cannot start, a registry mismatch, a request that never fits).
func (r *jobRun) fail(err error) { r.stop(err) }

// stop ends the job: queued tasks are finalised with err, workers lent to
// the job are killed (their tasks in flight are finalised as their streams
// end), and no more arguments are read.
func (r *jobRun) stop(err error) {
	r.mu.Lock()
	if r.stopErr != nil || r.closed {
		r.mu.Unlock()
		return
	}
	r.stopErr = err
	var queued []*task
	for lane, q := range r.queues {
		queued = append(queued, q...)
		delete(r.queues, lane)
	}
	conns := make([]*workerConn, 0, len(r.conns))
	for c := range r.conns {
		conns = append(conns, c)
	}
	r.cond.Broadcast()
	r.mu.Unlock()
	for _, c := range conns {
		if c.inFlight() > 0 {
			c.w.Kill()
		}
	}
	for _, t := range queued {
		r.finish(t, outcome{err: err})
	}
	r.cancel()
}

// jobSeq numbers jobs within the process.
var jobSeq atomic.Uint64

func newJobID() string {
	return fmt.Sprintf("%s-%d-%d", time.Now().UTC().Format("20060102T150405"), os.Getpid(), jobSeq.Add(1))
}

func durationOf(nanos uint64) time.Duration { return time.Duration(nanos) }

func (r *jobRun) stopError() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stopErr
}
