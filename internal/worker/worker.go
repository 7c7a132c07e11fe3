// Package worker is the worker side of the meadowrun protocol: it announces
// the functions it can run, then runs the tasks it receives one at a time,
// in order, and sends back their results and output.
//
// The same loop serves in a worker process (the user's binary re-executed in
// worker mode, see meadowrun.Main) and in-process, on a goroutine, for the
// in-process test host.
package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/meadowrun-go/meadowrun/internal/registry"
	"github.com/meadowrun-go/meadowrun/internal/shm"
	"github.com/meadowrun-go/meadowrun/internal/wire"
)

// Options configure Serve.
type Options struct {
	// Name identifies the worker in the Hello.
	Name string
	// Registry holds the functions served. Nil means registry.Default.
	Registry *registry.Registry
	// Digest identifies the worker's code (the binary's build ID).
	Digest string
	// LogPipe is the read end of the pipe that this process's stdout and
	// stderr write to. The worker forwards what it reads as Log frames,
	// tagged with the task that was running. Nil when output is not
	// captured (in-process workers); commands then still have their output
	// forwarded.
	LogPipe *os.File
	// MeasureMemory reports the process's peak resident memory with each
	// result of a task that ran 1 ms or longer.
	MeasureMemory bool
	// OnDisconnect, if set, is called when the coordinator's stream ends
	// without a Shutdown (the coordinator went away). The running task's
	// context is cancelled in any case.
	OnDisconnect func()
	// ResultLog, if set, is the result log the host gave the worker: once
	// the coordinator sends Hold, results are kept there and written to
	// the stream in batches (docs/protocol.md, "Result log").
	ResultLog *shm.ResultLog
}

var errShutdown = errors.New("worker: shutdown requested")

// server is the state of one Serve call.
type server struct {
	opts Options
	reg  *registry.Registry
	w    *wire.Writer
	pump *logPump

	mu       sync.Mutex
	queue    []wire.Task
	wake     chan struct{}
	closed   bool // no more tasks will arrive
	funcs    map[uint64]*registry.Entry
	names    map[uint64]string
	running  uint64
	hold     bool // the coordinator sent Hold: results may wait in the result log
	cancelFn context.CancelFunc
	canceled map[uint64]bool
	ctxSlab  []taskContext // used by execute only
}

// Serve speaks the worker side of the protocol on r and w until the
// coordinator closes the stream or sends Shutdown, or ctx is done. Tasks run
// sequentially; while one runs, the next ones wait in order. It returns nil
// on a clean end of stream.
func Serve(ctx context.Context, r io.Reader, w io.Writer, opts Options) error {
	s := &server{
		opts:     opts,
		reg:      opts.Registry,
		w:        wire.NewWriter(w),
		wake:     make(chan struct{}, 1),
		funcs:    map[uint64]*registry.Entry{},
		names:    map[uint64]string{},
		canceled: map[uint64]bool{},
	}
	if s.reg == nil {
		s.reg = registry.Default
	}
	hello := wire.Hello{
		Protocol:     wire.Version,
		Language:     "go",
		Runtime:      runtime.Version(),
		PID:          os.Getpid(),
		Worker:       opts.Name,
		BinaryDigest: opts.Digest,
		Functions:    s.reg.Functions(),
		ResultLog:    opts.ResultLog != nil,
	}
	if err := s.w.WriteFrame(wire.TypeHello, wire.EncodeHello(hello)); err != nil {
		return fmt.Errorf("worker: hello: %w", err)
	}
	if err := s.w.Flush(); err != nil {
		return fmt.Errorf("worker: hello: %w", err)
	}
	// Output is forwarded only after the Hello, which must come first, even
	// if the program printed something while it started.
	if opts.LogPipe != nil {
		p, err := newLogPump(opts.LogPipe, s.w, opts.ResultLog)
		if err != nil {
			return err
		}
		s.pump = p
		go p.run()
	}
	readErr := make(chan error, 1)
	go func() { readErr <- s.read(r) }()
	err := s.execute(ctx)
	if err == nil {
		select {
		case err = <-readErr:
		default:
		}
	}
	if errors.Is(err, io.EOF) || err == errShutdown {
		return nil
	}
	return err
}

