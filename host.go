package meadowrun

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/buildid"
	"github.com/meadowrun-go/meadowrun/internal/coord"
	"github.com/meadowrun-go/meadowrun/internal/localhost"
)

// Host is where work runs: this machine (Local), machines reached over
// SSH (package ssh), and later Kubernetes and cloud VMs. It is one
// concrete type over a driver (package driver) that starts workers: what
// every host needs — the pool of warm workers, the URL that reopens the
// host in another process, closing — lives here once, and each driver
// stays thin. A nil *Host means Local().
//
// A Host is safe for concurrent use. Its warm workers are kept until Close.
type Host struct {
	url    string
	digest string
	shared bool // Local(): Close keeps it open for the rest of the process
	open   func(ctx context.Context) (driver.Host, error)

	mu     sync.Mutex
	drv    driver.Host
	pool   *coord.Pool
	closed bool
}

// HostOptions configure NewHost. The zero value is valid: a host that
// cannot be reopened from a URL and whose workers are not checked for a
// code identity.
type HostOptions struct {
	// URL names the host for OpenHost, so that jobs submitted to it can be
	// followed and cancelled from another process (see HostURL). "" means
	// it cannot be reopened.
	URL string
	// Digest is the code identity every worker must announce (the
	// program's build ID for workers that re-execute it); "" checks none.
	Digest string
}

// NewHost makes a host of a driver. Host packages (package ssh, and those
// of later hosts) return what it returns from their constructors; the
// host owns drv from then on and closes it in Close.
func NewHost(drv driver.Host, opts HostOptions) *Host {
	return &Host{drv: drv, url: opts.URL, digest: opts.Digest}
}

// ErrHostClosed is returned for work on a host after its Close.
var ErrHostClosed = errors.New("meadowrun: host is closed")

// Driver returns the driver under the host, opening it on first use: for
// drivers' conformance tests and tools that inspect capabilities. Work is
// run through the package's functions, not through the driver.
func (h *Host) Driver(ctx context.Context) (driver.Host, error) {
	drv, _, err := h.use(ctx)
	return drv, err
}

// use returns the driver and the pool of warm workers, opening them on
// first use.
func (h *Host) use(ctx context.Context) (driver.Host, *coord.Pool, error) {
	if h == nil {
		h = Local()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, nil, ErrHostClosed
	}
	if h.drv == nil {
		d, err := h.open(ctx)
		if err != nil {
			return nil, nil, err
		}
		h.drv = d
	}
	if h.pool == nil {
		h.pool = coord.NewPool(h.drv, h.digest)
	}
	return h.drv, h.pool, nil
}

// URL returns the URL that reopens the host in another process, "" if
// there is none.
func (h *Host) URL() string {
	if h == nil {
		return Local().url
	}
	return h.url
}

// Close stops the host's warm workers and releases its driver (SSH
// connections, for example). Jobs still running on it fail. Closing
// Local() stops its warm workers only: it serves the rest of the process.
func (h *Host) Close() error {
	if h == nil {
		h = Local()
	}
	h.mu.Lock()
	p, drv := h.pool, h.drv
	h.pool = nil
	if !h.shared {
		h.closed = true
		h.drv = nil
	}
	h.mu.Unlock()
	if p != nil {
		p.Close()
	}
	if drv == nil || h.shared {
		return nil
	}
	return drv.Close()
}

// keeper returns the host's driver as a job keeper, if it keeps jobs on
// its machines and has a URL that reopens it.
func (h *Host) keeper(ctx context.Context) driver.JobKeeper {
	if h.URL() == "" {
		return nil
	}
	drv, err := h.Driver(ctx)
	if err != nil {
		return nil
	}
	k, _ := drv.(driver.JobKeeper)
	return k
}

var local = sync.OnceValue(func() *Host {
	digest, _ := buildid.Self()
	return &Host{url: "local", digest: digest, shared: true, open: func(ctx context.Context) (driver.Host, error) {
		return localhost.New(ctx, localhost.Options{})
	}}
})

// Local is this machine, shared by every call in the process: workers
// re-execute this program and stay warm between calls. Its capacity is
// detected on first use. Package local gives separately configured
// instances.
func Local() *Host { return local() }

// newLocalHost is this machine with a budget of its own (cpu and memoryGB,
// when positive), for local:// URLs; package local offers every option.
func newLocalHost(ctx context.Context, exe string, cpu, memoryGB float64) (*Host, error) {
	d, err := localhost.New(ctx, localhost.Options{Executable: exe, LogicalCPU: cpu, MemoryBytes: int64(memoryGB * (1 << 30))})
	if err != nil {
		return nil, fmt.Errorf("meadowrun: %w", err)
	}
	o := HostOptions{}
	if exe == "" {
		o.Digest, _ = buildid.Self()
	}
	return NewHost(d, o), nil
}
