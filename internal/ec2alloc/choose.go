package ec2alloc

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/meadowrun-go/meadowrun/driver"
)

// ErrNoFit is wrapped by the error [Choose] returns when no offer can
// hold one worker; the message says what stood in the way.
var ErrNoFit = errors.New("ec2alloc: no instance type fits")

// DefaultArchitecture is the architecture a [Request] without one asks
// for.
const DefaultArchitecture = "x86_64"

// Request is what [Choose] places: Workers workers, each needing
// Resources.
type Request struct {
	// Resources are one worker's, in the host's units with defaults
	// applied: LogicalCPU 0 counts as 1, MaxEvictionRate 0 means on
	// demand only. EphemeralBytes is not a property of a type (the root
	// volume is sized at launch) and is not looked at.
	Resources driver.Resources
	// Workers is how many workers to place; 0 chooses nothing.
	Workers int
	// Architecture is the AWS architecture the workers' binary needs;
	// "" means [DefaultArchitecture].
	Architecture string
	// Zones limits the offers to these availability zones (those of the
	// host's subnets); empty allows every zone.
	Zones []string
	// Skip, when set, leaves out the offers it returns true for: those
	// that just failed to launch for want of capacity or quota.
	Skip func(Offer) bool
}

// Instance is one instance to launch and the number of workers placed on
// it.
type Instance struct {
	Offer   Offer
	Workers int
}

// Choice is the instances [Choose] picked.
type Choice struct {
	Instances []Instance
	Price     float64 // USD per hour, all instances together
}

// WorkersPerInstance returns how many workers needing r fit on one
// instance of type t, ignoring price and market: the least, over CPUs,
// memory, GPUs and GPU memory, of the type's [TypeCapacity] divided by a
// worker's [WorkerCapacity] (what the allocation table books); 0 when a
// required flag is missing.
//
// GPU memory is checked per GPU, not only in total: a worker with GPUs
// g ≥ 1 gets g whole GPUs and needs g × the type's per-GPU memory to be
// at least r.GPUMemoryBytes; workers with a fraction of a GPU share one,
// as many on each as both the fraction and the GPU's memory allow.
func WorkersPerInstance(t *InstanceType, r driver.Resources) int {
	for _, f := range r.Flags {
		if !slices.Contains(t.Flags, f) {
			return 0
		}
	}
	per, ok := WorkerCapacity(r, t.GPUMemoryBytes)
	if !ok {
		return 0
	}
	return TypeCapacity(t).fits(per)
}

// candidate is an offer that holds at least one worker, with its price
// and eviction rate in integers so that sums compare exactly.
type candidate struct {
	offer Offer
	k     int   // workers per instance
	cost  int64 // micro-USD per hour
	evict int64 // eviction rate in thousandths of a percent
}

// score orders sets of instances: cheaper first, then a lower sum of
// eviction rates, then fewer instances.
type score struct {
	cost, evict int64
	n           int
}

func (a score) less(b score) bool {
	if a.cost != b.cost {
		return a.cost < b.cost
	}
	if a.evict != b.evict {
		return a.evict < b.evict
	}
	return a.n < b.n
}

func (a score) plus(c candidate) score {
	return score{a.cost + c.cost, a.evict + c.evict, a.n + 1}
}

