// Package agentclient is the client of meadowrun's agent (package agent)
// for every kind of host whose machines run one: a driver.Host over a set
// of machines, each reached through a Transport (SSH today; Kubernetes and
// cloud VMs next), which is all a kind of host has to provide.
//
// For each machine it has the agent started (Link.Bootstrap), opens a
// session whose connection stays open as its control channel, learns the
// machine's capacity, uploads programs and files by content (never twice),
// starts workers, each one more byte stream to the agent, and relays the
// requests of durable jobs. Across machines it places each worker where it
// fits best, detects a lost machine (keepalives, a broken control
// channel), reports its workers lost so that the coordinator re-runs their
// tasks elsewhere, reconnects the machine in the background, and gives up
// once no machine could be used for Options.GiveUpAfter.
//
// The protocol is package agentproto (docs/agent-protocol.md). This
// package depends on no transport: a test asserts that it does not import
// the SSH packages.
package agentclient

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/agentproto"
	"github.com/meadowrun-go/meadowrun/internal/localhost"
)

// Options configure a Host. The zero value is valid.
type Options struct {
	// Kind names the kind of host in errors ("ssh host"); "" means
	// "agent host".
	Kind string
	// GiveUpAfter is how long a job waits while every machine is
	// unreachable before its remaining tasks fail with ErrUnreachable;
	// 0 means 2 minutes, negative forever.
	GiveUpAfter time.Duration
	// Binary is the program shipped to machines of this machine's platform;
	// "" means the running program.
	Binary string
	// Binaries name programs for other platforms, by "GOOS/GOARCH". Without
	// one, the program is cross-compiled when its source is at hand.
	Binaries map[string]string
	// Log receives one line per machine problem (unreachable, refused,
	// lost, back); nil means standard error.
	Log io.Writer
	// Content, when not nil, offers the content machines lack (files of
	// deployments, programs) by URL, which the agents download instead of
	// receiving it over the connection.
	Content ContentStore
	// Values, when not nil, carries workers' large arguments and results
	// through an object store (see ValueStore).
	Values ValueStore
	// Programs, when not nil, is shared with other hosts (one per
	// Kubernetes pod, say) instead of being made from Binary and Binaries;
	// Close leaves it open.
	Programs *Programs
	// OnNotice, if set, is called (on its own goroutine) when a machine's
	// agent says the machine goes away (a spot interruption notice, see
	// agentproto.Notice); machine is its MachineConfig.Name.
	OnNotice func(machine string, n agentproto.Notice)
}

// ContentStore puts content where agents can download it, such as an
// object store's bucket.
type ContentStore interface {
	// Download makes the size bytes of the file at path, whose sha256 is
	// sha, downloadable (writing them unless they are there already) and
	// returns how; ok is false when they cannot be (the store has logged
	// why): they are then sent over the connection.
	Download(ctx context.Context, sha string, size int64, path string) (d Download, ok bool)
}

// Download is a GET of URL with Header ("Name: value"), when not "".
type Download struct {
	URL, Header string
}

// Host is a driver.Host over machines that run meadowrun's agent.
type Host struct {
	opts     Options
	bins     *Programs
	files    *fileCache
	machines []*machine

	mu     sync.Mutex
	closed bool
	logged map[string]string // machine → last problem logged
}

// New prepares a host of machines; it connects on first use.
func New(opts Options, machines []MachineConfig) (*Host, error) {
	if opts.Kind == "" {
		opts.Kind = "agent host"
	}
	if len(machines) == 0 {
		return nil, errors.New(opts.Kind + ": no machines given")
	}
	if opts.GiveUpAfter == 0 {
		opts.GiveUpAfter = 2 * time.Minute
	}
	if opts.Log == nil {
		opts.Log = os.Stderr
	}
	h := &Host{opts: opts, logged: map[string]string{}, files: newFileCache(opts.Kind)}
	seen := map[string]bool{}
	for _, mc := range machines {
		if mc.Name == "" || mc.Transport == nil {
			return nil, fmt.Errorf("%s: machine %q without a name or transport", opts.Kind, mc.Name)
		}
		if seen[mc.Name] {
			return nil, fmt.Errorf("%s: machine %s given twice", opts.Kind, mc.Name)
		}
		seen[mc.Name] = true
		m := &machine{h: h, t: mc.Transport, name: mc.Name, connectTimeout: mc.ConnectTimeout, keepAlive: mc.KeepAlive, keepAliveMax: mc.KeepAliveMisses,
			workers: map[string]*worker{}, fits: map[string]fitResult{}, have: map[string]bool{}}
		if m.connectTimeout <= 0 {
			m.connectTimeout = 10 * time.Second
		}
		if m.keepAlive <= 0 {
			m.keepAlive = time.Second
		}
		if m.keepAliveMax <= 0 {
			m.keepAliveMax = 3
		}
		h.machines = append(h.machines, m)
	}
	if opts.Programs != nil {
		h.bins = opts.Programs
		return h, nil
	}
	var err error
	if h.bins, err = NewPrograms(opts.Kind, opts.Binary, opts.Binaries); err != nil {
		return nil, err
	}
	return h, nil
}

