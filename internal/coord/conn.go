package coord

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/wire"
)

// helloTimeout bounds how long a new worker may take to announce itself.
const helloTimeout = 30 * time.Second

// lostGrace is how long the coordinator waits for a worker's exit status
// after its stream ended, before calling it lost.
const lostGrace = 5 * time.Second

// inflight is a batch of tasks sent on a connection in one frame, those
// not yet answered: tasks[i] has key key+i. Bookkeeping per batch, not
// per task, is what keeps a map of short tasks cheap on the client.
type inflight struct {
	key   uint64
	run   *Job
	tasks []*task
}

// find returns the batch and position in it of the task with key, or -1.
func findKey(fs []inflight, key uint64) (int, int) {
	for bi := range fs {
		f := &fs[bi]
		if key >= f.key && key-f.key < uint64(len(f.tasks)) {
			return bi, int(key - f.key)
		}
	}
	return -1, -1
}

// workerConn is a connected, handshaken worker: the protocol stream, the
// functions defined on it, and the tasks in flight. It outlives jobs: the
// pool lends it to one job at a time.
type workerConn struct {
	w     driver.Worker
	key   string
	hello wire.Hello
	wr    *wire.Writer
	pool  *Pool
	// digest is the code identity the worker must report: its own binary's
	// when the driver ships a different one (a cross-compiled program),
	// else the pool's.
	digest string

	mu       sync.Mutex
	defined  map[wire.Function]uint64
	nextFunc uint64
	nextKey  uint64
	inflight []inflight // in the order sent, which is the order the worker answers
	// startedKey is the key the worker last announced it was about to
	// run (a Started frame, or the result log's running key).
	startedKey uint64
	run        *Job // the job the connection is lent to, nil when idle
	holding    bool // Hold was sent: results may wait in the worker's result log
	dead       bool
	oneJob     bool // serves the job it was started for only
	idleAt     time.Time
	lentAt     time.Time     // when lent to run (cost.go); zero once charged
	rate       float64       // USD an hour (driver.Priced)
	gone       chan struct{} // closed when the reader has finished
	// results and done are the reader's buffers, reused for every frame.
	results []wire.Result
	done    []settled
}

// connect waits for a new worker's Hello and starts reading its stream.
func connect(ctx context.Context, p *Pool, w driver.Worker, key string, rt driver.Runtime, run *Job) (*workerConn, error) {
	c := &workerConn{
		w: w, key: key, pool: p, wr: wire.NewWriter(w.Conn()), digest: p.digest,
		defined: map[wire.Function]uint64{}, gone: make(chan struct{}),
		run: run, // output the worker prints while it starts goes to this job
	}
	if d, ok := w.(interface{ ExpectedDigest() string }); ok && p.digest != "" {
		c.digest = d.ExpectedDigest()
	}
	rd := wire.NewReader(w.Conn())
	type first struct {
		h   wire.Hello
		err error
	}
	got := make(chan first, 1)
	go func() {
		typ, body, err := rd.Next()
		switch {
		case err != nil:
			got <- first{err: err}
		case typ != wire.TypeHello:
			got <- first{err: fmt.Errorf("%w: first message has type %#x, not hello", wire.ErrProtocol, typ)}
		default:
			h, err := wire.DecodeHello(body)
			got <- first{h: h, err: err}
		}
	}()
	fail := func(cause string) error {
		w.Kill()
		<-w.Done()
		w.Conn().Close()
		st := w.Exit()
		msg := fmt.Sprintf("%s: worker %s on %s %s", ErrWorkerStart, w.Name(), w.Machine(), cause)
		if st.Code >= 0 || st.Signal != "" || st.Lost || st.Cause != nil {
			msg += fmt.Sprintf(" (%s)", describeExit(st))
		}
		if len(st.Output) > 0 {
			msg += fmt.Sprintf("; its output ended with:\n%s", tail(st.Output, 2000))
		}
		msg += "\n" + startHint(rt)
		return fmt.Errorf("%w", errors.New(msg))
	}
	timer := time.NewTimer(helloTimeout)
	defer timer.Stop()
	select {
	case f := <-got:
		if f.err != nil {
			return nil, wrapStart(fail(fmt.Sprintf("did not announce itself: %v", f.err)))
		}
		c.hello = f.h
	case <-w.Done():
		return nil, wrapStart(fail("exited before announcing itself"))
	case <-timer.C:
		return nil, wrapStart(fail(fmt.Sprintf("did not announce itself within %s", helloTimeout)))
	case <-ctx.Done():
		w.Kill()
		return nil, ctx.Err()
	}
	if rl, ok := w.(driver.ResultLogger); ok && rl.HasResultLog() && c.hello.ResultLog {
		// The driver hands over the log when the worker dies: the worker
		// may hold its results instead of writing one frame per task.
		c.holding = true
		c.wr.WriteFrame(wire.TypeHold, nil)
	}
	go c.read(rd)
	return c, nil
}

