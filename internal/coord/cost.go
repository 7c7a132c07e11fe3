package coord

import (
	"sync"
	"time"

	"github.com/meadowrun-go/meadowrun/driver"
)

// Cost: a job is charged, for each worker lent to it, the time it held it
// (from the start of a worker started for it, or from its lending) times
// the worker's driver.Priced rate.
//
// A task's share (Outcome.CostUSD) is the time each of its attempts that
// ended with a result (success or failure) ran on its worker, as the
// worker measured it, times that worker's rate. The rest of the job's
// cost is its overhead: workers starting (an instance's launch and
// boot), idle between tasks or waiting for work, the round trips around
// each task, and attempts cut short by a lost worker. So the tasks'
// shares add up to at most the job's cost.

// cost is a job's settled cost.
type cost struct {
	mu  sync.Mutex
	usd float64
}

// rateOf is w's cost an hour, 0 when its host does not say.
func rateOf(w driver.Worker) float64 {
	if p, ok := w.(driver.Priced); ok {
		return max(p.CostPerHour(), 0)
	}
	return 0
}

// charge settles c's time with the job it is lent to, once.
func (c *workerConn) charge() {
	c.mu.Lock()
	run, at, rate := c.run, c.lentAt, c.rate
	c.lentAt = time.Time{}
	c.mu.Unlock()
	if run == nil || at.IsZero() || rate == 0 {
		return
	}
	usd := time.Since(at).Hours() * rate
	run.cost.mu.Lock()
	run.cost.usd += usd
	run.cost.mu.Unlock()
}

// Cost returns what the job's workers have cost so far, in US dollars:
// the time each was lent to the job times its rate (driver.Priced); 0
// when the host prices none.
func (r *Job) Cost() float64 {
	r.mu.Lock()
	var conns []*workerConn
	for _, l := range r.lanes {
		conns = append(conns, l.conns...)
	}
	r.mu.Unlock()
	r.cost.mu.Lock()
	usd := r.cost.usd
	r.cost.mu.Unlock()
	for _, c := range conns {
		c.mu.Lock()
		if c.run == r && !c.lentAt.IsZero() {
			usd += time.Since(c.lentAt).Hours() * c.rate
		}
		c.mu.Unlock()
	}
	return usd
}

// attemptCost is the cost of an attempt that ran d on c's worker.
func (c *workerConn) attemptCost(d time.Duration) float64 {
	c.mu.Lock()
	rate := c.rate
	c.mu.Unlock()
	return max(d, 0).Hours() * rate
}
