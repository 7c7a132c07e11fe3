package durable

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/journal"
)

// A detached map submitted to an SSH host of several machines is split
// into parts, one per machine that can run its tasks, in proportion to
// how many run there at once: each part is a job of its own in its
// machine's journal, run by a supervisor there, so that the map goes on
// on every machine while nobody is connected. The submitting side's
// record lists the parts (journal.Part); following the map follows every
// part, with the map's task indices (see dealer).

// machinesOf names the machines of parts, for Record.Machine.
func machinesOf(parts []journal.Part) string {
	names := make([]string, len(parts))
	for i, p := range parts {
		names[i] = p.Machine
	}
	return strings.Join(names, ",")
}

// maxWeight bounds a part's weight, and so the dealer's cycle.
const maxWeight = 1024

// planParts chooses the machines to split a map across: those that can be
// reached and can run its tasks (resources r), each weighted by how many
// of its tasks run there at once (scaled down together so that none
// exceeds maxWeight).
func planParts(ms []driver.Machine, r driver.Resources, exclude map[string]bool) []journal.Part {
	var parts []journal.Part
	var slots []float64
	top := 0.0
	for _, m := range ms {
		if m.Err != nil || exclude[m.Name] {
			continue
		}
		if n := slotsOf(m.Capacity, r); n >= 1 {
			parts = append(parts, journal.Part{Machine: m.Name})
			slots = append(slots, n)
			top = max(top, n)
		}
	}
	scale := min(1, maxWeight/top)
	for k := range parts {
		parts[k].Weight = max(1, int(slots[k]*scale))
	}
	return parts
}

// slotsOf is how many workers of resources r a machine of capacity c
// holds at once.
func slotsOf(c, r driver.Resources) float64 {
	for _, f := range r.Flags {
		if !slices.Contains(c.Flags, f) {
			return 0
		}
	}
	if r.GPUMemoryBytes > c.GPUMemoryBytes || r.EphemeralBytes > c.EphemeralBytes {
		return 0
	}
	n := math.Inf(1)
	if r.LogicalCPU > 0 {
		n = c.LogicalCPU / r.LogicalCPU
	}
	if r.MemoryBytes > 0 && c.MemoryBytes > 0 {
		n = min(n, float64(c.MemoryBytes)/float64(r.MemoryBytes))
	}
	if r.GPUs > 0 {
		n = min(n, c.GPUs/r.GPUs)
	}
	return math.Floor(min(n, 1e9))
}

// startParts splits a map of the arguments raw across the machines of k
// that can run its tasks, and starts a supervisor for each part, with the
// part's tasks as a job of its own in that machine's journal. A machine
// that fails to take its part is left out and the map split again among
// the others. It returns no parts when the map is not to be split: a host
// of one machine, or one machine that can run the tasks (then named).
func startParts(ctx context.Context, k driver.JobKeeper, rec journal.Record, sub Submission, raw [][]byte) ([]journal.Part, string, error) {
	d, ok := k.(driver.Describer)
	if w, whole := k.(interface{ KeepsWholeJobs() bool }); !ok || whole && w.KeepsWholeJobs() {
		// A keeper whose one supervisor runs the map over all of its
		// machines (a cluster's) takes it whole.
		return nil, "", nil
	}
	ms := d.Describe(ctx)
	if len(ms) < 2 {
		return nil, "", nil
	}
	var unreachable []error
	for _, m := range ms {
		if m.Err != nil {
			unreachable = append(unreachable, m.Err)
		}
	}
	if len(unreachable) == len(ms) {
		return nil, "", errors.Join(unreachable...)
	}
	exclude := map[string]bool{}
	var errs []error
	seq := 0
	for {
		parts := planParts(ms, sub.Resources, exclude)
		parts, deal := dealTo(parts, len(raw), sub.Concurrency)
		switch {
		case len(parts) == 0 && len(errs) > 0:
			return nil, "", errors.Join(errs...)
		case len(parts) == 0:
			return nil, "", nil // the first machine reached says why it cannot
		case len(parts) == 1:
			return nil, parts[0].Machine, nil
		}
		for k := range parts {
			seq++
			parts[k].ID = fmt.Sprintf("%s.%d", rec.ID, seq)
		}
		shares := make([][][]byte, len(parts))
		for i, a := range raw {
			k, _ := deal.part(i)
			shares[k] = append(shares[k], a)
		}
		started := make([]bool, len(parts))
		failed := make([]error, len(parts))
		var wg sync.WaitGroup
		conc := splitConcurrency(sub.Concurrency, deal.weights)
		for i, p := range parts {
			b, err := sub.Spec(conc[i])
			if err != nil {
				return nil, "", fmt.Errorf("meadowrun: encoding the job's options: %w", err)
			}
			there := rec
			there.ID, there.Host, there.Spec, there.Total = p.ID, "local", b, len(shares[i])
			wg.Go(func() {
				_, err := k.SubmitJob(ctx, p.Machine, driver.JobSubmission{Job: there, Args: shares[i], Files: sub.Files})
				started[i], failed[i] = err == nil, err
			})
		}
		wg.Wait()
		if !slices.Contains(started, false) {
			return parts, "", nil
		}
		// Undo the parts that started, and split again without the
		// machines that failed.
		for i, p := range parts {
			if started[i] {
				k.CancelJob(context.WithoutCancel(ctx), p.Machine, p.ID)
			} else {
				exclude[p.Machine] = true
				errs = append(errs, fmt.Errorf("%s: %w", p.Machine, failed[i]))
			}
		}
		if ctx.Err() != nil {
			return nil, "", ctx.Err()
		}
	}
}