// startHint says what most often keeps a worker of runtime rt from
// announcing itself.
func startHint(rt driver.Runtime) string {
	switch rt {
	case driver.RuntimePython:
		return "The worker is meadowrun's Python worker run by the deployment's interpreter: does that interpreter start, and is it Python 3?"
	}
	return "The worker is this program re-executed: does main (or TestMain) call meadowrun.Main() before anything else?"
}

func wrapStart(err error) error { return &startError{err} }

// startError marks errors of a worker that failed to start.
type startError struct{ err error }

func (e *startError) Error() string        { return e.err.Error() }
func (e *startError) Is(target error) bool { return target == ErrWorkerStart }

// defineLocked binds fn on the connection, checking the worker's registry
// first.
func (c *workerConn) defineLocked(fn wire.Function, expectDigest string) (uint64, error) {
	if id, ok := c.defined[fn]; ok {
		return id, nil
	}
	goWorker := c.hello.Language == "go"
	if goWorker && expectDigest != "" && c.hello.BinaryDigest != expectDigest {
		return 0, fmt.Errorf("%w: worker %s runs code %s but this program is %s: was the binary rebuilt while it ran?",
			ErrRegistryMismatch, c.w.Name(), c.hello.BinaryDigest, expectDigest)
	}
	var have *wire.Function
	for i := range c.hello.Functions {
		if c.hello.Functions[i].Name == fn.Name {
			have = &c.hello.Functions[i]
		}
	}
	define := wire.Define{Name: fn.Name}
	if have == nil && c.hello.Dynamic {
		// The worker resolves names itself and fails the tasks of one it
		// cannot with StatusUnknown; it learns the codec from the Define.
		if !dynamicCodec(fn.Codec) {
			return 0, fmt.Errorf("%w: worker %s (%s) takes and returns JSON, strings or bytes, the caller's %q has codec %s: use types encoded as JSON",
				ErrRegistryMismatch, c.w.Name(), c.hello.Language, fn.Name, fn.Codec)
		}
		have = &fn
		define.Codec = fn.Codec
	}
	if have == nil {
		hint := "register it with meadowrun.Register in a package the program imports"
		if !goWorker {
			hint = "is the name spelled as the worker lists it, and is its code in the deployment?"
		}
		return 0, fmt.Errorf("%w: %q is not registered in worker %s, which registers %s; %s",
			ErrUnknownFunction, fn.Name, c.w.Name(), registeredNames(c.hello.Functions), hint)
	}
	// Workers of other languages name no Go types: their functions take
	// and return the codec's values.
	if *have != fn && (goWorker || have.Codec != fn.Codec) {
		return 0, fmt.Errorf("%w: worker %s registers %q as func(%s) %s with codec %s, the caller expects func(%s) %s with codec %s",
			ErrRegistryMismatch, c.w.Name(), fn.Name, have.Arg, have.Result, have.Codec, fn.Arg, fn.Result, fn.Codec)
	}
	c.nextFunc++
	id := c.nextFunc
	define.ID = id
	c.wr.WriteFrame(wire.TypeDefine, wire.AppendDefine(nil, define))
	c.defined[fn] = id
	return id, nil
}