// Choose returns the cheapest set of instances from c's offers that holds
// req.Workers workers of req.Resources. Between sets of equal price it
// takes the one whose eviction rates add up to less, then the one with
// fewer instances. Spot offers are considered only when their eviction
// rate is at most req.Resources.MaxEvictionRate.
//
// The result is an exact optimum (a dynamic program over the number of
// workers), where the reference took the best price per worker greedily;
// above a few thousand workers the bulk goes to the offer with the best
// price per worker first, which keeps the price optimal (an exchange
// argument: an optimum needs fewer other instances than that offer holds
// workers) though not always the eviction tie-break.
//
// The error wraps [ErrNoFit] when no offer holds one worker.
func Choose(c *Catalog, req Request) (Choice, error) {
	if req.Workers <= 0 {
		return Choice{}, nil
	}
	cands, err := candidates(c, req)
	if err != nil {
		return Choice{}, err
	}
	var out []Instance
	n := req.Workers

	bulk := cands[0]
	kmax := 0
	for _, cd := range cands {
		// Best price per worker, then best eviction per worker.
		if cd.cost*int64(bulk.k) < bulk.cost*int64(cd.k) ||
			cd.cost*int64(bulk.k) == bulk.cost*int64(cd.k) && cd.evict*int64(bulk.k) < bulk.evict*int64(cd.k) {
			bulk = cd
		}
		kmax = max(kmax, cd.k)
	}
	if limit := max(4096, bulk.k*kmax+kmax); n > limit {
		b := (n - limit + bulk.k - 1) / bulk.k
		for range b {
			out = append(out, Instance{Offer: bulk.offer, Workers: bulk.k})
		}
		n -= b * bulk.k
	}

	front := frontier(cands, n)
	best := make([]score, n+1)
	from := make([]int, n+1)
	for i := 1; i <= n; i++ {
		from[i] = -1
		for j, f := range front {
			s := best[max(0, i-f.k)].plus(f)
			if from[i] < 0 || s.less(best[i]) {
				best[i], from[i] = s, j
			}
		}
	}
	for i := n; i > 0; {
		f := front[from[i]]
		w := min(f.k, i)
		out = append(out, Instance{Offer: f.offer, Workers: w})
		i -= w
	}
	ch := Choice{Instances: out}
	var micro int64
	for _, in := range out {
		micro += priceMicro(in.Offer.Price)
	}
	ch.Price = float64(micro) / 1e6
	return ch, nil
}

// frontier keeps, for each capacity capped at n, the best offer, and of
// those only the ones no larger capacity beats on price and eviction.
func frontier(cands []candidate, n int) []candidate {
	byK := map[int]candidate{}
	for _, cd := range cands {
		cd.k = min(cd.k, n)
		if old, ok := byK[cd.k]; !ok || (score{cd.cost, cd.evict, 1}).less(score{old.cost, old.evict, 1}) {
			byK[cd.k] = cd
		}
	}
	ks := make([]int, 0, len(byK))
	for k := range byK {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	var out []candidate
	var bestLarger *score
	for i := len(ks) - 1; i >= 0; i-- {
		cd := byK[ks[i]]
		s := score{cd.cost, cd.evict, 1}
		if bestLarger != nil && !s.less(*bestLarger) {
			continue
		}
		out = append(out, cd)
		bestLarger = &s
	}
	return out
}

// candidates filters c's offers down to those that hold a worker, or
// explains why none does.
func candidates(c *Catalog, req Request) ([]candidate, error) {
	arch := req.Architecture
	if arch == "" {
		arch = DefaultArchitecture
	}
	var out []candidate
	var fitType, fitArch, fitZone, fitEviction bool
	for _, o := range c.Offers() {
		k := WorkersPerInstance(o.Type, req.Resources)
		if k == 0 {
			continue
		}
		fitType = true
		if !slices.Contains(o.Type.Architectures, arch) {
			continue
		}
		fitArch = true
		if len(req.Zones) > 0 && !slices.Contains(req.Zones, o.Zone) {
			continue
		}
		fitZone = true
		if o.Market == Spot && o.EvictionRate() > req.Resources.MaxEvictionRate {
			continue
		}
		fitEviction = true
		if req.Skip != nil && req.Skip(o) {
			continue
		}
		out = append(out, candidate{offer: o, k: k, cost: priceMicro(o.Price), evict: int64(math.Round(o.EvictionRate() * 1000))})
	}
	if len(out) > 0 {
		return out, nil
	}
	region := c.Region
	if region == "" {
		region = "the catalog"
	}
	var why string
	switch {
	case !fitType:
		why = "no type has enough CPUs, memory, GPUs or GPU memory, or the flags"
	case !fitArch:
		why = fmt.Sprintf("only types of other architectures than %s do", arch)
	case !fitZone:
		why = fmt.Sprintf("none is offered in the zones %s", strings.Join(req.Zones, ", "))
	case !fitEviction:
		why = fmt.Sprintf("only spot offers do, and their eviction rates exceed the limit of %g%%; raise MaxEvictionRate or allow on-demand types", req.Resources.MaxEvictionRate)
	default:
		why = "every offer that does was ruled out (no capacity or quota left)"
	}
	return nil, fmt.Errorf("%w in %s for a worker of %s: %s", ErrNoFit, region, req.Resources, why)
}

func priceMicro(p float64) int64 { return int64(math.Round(p * 1e6)) }