// read receives frames until the stream ends.
func (s *server) read(r io.Reader) (err error) {
	defer func() {
		s.mu.Lock()
		s.closed = true
		if err != errShutdown {
			// The coordinator is gone: nobody will read what is queued.
			s.queue = nil
			if s.cancelFn != nil {
				s.cancelFn()
			}
		}
		s.mu.Unlock()
		s.signal()
		if err != errShutdown && s.opts.OnDisconnect != nil {
			s.opts.OnDisconnect()
		}
	}()
	fr := wire.NewReader(r)
	for {
		typ, body, err := fr.Next()
		if err != nil {
			return err
		}
		switch typ {
		case wire.TypeDefine:
			d, err := wire.DecodeDefine(body)
			if err != nil {
				return err
			}
			e, _ := s.reg.Lookup(d.Name)
			s.mu.Lock()
			s.funcs[d.ID] = e
			s.names[d.ID] = d.Name
			s.mu.Unlock()
		case wire.TypeTasks:
			ts, err := wire.DecodeTasks(body)
			if err != nil {
				return err
			}
			s.mu.Lock()
			s.queue = append(s.queue, ts...)
			s.mu.Unlock()
			s.signal()
		case wire.TypeCancel:
			key, err := wire.DecodeCancel(body)
			if err != nil {
				return err
			}
			s.mu.Lock()
			if s.running == key && s.cancelFn != nil {
				s.cancelFn()
			} else {
				s.canceled[key] = true
			}
			s.mu.Unlock()
		case wire.TypeShutdown:
			return errShutdown
		case wire.TypeHold:
			if len(body) != 0 || s.opts.ResultLog == nil {
				return fmt.Errorf("%w: hold sent to a worker without a result log", wire.ErrProtocol)
			}
			s.mu.Lock()
			s.hold = true
			s.mu.Unlock()
		default:
			return fmt.Errorf("%w: unexpected message type %#x from the coordinator", wire.ErrProtocol, typ)
		}
	}
}

func (s *server) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// sender writes results and task starts. A result waits until the worker
// starts its next task or runs out of tasks; then the result and the next
// task's Started frame go out in one write. So when the process dies, the
// coordinator holds the result of every task before the one that was
// running and knows which one that was: no task is re-run or blamed by
// guess, at the price of one write per task.
//
// Holding (the coordinator sent Hold), results wait in the result log
// instead, which the host reads if the process dies, and the log's running
// key replaces Started: results go out when the worker is idle, when the
// log is full, or before a task starts once holdFor has passed since the
// last write, so that the coordinator sees progress and long tasks'
// results are not delayed.
type sender struct {
	w         *wire.Writer
	pump      *logPump       // nil when output is not captured
	log       *shm.ResultLog // nil without a result log
	pending   []wire.Result
	logged    bool          // every pending result is in the log
	lastWrite time.Duration // since epoch
	epoch     time.Time     // monotonic base of lastWrite and task times: one clock read per time, not two
}

// holdFor is how long held results may wait for the next write.
const holdFor = time.Millisecond

// add holds r until the next start or flush.
func (b *sender) add(r wire.Result, hold bool) error {
	if len(b.pending) == 0 {
		b.logged = hold
	}
	if b.logged && hold {
		if !b.log.Append(r) {
			// Full: what it holds goes out, then r waits alone.
			if err := b.flush(); err != nil {
				return err
			}
			b.logged = b.log.Append(r)
		}
	} else {
		b.logged = false
	}
	b.pending = append(b.pending, r)
	return nil
}

// start announces the task with key: sending the results held and a
// Started frame, or, holding, recording key in the result log.
func (b *sender) start(key uint64, hold bool, now time.Duration) error {
	if hold && b.log != nil {
		if len(b.pending) > 0 && (!b.logged || now-b.lastWrite >= holdFor) {
			if err := b.flush(); err != nil {
				return err
			}
		}
		if len(b.pending) == 0 {
			b.lastWrite = now
		}
		b.log.Begin(key)
		return nil
	}
	b.writeResults()
	b.w.WriteFrame(wire.TypeStarted, wire.AppendStarted(nil, key))
	return b.flushWriter()
}

