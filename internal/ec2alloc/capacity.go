package ec2alloc

import (
	"math"

	"github.com/meadowrun-go/meadowrun/driver"
)

// Capacity is an amount of an instance's consumable resources, in
// integers so that the allocation table adds and subtracts them exactly.
type Capacity struct {
	MilliCPU       int64 // thousandths of a logical CPU
	MemoryBytes    int64
	MilliGPUs      int64 // thousandths of a GPU
	GPUMemoryBytes int64
}

// Times returns c multiplied by n.
func (c Capacity) Times(n int) Capacity {
	k := int64(n)
	return Capacity{c.MilliCPU * k, c.MemoryBytes * k, c.MilliGPUs * k, c.GPUMemoryBytes * k}
}

// Minus returns c less d.
func (c Capacity) Minus(d Capacity) Capacity {
	return Capacity{c.MilliCPU - d.MilliCPU, c.MemoryBytes - d.MemoryBytes, c.MilliGPUs - d.MilliGPUs, c.GPUMemoryBytes - d.GPUMemoryBytes}
}

// Plus returns c and d added.
func (c Capacity) Plus(d Capacity) Capacity {
	return Capacity{c.MilliCPU + d.MilliCPU, c.MemoryBytes + d.MemoryBytes, c.MilliGPUs + d.MilliGPUs, c.GPUMemoryBytes + d.GPUMemoryBytes}
}

// fits returns how many of per fit in c (a large number when per is
// zero everywhere).
func (c Capacity) fits(per Capacity) int {
	k := int64(math.MaxInt32)
	for _, p := range [][2]int64{{c.MilliCPU, per.MilliCPU}, {c.MemoryBytes, per.MemoryBytes}, {c.MilliGPUs, per.MilliGPUs}, {c.GPUMemoryBytes, per.GPUMemoryBytes}} {
		if p[1] > 0 {
			k = min(k, max(p[0], 0)/p[1])
		}
	}
	return int(k)
}

// TypeCapacity is all of an instance type's consumable resources.
func TypeCapacity(t *InstanceType) Capacity {
	return Capacity{
		MilliCPU:       int64(t.VCPU) * 1000,
		MemoryBytes:    t.MemoryBytes,
		MilliGPUs:      int64(t.GPUs) * 1000,
		GPUMemoryBytes: int64(t.GPUs) * t.GPUMemoryBytes,
	}
}

// WorkerCapacity is what one worker needing r books on an instance whose
// GPUs have gpuMemoryEach bytes each, or ok false when such an instance
// cannot hold the worker at all (its GPUs are too small). A worker with a
// fraction of a GPU books the share of a GPU that packing allows: 0.4 of
// a GPU books half of one, since only two such workers fit on a GPU; so
// booking by totals never puts more workers on a GPU than fit on it.
func WorkerCapacity(r driver.Resources, gpuMemoryEach int64) (c Capacity, ok bool) {
	const eps = 1e-9
	cpu := r.LogicalCPU
	if cpu <= 0 {
		cpu = 1
	}
	c = Capacity{MilliCPU: int64(math.Ceil(cpu*1000 - eps)), MemoryBytes: r.MemoryBytes, GPUMemoryBytes: r.GPUMemoryBytes}
	gpus := r.GPUs
	if gpus == 0 && r.GPUMemoryBytes > 0 {
		gpus = 1
	}
	switch {
	case gpus >= 1:
		whole := math.Ceil(gpus - eps)
		if r.GPUMemoryBytes > int64(whole)*gpuMemoryEach {
			return Capacity{}, false
		}
		c.MilliGPUs = int64(whole) * 1000
	case gpus > 0:
		each := int64(math.Floor(1/gpus + eps))
		if r.GPUMemoryBytes > 0 {
			each = min(each, gpuMemoryEach/r.GPUMemoryBytes)
		}
		if each == 0 {
			return Capacity{}, false
		}
		c.MilliGPUs = 1000 / each
	}
	return c, true
}