// Name implements driver.Host: the kind and the machines.
func (h *Host) Name() string {
	names := make([]string, len(h.machines))
	for i, m := range h.machines {
		names[i] = m.name
	}
	return h.opts.Kind + " " + strings.Join(names, ",")
}

// Capabilities implements driver.Host: the agent enforces what the local
// host does, runs Python workers with an interpreter the machine has, and
// container deployments, sidecars and ports with the machine's container
// engine.
func (h *Host) Capabilities() driver.Capabilities {
	return driver.Capabilities{CapturesOutput: true, ProcessExits: true, MemoryLimits: true, Sidecars: true, Ports: true,
		Runtimes:    []driver.Runtime{driver.RuntimePython},
		Deployments: []driver.DeploymentKind{driver.DeployInterpreter, driver.DeployContainer, driver.DeployEnvironment}}
}

// ExpectedDigest is the build ID workers must report: this program's.
func (h *Host) ExpectedDigest() string { return h.bins.selfDigest() }

// logf reports a machine's problem once (until it changes).
func (h *Host) logf(m *machine, msg string) {
	h.mu.Lock()
	if h.logged[m.name] == msg {
		h.mu.Unlock()
		return
	}
	h.logged[m.name] = msg
	h.mu.Unlock()
	fmt.Fprintf(h.opts.Log, "meadowrun: %s\n", msg)
}

// connectAll connects, in parallel, the machines never tried yet, and
// returns the errors of those that cannot be used. A machine that failed
// or was lost before is reconnected in the background instead, so that a
// dead machine does not delay every call by the connect timeout, unless no
// machine is up at all: then they are all tried again now.
func (h *Host) connectAll(ctx context.Context) map[*machine]error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	errs := map[*machine]error{}
	connect := func(m *machine) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := m.ensure(ctx); err != nil {
				mu.Lock()
				errs[m] = err
				mu.Unlock()
			}
		}()
	}
	var later []*machine
	for _, m := range h.machines {
		m.mu.Lock()
		up, tried := m.up, !m.downAt.IsZero()
		m.mu.Unlock()
		if !up && tried {
			later = append(later, m)
			continue
		}
		connect(m)
	}
	wg.Wait()
	anyUp := false
	for _, m := range h.machines {
		if _, up := m.state(); up {
			anyUp = true
		}
	}
	for _, m := range later {
		if !anyUp {
			connect(m)
			continue
		}
		m.reconnectLater()
		m.mu.Lock()
		last := m.lastErr
		m.mu.Unlock()
		if last == nil {
			last = fmt.Errorf("%w: %s is not connected", driver.ErrUnreachable, m.name)
		}
		errs[m] = last
	}
	wg.Wait()
	return errs
}

// Fit implements driver.Host: the sum over reachable machines. It fails
// when no machine is reachable, or when the request fits none of them.
func (h *Host) Fit(ctx context.Context, r driver.Resources) (int, error) {
	errs := h.connectAll(ctx)
	total := 0
	var never []error
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, m := range h.machines {
		if errs[m] != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := m.fit(ctx, r)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				total += n
			case errors.Is(err, driver.ErrNeverFits):
				never = append(never, err)
			default:
				errs[m] = err
			}
		}()
	}
	wg.Wait()
	if total > 0 {
		// The job goes on without the machines that cannot be used;
		// without any, the error below names them all.
		for _, m := range h.machines {
			if err := errs[m]; err != nil {
				h.logf(m, err.Error()+" (carrying on with the other machines)")
			}
		}
		return total, nil
	}
	all := never
	for _, m := range h.machines {
		if errs[m] != nil {
			all = append(all, errs[m])
		}
	}
	if len(never) > 0 {
		return 0, fmt.Errorf("%w on any machine: %w", driver.ErrNeverFits, errors.Join(all...))
	}
	return 0, fmt.Errorf("%s: no machine can be used: %w", h.opts.Kind, errors.Join(all...))
}