// flush sends the results held.
func (b *sender) flush() error {
	if len(b.pending) == 0 {
		return nil
	}
	b.writeResults()
	if err := b.flushWriter(); err != nil {
		return err
	}
	if b.log != nil {
		// On the stream now: the log may forget them.
		b.log.Reset()
	}
	return nil
}

func (b *sender) writeResults() {
	if len(b.pending) == 0 {
		return
	}
	fb := wire.NewBatch(len(b.pending))
	for _, r := range b.pending {
		fb.AddResult(r)
	}
	b.w.WriteFrame(wire.TypeResults, fb.Parts()...)
	clear(b.pending)
	b.pending = b.pending[:0]
	b.lastWrite = time.Since(b.epoch)
}

func (b *sender) flushWriter() error {
	if err := b.w.Flush(); err != nil {
		return fmt.Errorf("worker: sending results: %w", err)
	}
	return nil
}

// execute runs queued tasks in order and sends their results, batching the
// results of tasks that complete back to back.
func (s *server) execute(ctx context.Context) error {
	out := &sender{w: s.w, pump: s.pump, log: s.opts.ResultLog, epoch: time.Now()}
	for {
		s.mu.Lock()
		if len(s.queue) == 0 {
			closed := s.closed
			s.mu.Unlock()
			if s.pump != nil {
				// Idle: output from now on belongs to the worker; what
				// the last task printed goes out ahead of its result.
				s.pump.switchTo(0)
			}
			if err := out.flush(); err != nil {
				return err
			}
			if closed {
				return io.EOF
			}
			select {
			case <-s.wake:
			case <-ctx.Done():
				return ctx.Err()
			}
			continue
		}
		t := s.queue[0]
		s.queue = s.queue[1:]
		if len(s.queue) == 0 {
			s.queue = nil
		}
		canceled := s.canceled[t.Key]
		delete(s.canceled, t.Key)
		entry, defined := s.funcs[t.Func]
		name := s.names[t.Func]
		taskCtx, cancel := newTaskContextFrom(ctx, &s.ctxSlab)
		s.running, s.cancelFn = t.Key, cancel
		hold := s.hold
		s.mu.Unlock()

		if s.pump != nil {
			// What the previous task printed goes out under its key,
			// ahead of its result.
			s.pump.switchTo(t.Key)
		}
		start := time.Since(out.epoch)
		if err := out.start(t.Key, hold, start); err != nil {
			cancel()
			return err
		}
		var res wire.Result
		switch {
		case canceled:
			res = failure(t.Key, wire.StatusCanceled, "canceled", "the task was cancelled before it started", "")
		case t.Func == wire.FuncCommand:
			res = s.runCommand(taskCtx, t)
		case !defined && name == "":
			res = failure(t.Key, wire.StatusUnknown, "unknown-function", fmt.Sprintf("function id %d was never defined on this connection", t.Func), "")
		case entry == nil:
			res = failure(t.Key, wire.StatusUnknown, "unknown-function",
				fmt.Sprintf("function %q is not registered in worker %s", name, s.opts.Name), "")
		default:
			out, st, f := entry.Call(taskCtx, t.Payload)
			if st == wire.StatusOK {
				res = wire.Result{Key: t.Key, Payload: out}
			} else {
				res = failureResult(t.Key, st, f)
			}
		}
		elapsed := time.Since(out.epoch) - start
		res.Nanos = uint64(elapsed)
		if s.opts.MeasureMemory && elapsed >= time.Millisecond {
			res.PeakMemory = peakRSS()
		}
		s.mu.Lock()
		s.running, s.cancelFn = 0, nil
		s.mu.Unlock()
		cancel()

		if err := out.add(res, hold); err != nil {
			return err
		}
	}
}

func failure(key uint64, st wire.Status, typ, msg, stack string) wire.Result {
	return failureResult(key, st, &wire.Failure{Type: typ, Message: msg, Stack: stack})
}

func failureResult(key uint64, st wire.Status, f *wire.Failure) wire.Result {
	if f == nil {
		f = &wire.Failure{Type: st.String()}
	}
	b, _ := json.Marshal(f)
	return wire.Result{Key: key, Status: st, Payload: b}
}

// peakRSS returns the process's peak resident set size in bytes.
func peakRSS() uint64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return uint64(ru.Maxrss) * 1024
}