// dealTo keeps the parts that a map of n tasks at concurrency c (0: the
// default) gives work to, and returns the dealer of their tasks: with c
// below the number of parts, the c heaviest; and none that n tasks would
// leave without a task.
func dealTo(parts []journal.Part, n, c int) ([]journal.Part, *dealer) {
	parts = slices.Clone(parts)
	if c > 0 && c < len(parts) {
		slices.SortStableFunc(parts, func(a, b journal.Part) int { return b.Weight - a.Weight })
		parts = parts[:c]
	}
	for {
		weights := make([]int, len(parts))
		for k, p := range parts {
			weights[k] = p.Weight
		}
		d := newDealer(weights)
		kept := parts[:0:0]
		for k, p := range parts {
			if d.count(k, n) > 0 {
				kept = append(kept, p)
			}
		}
		if len(kept) == len(parts) {
			return parts, d
		}
		parts = kept
	}
}

// splitConcurrency divides a map's concurrency c (0: the default, left
// to each part) among parts of the given weights: at least one each, in
// proportion otherwise (largest remainders), summing to c when c is at
// least the number of parts.
func splitConcurrency(c int, weights []int) []int {
	out := make([]int, len(weights))
	if c <= 0 {
		return out
	}
	total := 0
	for _, w := range weights {
		total += w
	}
	// How far each part is from its exact share, in units of 1/total.
	behind := func(k int) int { return c*weights[k] - out[k]*total }
	sum := 0
	for k, w := range weights {
		out[k] = max(1, c*w/total)
		sum += out[k]
	}
	for ; sum < c; sum++ {
		best := 0
		for k := range out {
			if behind(k) > behind(best) {
				best = k
			}
		}
		out[best]++
	}
	for ; sum > c; sum-- {
		best := -1
		for k := range out {
			if out[k] > 1 && (best < 0 || behind(k) < behind(best)) {
				best = k
			}
		}
		if best < 0 {
			break // fewer than one each: the caller keeps c parts at most
		}
		out[best]--
	}
	return out
}

// dealer deals a map's tasks to parts in proportion to their weights: in
// every run of sum(weights) consecutive tasks, part k gets weights[k],
// spread over the run by smooth weighted round robin, so that every part
// gets early and late tasks alike.
type dealer struct {
	weights []int
	cycle   int     // sum(weights)
	owner   []int   // the part of each position of a run
	rank    []int   // how many earlier positions of the run its owner has
	pos     [][]int // each part's positions in a run
}

func newDealer(weights []int) *dealer {
	d := &dealer{weights: weights, pos: make([][]int, len(weights))}
	for _, w := range weights {
		d.cycle += w
	}
	cur := make([]int, len(weights))
	for i := range d.cycle {
		best := 0
		for k, w := range weights {
			cur[k] += w
			if cur[k] > cur[best] {
				best = k
			}
		}
		cur[best] -= d.cycle
		d.owner = append(d.owner, best)
		d.rank = append(d.rank, len(d.pos[best]))
		d.pos[best] = append(d.pos[best], i)
	}
	return d
}

// part returns the part that task i goes to, and its index there.
func (d *dealer) part(i int) (k, j int) {
	c, r := i/d.cycle, i%d.cycle
	k = d.owner[r]
	return k, c*d.weights[k] + d.rank[r]
}

// count returns how many of n tasks part k gets.
func (d *dealer) count(k, n int) int {
	c, r := n/d.cycle, n%d.cycle
	got := c * d.weights[k]
	for _, p := range d.pos[k] {
		if p < r {
			got++
		}
	}
	return got
}

// task returns the map's index of part k's task j.
func (d *dealer) task(k, j int) int {
	w := d.weights[k]
	return j/w*d.cycle + d.pos[k][j%w]
}