// dynamicCodec reports whether a dynamic worker can take a function of
// codec ("argument/result"): each side JSON, a string or bytes.
func dynamicCodec(codec string) bool {
	arg, res, ok := strings.Cut(codec, "/")
	known := func(c string) bool { return c == "json" || c == "string" || c == "bytes" }
	return ok && known(arg) && known(res)
}

// registeredNames lists a worker's functions for an error message: the
// first few by name, then how many more.
func registeredNames(fs []wire.Function) string {
	const shown = 5
	if len(fs) == 0 {
		return "no functions"
	}
	names := make([]string, 0, shown)
	for _, f := range fs[:min(len(fs), shown)] {
		names = append(names, f.Name)
	}
	s := strings.Join(names, ", ")
	if len(fs) > shown {
		s += fmt.Sprintf(" and %d more", len(fs)-shown)
	}
	return s
}

// send writes a batch of tasks of run to the worker, first defining the
// job's function on the connection (and checking the worker's registry)
// when it is new there. Errors wrapping errNotSent mean no task reached the
// worker; any other error means the stream broke, and the worker's reader
// reports the tasks in flight.
func (c *workerConn) send(run *Job, fn wire.Function, command bool, digest string, ts []*task) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		return errWorkerGone
	}
	fid := uint64(wire.FuncCommand)
	if !command {
		id, err := c.defineLocked(fn, digest)
		if err != nil {
			return notSent{err}
		}
		fid = id
	}
	b := wire.NewBatch(len(ts))
	c.inflight = append(c.inflight, inflight{key: c.nextKey + 1, run: run, tasks: ts})
	for _, t := range ts {
		c.nextKey++
		b.AddTask(wire.Task{Key: c.nextKey, Func: fid, Payload: t.payload})
	}
	// Frames are written under c.mu so that the wire order is the order
	// of c.inflight.
	if err := c.wr.WriteFrame(wire.TypeTasks, b.Parts()...); err != nil {
		return err
	}
	return c.wr.Flush()
}

// errNotSent marks send errors after which no task reached the worker.
var errNotSent = errors.New("meadowrun: tasks not sent")

// notSent is an error after which no task reached the worker: it wraps
// errNotSent without adding it to the message.
type notSent struct{ err error }

func (e notSent) Error() string   { return e.err.Error() }
func (e notSent) Unwrap() []error { return []error{e.err, errNotSent} }

var errWorkerGone = fmt.Errorf("%w: worker gone", errNotSent)

// read dispatches the worker's frames until its stream ends, then reports
// the worker's death to the jobs whose tasks were in flight.
func (c *workerConn) read(rd *wire.Reader) {
	defer close(c.gone)
	var streamErr error
	for {
		typ, body, err := rd.Next()
		if err != nil {
			streamErr = err
			break
		}
		switch typ {
		case wire.TypeResults:
			rs, err := wire.AppendResults(c.results[:0], body)
			if err != nil {
				streamErr = err
				break
			}
			c.deliver(rs)
			clear(rs)
			c.results = rs[:0]
		case wire.TypeLog:
			l, err := wire.DecodeLog(body)
			if err != nil {
				streamErr = err
				break
			}
			c.log(l)
		case wire.TypeStarted:
			key, err := wire.DecodeStarted(body)
			if err != nil {
				streamErr = err
				break
			}
			c.started(key)
		default:
			streamErr = fmt.Errorf("%w: unexpected message type %#x from worker", wire.ErrProtocol, typ)
		}
		if streamErr != nil {
			break
		}
	}
	if !errors.Is(streamErr, io.EOF) && !errors.Is(streamErr, io.ErrUnexpectedEOF) {
		// A protocol error or a broken stream: the worker cannot be trusted.
		c.w.Kill()
	}
	var st driver.ExitStatus
	select {
	case <-c.w.Done():
		st = c.w.Exit()
	case <-time.After(lostGrace):
		c.w.Kill()
		st = driver.ExitStatus{Code: -1, Lost: true}
	}
	c.w.Conn().Close()
	if c.holding && st.ResultLog != nil {
		// What the worker held when it died: results, and which task was
		// running. Results already received are dropped by deliver.
		running, rs, _ := wire.ParseResultLog(st.ResultLog)
		c.deliver(rs)
		c.started(running)
	}
	c.mu.Lock()
	c.dead = true
	lost := c.inflight
	c.inflight = nil
	run := c.run
	// Tasks run in the order sent, and the worker sends every result
	// before it starts the next task: only the first task still in flight
	// can have been running.
	running := len(lost) > 0 && lost[0].key == c.startedKey && c.startedKey != 0
	c.mu.Unlock()
	if run == nil && len(lost) > 0 {
		run = lost[0].run
	}
	var ts []*task
	for _, f := range lost {
		ts = append(ts, f.tasks...)
	}
	if len(st.Output) > 0 && run != nil {
		// What the worker printed last, recovered from its output after
		// it died, belongs to the task it was running.
		if running {
			run.spec.Logs.write(ts[0].index+1, "", st.Output, true)
		} else {
			run.spec.Logs.write(0, c.w.Name(), st.Output, true)
		}
	}
	if run != nil {
		run.workerDied(c, ts, running, st)
	}
	c.pool.dropped(c)
}

