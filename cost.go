package meadowrun

import (
	"context"
	"sync"
	"time"

	"github.com/meadowrun-go/meadowrun/internal/durable"
)

// Cost. Hosts whose machines are paid by the hour say what each worker
// costs (driver.Priced: an EC2 worker costs its instance's price for the
// market it runs in times the share of the instance it holds); a job is
// charged, for every worker lent to it, the time it held the worker times
// that rate. Hosts that price nothing report 0.

// localCosts maps the id of each durable job this process runs to its
// cost so far.
var localCosts sync.Map // string → func() float64

// Cost returns what the job's workers have cost so far, in US dollars
// (0 on hosts that price nothing).
func (j *Job[T]) Cost() float64 { return j.run.Cost() }

// Cost returns what the map's workers have cost so far, in US dollars
// (0 on hosts that price nothing).
func (m *MapJob[R]) Cost() float64 { return m.run.Cost() }

// Cost returns what the job's workers have cost so far, in US dollars:
// up to date when this process runs the job (SubmitOptions.InProcess);
// else as the process running it (a supervisor, here or on a host's
// machine) last journaled it, with each batch of results and at its end
// (JobInfo.CostUSD), read from the journal. It is false when the journal
// cannot be read.
func (d *Detached[T]) Cost() (float64, bool) { return journaledCost(d.ID(), d.job) }

// Cost returns what the map's workers have cost so far, in US dollars,
// as Detached.Cost does: a map's cost includes its overhead (workers
// starting, idle), beyond its tasks' TaskResult.CostUSD.
func (m *DetachedMap[R]) Cost() (float64, bool) { return journaledCost(m.ID(), m.job) }

// journaledCost is the cost of job id from this process when it runs the
// job, else from its journal.
func journaledCost(id string, job *durable.Job) (float64, bool) {
	if usd, ok := localCost(id); ok {
		return usd, true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	in, err := job.Info(ctx)
	if err != nil {
		return 0, false
	}
	return in.Job.CostUSD, true
}

func localCost(id string) (float64, bool) {
	f, ok := localCosts.Load(id)
	if !ok {
		return 0, false
	}
	return f.(func() float64)(), true
}