// Start implements driver.Host: the worker goes to the connected machine
// where it fits best (least room left over), trying the next when a
// machine is full or cannot run it (a Python worker whose interpreter it
// lacks). When every connected machine refused the worker as unsupported,
// and none was passed over for being full, the error wraps
// ErrUnsupported: waiting cannot help. Machines that are down do not
// count, so a job is not held up by a machine that may never return.
func (h *Host) Start(ctx context.Context, spec driver.WorkerSpec) (driver.Worker, error) {
	h.mu.Lock()
	closed := h.closed
	h.mu.Unlock()
	if closed {
		return nil, errors.New(h.opts.Kind + ": closed")
	}
	type cand struct {
		m    *machine
		left float64
	}
	var cands []cand
	full := 0 // machines up but passed over for now
	for _, m := range h.machines {
		info, up := m.state()
		if !up {
			m.reconnectLater()
			continue
		}
		free := m.free(info)
		r := spec.Resources
		if r.LogicalCPU > free.LogicalCPU+1e-9 || r.MemoryBytes > free.MemoryBytes {
			full++
			continue
		}
		left := (free.LogicalCPU - r.LogicalCPU) / max(info.Capacity.LogicalCPU, 1)
		if info.Capacity.MemoryBytes > 0 {
			left += float64(free.MemoryBytes-r.MemoryBytes) / float64(info.Capacity.MemoryBytes)
		}
		cands = append(cands, cand{m, left})
	}
	slices.SortStableFunc(cands, func(a, b cand) int {
		switch {
		case a.left < b.left:
			return -1
		case a.left > b.left:
			return 1
		}
		return 0
	})
	// Machines that cannot run the worker at all are reported once the
	// others have had their say: they are the error when no other can.
	var errs, refusals []error
	var refusers []*machine
	logRefusals := func() {
		for i, m := range refusers {
			h.logf(m, refusals[i].Error()+" (carrying on with the other machines)")
		}
	}
	for _, c := range cands {
		w, err := c.m.start(ctx, spec)
		if err == nil {
			logRefusals()
			return w, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		switch {
		case errors.Is(err, driver.ErrImageNotFound), errors.Is(err, driver.ErrRegistryAuth), errors.Is(err, driver.ErrSidecarExited),
			errors.Is(err, driver.ErrEnvironment):
			// The deployment is wrong, wherever it runs.
			return nil, err
		case errors.Is(err, driver.ErrUnsupported):
			refusers, refusals = append(refusers, c.m), append(refusals, err)
			continue
		case !errors.Is(err, driver.ErrNoCapacity) && !errors.Is(err, driver.ErrNeverFits):
			h.logf(c.m, err.Error())
		}
		errs = append(errs, err)
	}
	if len(refusals) > 0 && len(errs) == 0 && full == 0 {
		// Every connected machine says it cannot run this worker.
		return nil, fmt.Errorf("%s: no connected machine can run the worker: %w", h.opts.Kind, errors.Join(refusals...))
	}
	logRefusals()
	errs = append(errs, refusals...)
	if err := h.allGone(); err != nil {
		return nil, err
	}
	// Nothing fits now: machines that are down, full or broken may come
	// back, so the coordinator waits and asks again.
	return nil, fmt.Errorf("%s: %w on any connected machine: %w", h.opts.Kind, driver.ErrNoCapacity, errors.Join(errs...))
}

// allGone returns an error wrapping ErrUnreachable when every machine has
// been unusable for longer than Options.GiveUpAfter.
func (h *Host) allGone() error {
	if h.opts.GiveUpAfter < 0 {
		return nil
	}
	var errs []error
	for _, m := range h.machines {
		m.mu.Lock()
		up, since, last := m.up, m.downAt, m.lastErr
		m.mu.Unlock()
		if up || since.IsZero() || time.Since(since) < h.opts.GiveUpAfter {
			return nil
		}
		if last != nil {
			errs = append(errs, last)
		}
	}
	return fmt.Errorf("%s: %w: no machine could be used for %v, giving up: %w", h.opts.Kind, driver.ErrUnreachable, h.opts.GiveUpAfter, errors.Join(errs...))
}

// Close implements driver.Host: workers are killed with their sessions.
func (h *Host) Close() error {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	for _, m := range h.machines {
		m.close()
	}
	if h.opts.Programs == nil {
		h.bins.close()
	}
	return nil
}

func newSessionID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// fitResult caches, per resources, what a machine's agent answered.
type fitResult struct {
	n   int
	err error
}

// Describe implements driver.Describer: it connects to every machine that
// is not up, at once, and describes each, or says why it cannot be used.
func (h *Host) Describe(ctx context.Context) []driver.Machine {
	out := make([]driver.Machine, len(h.machines))
	var wg sync.WaitGroup
	for i, m := range h.machines {
		wg.Go(func() {
			info, err := m.ensure(ctx)
			if err != nil {
				out[i] = driver.Machine{Name: m.name, Err: err}
				return
			}
			d := localhost.MachineOf(m.name, info.OS+"/"+info.Arch, info.Capacity.Sysres(), info.Limiter)
			d.Python = info.Python
			d.Containers = info.Containers
			m.mu.Lock()
			d.Booked = m.booked
			m.mu.Unlock()
			out[i] = d
		})
	}
	wg.Wait()
	return out
}
