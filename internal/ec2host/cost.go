package ec2host

import (
	"context"
	"time"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/ec2alloc"
)

// Cost: a worker costs its instance's price (the catalog's, for the
// market it was launched in, as the allocation table records it) times
// the share of the instance it holds (the largest of its shares of CPU,
// memory and GPUs), an hour; the coordinator charges each job for the
// time its workers are lent to it (driver.Priced).

// instanceCost is an instance's price and capacity, read once from the
// table.
type instanceCost struct {
	loaded   bool
	price    float64
	total    ec2alloc.Capacity
	gpuEach  int64
	typeName string
}

// CostPerHour implements driver.Priced.
func (w *worker) CostPerHour() float64 { return w.rate }

// loadCost returns inst's price and capacity, read from the table the
// first time; not loaded when the table could not be read.
func (h *Host) loadCost(inst *instance) instanceCost {
	h.mu.Lock()
	c := inst.cost
	h.mu.Unlock()
	if c.loaded {
		return c
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	rec, err := h.table.Get(ctx, inst.id)
	cancel()
	if err != nil {
		return c
	}
	return h.knownCost(inst, rec)
}

// knownCost sets inst's price and capacity from its record.
func (h *Host) knownCost(inst *instance, rec ec2alloc.Record) instanceCost {
	c := instanceCost{loaded: true, price: rec.Price, total: rec.Total, gpuEach: rec.GPUMemoryEach, typeName: rec.Type}
	h.mu.Lock()
	inst.cost = c
	h.mu.Unlock()
	return c
}

// setRate prices w, a worker of r on inst.
func (h *Host) setRate(w driver.Worker, inst *instance, r driver.Resources) {
	ew, ok := w.(*worker)
	if !ok {
		return
	}
	c := h.loadCost(inst)
	if !c.loaded {
		return // unpriced: the job's cost leaves it out
	}
	per, ok := ec2alloc.WorkerCapacity(r, c.gpuEach)
	if !ok {
		return
	}
	ew.rate = c.price * share(per, c.total)
}

// share is the largest fraction of total that per holds, at most 1.
func share(per, total ec2alloc.Capacity) float64 {
	s := 0.0
	for _, x := range [][2]int64{{per.MilliCPU, total.MilliCPU}, {per.MemoryBytes, total.MemoryBytes}, {per.MilliGPUs, total.MilliGPUs}, {per.GPUMemoryBytes, total.GPUMemoryBytes}} {
		if x[1] > 0 {
			s = max(s, float64(x[0])/float64(x[1]))
		}
	}
	return min(s, 1)
}
