// Package inprocess is a driver whose workers are goroutines of the calling
// process, connected by in-memory pipes. It speaks the real protocol and
// runs the real worker loop, so it exercises everything above the driver
// quickly; it cannot enforce memory, capture what functions print, or
// observe process exits, and declares so in its capabilities.
package inprocess

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/worker"
)

// Host is the in-process driver.
type Host struct {
	slots float64 // logical CPUs offered

	mu     sync.Mutex
	used   float64
	closed bool
	live   map[*proc]bool
}

var _ driver.Host = (*Host)(nil)

// New returns a host offering cpus logical CPUs (0: runtime.NumCPU()).
func New(cpus float64) *Host {
	if cpus <= 0 {
		cpus = float64(runtime.NumCPU())
	}
	return &Host{slots: cpus, live: map[*proc]bool{}}
}

// Name implements driver.Host.
func (h *Host) Name() string { return "in-process" }

// Capabilities implements driver.Host.
func (h *Host) Capabilities() driver.Capabilities { return driver.Capabilities{} }

// Fit implements driver.Host. Memory is not enforced in-process, so only
// CPUs, GPUs and flags count.
func (h *Host) Fit(ctx context.Context, r driver.Resources) (int, error) {
	switch {
	case r.LogicalCPU > h.slots:
		return 0, fmt.Errorf("in-process host: a request for %g logical CPUs %w: it offers %g", r.LogicalCPU, driver.ErrNeverFits, h.slots)
	case r.GPUs > 0:
		return 0, fmt.Errorf("in-process host: a request for %g GPUs %w: it has none", r.GPUs, driver.ErrNeverFits)
	case len(r.Flags) > 0:
		return 0, fmt.Errorf("in-process host: a request for flags %v %w: it declares none", r.Flags, driver.ErrNeverFits)
	}
	return int(h.slots/max(r.LogicalCPU, 1e-9) + 1e-9), nil
}

// Start implements driver.Host.
func (h *Host) Start(ctx context.Context, spec driver.WorkerSpec) (driver.Worker, error) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, errors.New("in-process host: closed")
	}
	if h.used+spec.Resources.LogicalCPU > h.slots+1e-9 {
		h.mu.Unlock()
		return nil, fmt.Errorf("in-process host: %w", driver.ErrNoCapacity)
	}
	h.used += spec.Resources.LogicalCPU
	cr, ww := io.Pipe() // worker → coordinator
	wr, cw := io.Pipe() // coordinator → worker
	p := &proc{h: h, spec: spec, conn: &pipeConn{r: cr, w: cw}, wr: wr, ww: ww, done: make(chan struct{})}
	h.live[p] = true
	h.mu.Unlock()
	ctx, p.cancel = context.WithCancel(context.Background())
	go func() {
		err := worker.Serve(ctx, wr, ww, worker.Options{Name: spec.Name})
		ww.Close()
		if err != nil {
			p.exit(driver.ExitStatus{Code: 1, Output: []byte(err.Error() + "\n")})
		} else {
			p.exit(driver.ExitStatus{Code: 0})
		}
	}()
	return p, nil
}

// Close implements driver.Host.
func (h *Host) Close() error {
	h.mu.Lock()
	h.closed = true
	ps := make([]*proc, 0, len(h.live))
	for p := range h.live {
		ps = append(ps, p)
	}
	h.mu.Unlock()
	for _, p := range ps {
		p.Kill()
	}
	return nil
}

type proc struct {
	h      *Host
	spec   driver.WorkerSpec
	conn   *pipeConn
	wr     *io.PipeReader
	ww     *io.PipeWriter
	cancel context.CancelFunc
	once   sync.Once
	done   chan struct{}
	st     driver.ExitStatus
}

func (p *proc) Name() string             { return p.spec.Name }
func (p *proc) Machine() string          { return "in-process" }
func (p *proc) Conn() io.ReadWriteCloser { return p.conn }
func (p *proc) Done() <-chan struct{}    { return p.done }
func (p *proc) Exit() driver.ExitStatus  { return p.st }

// Kill abandons the worker goroutine: its streams are cut and its task's
// context cancelled. The goroutine itself ends when the task returns.
func (p *proc) Kill() error {
	p.cancel()
	p.wr.CloseWithError(errKilled)
	p.ww.CloseWithError(errKilled)
	p.exit(driver.ExitStatus{Code: -1, Signal: "killed"})
	return nil
}

var errKilled = errors.New("in-process worker killed")

func (p *proc) exit(st driver.ExitStatus) {
	p.once.Do(func() {
		p.st = st
		p.h.mu.Lock()
		p.h.used -= p.spec.Resources.LogicalCPU
		delete(p.h.live, p)
		p.h.mu.Unlock()
		close(p.done)
	})
}

type pipeConn struct {
	r *io.PipeReader
	w *io.PipeWriter
}

func (c *pipeConn) Read(b []byte) (int, error)  { return c.r.Read(b) }
func (c *pipeConn) Write(b []byte) (int, error) { return c.w.Write(b) }
func (c *pipeConn) Close() error {
	c.w.Close()
	c.r.Close()
	return nil
}

// Describe implements driver.Describer.
func (h *Host) Describe(ctx context.Context) []driver.Machine {
	h.mu.Lock()
	defer h.mu.Unlock()
	return []driver.Machine{{Name: "in-process", Platform: runtime.GOOS + "/" + runtime.GOARCH,
		Capacity: driver.Resources{LogicalCPU: h.slots}, Limiter: "none",
		Booked: driver.Resources{LogicalCPU: h.used}}}
}
