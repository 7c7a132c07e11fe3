package meadowrun

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/meadowrun-go/meadowrun/driver"
)

// ErrInvalidResources is wrapped by every Resources validation error.
var ErrInvalidResources = errors.New("meadowrun: invalid resources")

// Resources are what a job, or each task of a map, needs. The zero value
// asks for one logical CPU and no particular memory; hosts that allocate
// machines may require more fields.
//
// Resources are enforced, not only booked: on the local host each worker
// gets a memory limit (cgroups, or an RSS watchdog where cgroups are not
// writable) and only the GPUs assigned to it.
type Resources struct {
	// LogicalCPU is the number of logical CPUs (vCPUs). 0 means 1.
	LogicalCPU float64
	// MemoryGB is the memory in GB (2^30 bytes). 0 means no limit.
	MemoryGB float64
	// MaxEvictionRate is the highest acceptable chance, in percent, that
	// a spot instance is interrupted. 0 means the default, 80. Set
	// OnDemandOnly to refuse spot instances. Hosts without eviction (this
	// machine, SSH hosts) satisfy any value.
	MaxEvictionRate float64
	// OnDemandOnly refuses interruptible capacity: the reference's
	// max_eviction_rate=0.
	OnDemandOnly bool
	// GPUs is the number of GPUs. When GPUMemoryGB is set and GPUs is 0,
	// one GPU is implied.
	GPUs float64
	// GPUMemoryGB is the total GPU memory required across all GPUs.
	GPUMemoryGB float64
	// Flags are required machine features: "intel", "amd_cpu", "avx2",
	// "avx512", "nvidia", or any other flag a host declares.
	Flags []string
	// EphemeralStorageGB is local disk in GB.
	EphemeralStorageGB float64
}

// DefaultMaxEvictionRate is the eviction rate accepted when none is set.
const DefaultMaxEvictionRate = 80

// Validate reports the first invalid field: negative, NaN or infinite
// numbers, an eviction rate above 100, fractional GPUs above one, or empty
// flags.
func (r Resources) Validate() error {
	fields := []struct {
		name string
		v    float64
	}{
		{"LogicalCPU", r.LogicalCPU},
		{"MemoryGB", r.MemoryGB},
		{"MaxEvictionRate", r.MaxEvictionRate},
		{"GPUs", r.GPUs},
		{"GPUMemoryGB", r.GPUMemoryGB},
		{"EphemeralStorageGB", r.EphemeralStorageGB},
	}
	for _, f := range fields {
		switch {
		case math.IsNaN(f.v):
			return fmt.Errorf("%w: %s is NaN", ErrInvalidResources, f.name)
		case math.IsInf(f.v, 0):
			return fmt.Errorf("%w: %s is infinite", ErrInvalidResources, f.name)
		case f.v < 0:
			return fmt.Errorf("%w: %s is %g; it must be 0 or more", ErrInvalidResources, f.name, f.v)
		}
	}
	if r.MaxEvictionRate > 100 {
		return fmt.Errorf("%w: MaxEvictionRate is %g%%; it is a percentage, at most 100", ErrInvalidResources, r.MaxEvictionRate)
	}
	if r.GPUs > 1 && r.GPUs != math.Trunc(r.GPUs) {
		return fmt.Errorf("%w: GPUs is %g; more than one GPU must be a whole number", ErrInvalidResources, r.GPUs)
	}
	for _, f := range r.Flags {
		if strings.TrimSpace(f) == "" {
			return fmt.Errorf("%w: Flags contains an empty flag", ErrInvalidResources)
		}
	}
	if r.MemoryGB > 0 && r.MemoryGB*(1<<30) < 1<<20 {
		return fmt.Errorf("%w: MemoryGB is %g, less than 1 MiB: no process can run in that", ErrInvalidResources, r.MemoryGB)
	}
	return nil
}

// driverResources converts validated Resources to a host's units, with
// defaults applied and memory multiplied by mult (retry with more memory).
func (r Resources) driverResources(mult int) driver.Resources {
	d := driver.Resources{
		LogicalCPU:      r.LogicalCPU,
		MemoryBytes:     int64(r.MemoryGB * (1 << 30) * float64(mult)),
		GPUs:            r.GPUs,
		GPUMemoryBytes:  int64(r.GPUMemoryGB * (1 << 30)),
		EphemeralBytes:  int64(r.EphemeralStorageGB * (1 << 30)),
		MaxEvictionRate: r.MaxEvictionRate,
	}
	if len(r.Flags) > 0 {
		d.Flags = slices.Sorted(slices.Values(r.Flags))
	}
	if d.LogicalCPU == 0 {
		d.LogicalCPU = 1
	}
	if d.GPUs == 0 && d.GPUMemoryBytes > 0 {
		d.GPUs = 1
	}
	if d.MaxEvictionRate == 0 {
		d.MaxEvictionRate = DefaultMaxEvictionRate
	}
	if r.OnDemandOnly {
		d.MaxEvictionRate = 0
	}
	return d
}
