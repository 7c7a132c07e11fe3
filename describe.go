package meadowrun

import (
	"context"
	"fmt"

	"github.com/meadowrun-go/meadowrun/driver"
)

// MachineInfo describes a machine of a host: what it offers, how its
// memory limits are enforced, and what this process's workers hold there.
type MachineInfo struct {
	// Name is the machine as errors and results name it.
	Name string `json:"name"`
	// Err says why the machine cannot be used now (ErrUnreachable,
	// ErrAuth, ErrHostKey, ErrPlatform, ErrDiskFull, ...); nil when it can.
	Err error `json:"-"`
	// Platform is GOOS/GOARCH.
	Platform   string  `json:"platform,omitempty"`
	LogicalCPU float64 `json:"logical_cpu"`
	MemoryGB   float64 `json:"memory_gb"`
	// GPUs describe the machine's GPUs, one string each.
	GPUs []string `json:"gpus,omitempty"`
	// Flags are the machine's features (see Resources.Flags).
	Flags      []string `json:"flags,omitempty"`
	FreeDiskGB float64  `json:"free_disk_gb"`
	// MemoryEnforcement is "cgroup2", "cgroup1" or "watchdog".
	MemoryEnforcement string `json:"memory_enforcement,omitempty"`
	// Python is the version of the machine's python3 ("3.11.2"), which
	// PreinstalledInterpreter("") runs; "" when it has none or the host
	// does not say (SSH machines say).
	Python string `json:"python,omitempty"`
	// Containers names the machine's container engine ("docker
	// 20.10.24"), which container deployments need; "" when none answers.
	Containers string `json:"containers,omitempty"`
	// Labels are the machine's labels: a Kubernetes node's (its zone,
	// instance type, spot or on-demand capacity, ...).
	Labels map[string]string `json:"labels,omitempty"`
	// BookedCPU and BookedMemoryGB are what this process's workers hold.
	BookedCPU      float64 `json:"booked_cpu"`
	BookedMemoryGB float64 `json:"booked_memory_gb"`
}

// DescribeHost describes the machines of host, connecting to those it
// has not reached yet: the way to check that a host is usable before
// running work on it. A machine that cannot be used is described with
// its Err; the error returned is for a host that cannot be opened or
// described at all.
func DescribeHost(ctx context.Context, host *Host) ([]MachineInfo, error) {
	drv, err := host.Driver(ctx)
	if err != nil {
		return nil, fmt.Errorf("meadowrun: %w", err)
	}
	d, ok := drv.(driver.Describer)
	if !ok {
		return nil, fmt.Errorf("%w: %s cannot describe its machines", ErrUnsupported, drv.Name())
	}
	const gib = 1 << 30
	var out []MachineInfo
	for _, m := range d.Describe(ctx) {
		out = append(out, MachineInfo{Name: m.Name, Err: m.Err, Platform: m.Platform,
			LogicalCPU: m.Capacity.LogicalCPU, MemoryGB: float64(m.Capacity.MemoryBytes) / gib,
			GPUs: m.GPUNames, Flags: m.Capacity.Flags, FreeDiskGB: float64(m.Capacity.EphemeralBytes) / gib,
			MemoryEnforcement: m.Limiter, Python: m.Python, Containers: m.Containers, Labels: m.Labels, BookedCPU: m.Booked.LogicalCPU, BookedMemoryGB: float64(m.Booked.MemoryBytes) / gib})
	}
	return out, nil
}