func (c *workerConn) deliver(rs []wire.Result) {
	var run *Job
	done := c.done[:0]
	c.mu.Lock()
	for _, r := range rs {
		// Results arrive in the order tasks were sent: skip to the key.
		// A key before the first in flight was answered already (a result
		// both on the stream and in the result log).
		bi, i := findKey(c.inflight, r.Key)
		if bi < 0 {
			continue
		}
		c.inflight = c.inflight[bi:]
		f := &c.inflight[0]
		t := f.tasks[i]
		run = f.run // a worker serves one job at a time
		if i+1 == len(f.tasks) {
			c.inflight[0] = inflight{}
			c.inflight = c.inflight[1:]
		} else {
			f.tasks = f.tasks[i+1:]
			f.key += uint64(i + 1)
		}
		done = append(done, settled{t: t, res: r})
	}
	if len(c.inflight) == 0 {
		c.inflight = nil // let the backing array go
	}
	c.mu.Unlock()
	if run != nil {
		// completed is done with the slice when it returns.
		run.completed(c, done)
	}
	clear(done)
	c.done = done[:0]
}

// started marks the task with key as running. Every task sent before it
// has been answered.
func (c *workerConn) started(key uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if bi, _ := findKey(c.inflight, key); bi >= 0 {
		c.startedKey = key
	}
}

func (c *workerConn) log(l wire.Log) {
	c.mu.Lock()
	var run *Job
	var t *task
	run = c.run
	if bi, i := findKey(c.inflight, l.Key); bi >= 0 {
		run, t = c.inflight[bi].run, c.inflight[bi].tasks[i]
	}
	c.mu.Unlock()
	if run == nil {
		return
	}
	if t != nil {
		run.spec.Logs.write(t.index+1, "", l.Data, false)
	} else {
		run.spec.Logs.write(0, c.w.Name(), l.Data, false)
	}
}

// failureOfResult decodes a failed result's payload.
func failureOfResult(r wire.Result) wire.Failure {
	var f wire.Failure
	if err := json.Unmarshal(r.Payload, &f); err != nil {
		f = wire.Failure{Type: r.Status.String(), Message: string(r.Payload)}
	}
	return f
}

func describeExit(st driver.ExitStatus) string {
	switch {
	case st.Cause != nil:
		return st.Cause.Error()
	case st.Lost:
		return "lost: no exit status"
	case st.OOMKilled:
		return fmt.Sprintf("killed for exceeding its memory limit of %s (peak %s)", driver.Bytes(st.LimitBytes), driver.Bytes(st.PeakMemoryBytes))
	case st.Signal != "":
		return "killed by signal: " + st.Signal
	}
	return fmt.Sprintf("exit code %d", st.Code)
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
