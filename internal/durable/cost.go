package durable

import (
	"sync"

	"github.com/meadowrun-go/meadowrun/internal/journal"
)

// runCost is what a run journals of its job's cost.
type runCost struct {
	mu     sync.Mutex
	f      func() float64 // the run's cost so far; nil: not tracked
	base   float64        // what earlier runs of the job cost
	queued bool           // a journaling of the cost is pending
}

// TrackCost has the run journal its job's cost, f (what its workers have
// cost so far, in US dollars), in the record's CostUSD with each commit
// of results and at its end, added to what earlier runs of a resumed job
// cost.
func (x *Run) TrackCost(f func() float64) {
	x.cost.mu.Lock()
	x.cost.f, x.cost.base = f, x.r.rec.CostUSD
	x.cost.mu.Unlock()
}

// costNow returns the job's cost, if tracked.
func (x *Run) costNow() (float64, bool) {
	x.cost.mu.Lock()
	f, base := x.cost.f, x.cost.base
	x.cost.mu.Unlock()
	if f == nil {
		return 0, false
	}
	return base + f(), true
}

// journalCost queues the cost's journaling with the next commit, once
// however many results that commit holds.
func (x *Run) journalCost() {
	x.cost.mu.Lock()
	if x.cost.f == nil || x.cost.queued {
		x.cost.mu.Unlock()
		return
	}
	x.cost.queued = true
	x.cost.mu.Unlock()
	x.rc.Mutate(func(rec *journal.Record) {
		x.cost.mu.Lock()
		x.cost.queued = false
		x.cost.mu.Unlock()
		if usd, ok := x.costNow(); ok {
			rec.CostUSD = usd
		}
	})
}
