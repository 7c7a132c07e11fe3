package meadowrun

import "sync"

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

// Cost returns what the job's workers have cost so far, in US dollars,
// when this process runs the job (SubmitOptions.InProcess); false when a
// supervisor or another process does.
func (d *Detached[T]) Cost() (float64, bool) { return localCost(d.ID()) }

// Cost returns what the map's workers have cost so far, in US dollars,
// when this process runs the map (SubmitOptions.InProcess); false when a
// supervisor or another process does.
func (m *DetachedMap[R]) Cost() (float64, bool) { return localCost(m.ID()) }

func localCost(id string) (float64, bool) {
	f, ok := localCosts.Load(id)
	if !ok {
		return 0, false
	}
	return f.(func() float64)(), true
}
