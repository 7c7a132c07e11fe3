package meadowrun

import (
	"context"
	"fmt"
	"sync"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/buildid"
	"github.com/meadowrun-go/meadowrun/internal/inprocess"
	"github.com/meadowrun-go/meadowrun/internal/localhost"
	"github.com/meadowrun-go/meadowrun/internal/sysres"
)

// Host says where work runs. Local (this machine) is the default when a
// nil Host is passed; SSH hosts, EC2 and Azure VMs, and Kubernetes
// implement it too. A Host's driver keeps warm workers between calls.
type Host interface {
	// Driver returns the driver that serves this host, opening it on first
	// use.
	Driver(ctx context.Context) (driver.Host, error)
}

// Local is this machine, shared by every call in the process: its workers
// stay warm between calls. The zero value is ready to use; NewLocalHost
// gives a separately configured instance.
type Local struct{}

var defaultLocal struct {
	mu  sync.Mutex
	drv *localhost.Host
}

// Driver implements Host.
func (Local) Driver(ctx context.Context) (driver.Host, error) {
	defaultLocal.mu.Lock()
	defer defaultLocal.mu.Unlock()
	if defaultLocal.drv == nil {
		d, err := localhost.New(ctx, localhost.Options{})
		if err != nil {
			return nil, err
		}
		defaultLocal.drv = d
	}
	return localDriver{defaultLocal.drv}, nil
}

// localDriver adds the code identity check to the local driver: workers
// re-execute this very program, so they must have its build ID.
type localDriver struct{ *localhost.Host }

func (localDriver) ExpectedDigest() string {
	d, _ := buildid.Self()
	return d
}

// LocalOptions configure NewLocalHost. The zero value re-executes this
// program and uses the whole machine.
type LocalOptions struct {
	// Executable is the worker binary: a program whose main calls
	// meadowrun.Main first. "" means this program.
	Executable string
	// Args and Env (KEY=VALUE) are given to the worker binary.
	Args, Env []string
	// MemoryEnforcement forces "cgroup2", "cgroup1" or "watchdog"; ""
	// picks the best the machine allows.
	MemoryEnforcement string
	// LogicalCPU and MemoryGB, when positive, replace the detected
	// capacity: a smaller budget than the machine has.
	LogicalCPU, MemoryGB float64
}

// LocalHost is a separately configured instance of this machine as a host.
type LocalHost struct {
	drv driver.Host
}

// NewLocalHost detects the machine and prepares a host with its own pool
// of warm workers. Close it when done.
func NewLocalHost(ctx context.Context, opts LocalOptions) (*LocalHost, error) {
	lo := localhost.Options{Executable: opts.Executable, Args: opts.Args, Env: opts.Env, Limiter: opts.MemoryEnforcement}
	if opts.LogicalCPU > 0 || opts.MemoryGB > 0 {
		c, err := sysres.Detect(ctx, sysres.DetectOptions{})
		if err != nil {
			return nil, fmt.Errorf("meadowrun: local host: %w", err)
		}
		if opts.LogicalCPU > 0 {
			c.LogicalCPU = opts.LogicalCPU
		}
		if opts.MemoryGB > 0 {
			c.MemoryBytes = int64(opts.MemoryGB * (1 << 30))
		}
		lo.Capacity = &c
	}
	d, err := localhost.New(ctx, lo)
	if err != nil {
		return nil, err
	}
	if opts.Executable == "" {
		return &LocalHost{drv: localDriver{d}}, nil
	}
	return &LocalHost{drv: d}, nil
}

// Driver implements Host.
func (h *LocalHost) Driver(ctx context.Context) (driver.Host, error) { return h.drv, nil }

// Close stops the host's workers.
func (h *LocalHost) Close() error {
	closePool(h.drv)
	return h.drv.Close()
}

// InProcessHost runs workers as goroutines of this process, speaking the
// real protocol over in-memory pipes. It is meant for tests: fast, but it
// cannot enforce memory, capture what functions print, or survive a
// crashing task.
type InProcessHost struct {
	drv *inprocess.Host
}

// NewInProcessHost returns an in-process host offering logicalCPU CPUs
// (0: the number of CPUs of the machine).
func NewInProcessHost(logicalCPU float64) *InProcessHost {
	return &InProcessHost{drv: inprocess.New(logicalCPU)}
}

// Driver implements Host.
func (h *InProcessHost) Driver(ctx context.Context) (driver.Host, error) { return h.drv, nil }

// Close stops the host's workers.
func (h *InProcessHost) Close() error {
	closePool(h.drv)
	return h.drv.Close()
}
