package ec2alloc_test

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/pricing"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/ec2alloc"
	"github.com/meadowrun-go/meadowrun/internal/ec2alloc/ec2alloctest"
	"github.com/meadowrun-go/meadowrun/internal/mototest"
)

// motoCatalog loads the catalog of the region moto serves: instance
// types, zones and spot prices from moto, on-demand prices from the
// made-up table of ec2alloctest (moto has no Pricing API), interruption
// ranges from a made-up advisor document.
func motoCatalog(t *testing.T) (*ec2alloc.Catalog, []ec2alloctest.Type) {
	t.Helper()
	ctx := t.Context()
	moto := mototest.Start(t)
	ec2c := ec2.NewFromConfig(moto.Config())
	types := ec2alloctest.DescribeTypes(t, ec2c)
	fake := ec2alloctest.PricingServer(t, mototest.Region, types)
	pcfg := moto.Config()
	pcfg.BaseEndpoint = aws.String(fake.URL)
	var names []string
	for _, ty := range types {
		names = append(names, ty.Name)
	}
	c, err := ec2alloc.LoadCatalog(ctx, ec2alloc.LoadOptions{
		Region:      mototest.Region,
		EC2:         ec2c,
		Pricing:     pricing.NewFromConfig(pcfg),
		SpotAdvisor: strings.NewReader(ec2alloctest.AdvisorJSON(mototest.Region, names)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return c, types
}

func find(c *ec2alloc.Catalog, name string) *ec2alloc.InstanceType {
	for i := range c.Types {
		if c.Types[i].Name == name {
			return &c.Types[i]
		}
	}
	return nil
}

func TestCatalogOnMoto(t *testing.T) {
	c, types := motoCatalog(t)

	t.Run("the loader reads every type, its GPUs, zones and prices", func(t *testing.T) {
		if len(c.Types) != len(types) || len(c.Types) < 500 {
			t.Fatalf("catalog has %d types, moto lists %d", len(c.Types), len(types))
		}
		g := find(c, "g4dn.xlarge")
		if g == nil {
			t.Fatal("no g4dn.xlarge")
		}
		if g.VCPU != 4 || g.MemoryBytes != 16*gib || g.GPUs != 1 || g.GPUName != "T4" || g.GPUMemoryBytes != 16*gib {
			t.Errorf("g4dn.xlarge = %d vCPU, %d B, %d×%s %d B", g.VCPU, g.MemoryBytes, g.GPUs, g.GPUName, g.GPUMemoryBytes)
		}
		for _, f := range []string{"intel", "nvidia", "avx2"} {
			if !slices.Contains(g.Flags, f) {
				t.Errorf("g4dn.xlarge flags %v lack %q", g.Flags, f)
			}
		}
		if !slices.Contains(g.Architectures, "x86_64") || len(g.Zones) == 0 {
			t.Errorf("g4dn.xlarge architectures %v, zones %v", g.Architectures, g.Zones)
		}
		want := ec2alloctest.OnDemandPrice(ec2alloctest.Type{Name: "g4dn.xlarge", VCPU: 4, MemoryMiB: 16384, GPUs: 1, GPUName: "T4", Intel: true})
		if g.OnDemandPrice != want {
			t.Errorf("g4dn.xlarge on demand at $%g, want $%g", g.OnDemandPrice, want)
		}
		// moto answers DescribeSpotPriceHistory with one constant price.
		if len(g.SpotPrices) == 0 || g.SpotPrices[g.Zones[0]] != 0.00001 {
			t.Errorf("g4dn.xlarge spot prices %v, want moto's 0.00001 in each zone", g.SpotPrices)
		}
		if g.Interruption != ec2alloctest.Interruption("g4dn.xlarge") {
			t.Errorf("g4dn.xlarge interruption %d, want %d", g.Interruption, ec2alloctest.Interruption("g4dn.xlarge"))
		}
		if a := find(c, "m7g.large"); a == nil || !slices.Contains(a.Architectures, "arm64") || slices.Contains(a.Flags, "intel") {
			t.Errorf("m7g.large = %+v, want an arm64 type without the intel flag", a)
		}
	})

	ec2alloctest.ApplySpotPrices(c)
	t.Run("Choose finds the brute-force optimum for 100 random requests", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(13, 2026))
		offers := c.Offers()
		zones := []string{}
		for _, o := range offers {
			if o.Zone != "" && !slices.Contains(zones, o.Zone) {
				zones = append(zones, o.Zone)
			}
		}
		pick := func(xs []float64) float64 { return xs[rng.IntN(len(xs))] }
		fits, several := 0, 0
		for i := range 100 {
			req := ec2alloc.Request{Workers: 1 + rng.IntN(12), Resources: driver.Resources{
				LogicalCPU:      pick([]float64{0.5, 1, 1, 2, 4, 8, 16, 48}),
				MemoryBytes:     int64(pick([]float64{0, 0.5, 1, 2, 4, 8, 16, 64, 256}) * gib),
				MaxEvictionRate: pick([]float64{0, 5, 10, 15, 20, 80, 80}),
			}}
			if rng.IntN(4) == 0 {
				req.Resources.GPUs = pick([]float64{0.5, 1, 1, 2, 4, 8})
				req.Resources.GPUMemoryBytes = int64(pick([]float64{0, 0, 8, 16, 24, 40, 80}) * gib)
			}
			if rng.IntN(4) == 0 {
				req.Resources.Flags = []string{[]string{"intel", "amd_cpu", "avx512", "nvidia"}[rng.IntN(4)]}
			}
			if rng.IntN(5) == 0 {
				req.Architecture = "arm64"
			}
			if rng.IntN(4) == 0 {
				req.Zones = []string{zones[rng.IntN(len(zones))]}
			}
			name := fmt.Sprintf("request %d: %d×(%s) arch=%q zones=%v", i, req.Workers, req.Resources, req.Architecture, req.Zones)
			want, ok := bruteForce(offers, req)
			got, err := ec2alloc.Choose(c, req)
			if !ok {
				if !errors.Is(err, ec2alloc.ErrNoFit) {
					t.Errorf("%s: nothing fits, Choose returned %v, %v", name, names(got), err)
				}
				continue
			}
			fits++
			if err != nil {
				t.Errorf("%s: %v; brute force found %+v", name, err, want)
				continue
			}
			placed := 0
			var s bfScore
			for _, in := range got.Instances {
				if k := bruteFit(in.Offer, req); in.Workers > k || in.Workers <= 0 {
					t.Errorf("%s: %d workers on %s/%s, which holds %d", name, in.Workers, in.Offer.Type.Name, in.Offer.Market, k)
				}
				placed += in.Workers
				s = s.add(in.Offer)
			}
			if len(got.Instances) > 1 {
				several++
			}
			if placed != req.Workers {
				t.Errorf("%s: placed %d workers", name, placed)
			}
			if s != want {
				t.Errorf("%s: Choose's %s scores %+v, the optimum %+v", name, names(got), s, want)
			}
		}
		t.Logf("%d of 100 random requests fit some offer; %d of those need several instances", fits, several)
		if fits < 40 {
			t.Errorf("only %d of 100 random requests fit: the generator is too harsh to test much", fits)
		}
	})
}

// bfScore is a set of instances' price (micro-USD), eviction rates
// (thousandths of a percent) and size, compared in that order.
type bfScore struct {
	cost, evict int64
	n           int
}

func (s bfScore) add(o ec2alloc.Offer) bfScore {
	return bfScore{s.cost + int64(math.Round(o.Price*1e6)), s.evict + int64(math.Round(o.EvictionRate()*1000)), s.n + 1}
}

func (s bfScore) less(b bfScore) bool {
	if s.cost != b.cost {
		return s.cost < b.cost
	}
	if s.evict != b.evict {
		return s.evict < b.evict
	}
	return s.n < b.n
}

// bruteFit is how many workers of req fit on o, written out again
// independently of the package, 0 when o is not allowed.
func bruteFit(o ec2alloc.Offer, req ec2alloc.Request) int {
	t, r := o.Type, req.Resources
	arch := req.Architecture
	if arch == "" {
		arch = "x86_64"
	}
	if !slices.Contains(t.Architectures, arch) || len(req.Zones) > 0 && !slices.Contains(req.Zones, o.Zone) {
		return 0
	}
	if o.Market == ec2alloc.Spot && (r.MaxEvictionRate == 0 || t.Interruption.Rate() > r.MaxEvictionRate) {
		return 0
	}
	for _, f := range r.Flags {
		if !slices.Contains(t.Flags, f) {
			return 0
		}
	}
	best := 0
	for k := 1; ; k++ {
		need := float64(k) * r.LogicalCPU
		ok := need <= float64(t.VCPU)+1e-9 && int64(k)*r.MemoryBytes <= t.MemoryBytes
		if r.GPUs >= 1 {
			ok = ok && float64(k)*r.GPUs <= float64(t.GPUs) && r.GPUs*float64(t.GPUMemoryBytes) >= float64(r.GPUMemoryBytes)
		} else if r.GPUs > 0 {
			// k workers on GPUs holding up to per GPU each.
			per := int(1 / r.GPUs)
			if r.GPUMemoryBytes > 0 {
				per = min(per, int(t.GPUMemoryBytes/r.GPUMemoryBytes))
			}
			ok = ok && k <= per*t.GPUs
		}
		if !ok {
			return best
		}
		best = k
	}
}

// bruteForce enumerates every way to cover req.Workers with instances,
// each capacity (capped at the number of workers) taking its best offer,
// and returns the best score.
func bruteForce(offers []ec2alloc.Offer, req ec2alloc.Request) (bfScore, bool) {
	n := req.Workers
	byK := make([]*ec2alloc.Offer, n+1)
	one := func(o ec2alloc.Offer) bfScore { return bfScore{}.add(o) }
	for _, o := range offers {
		k := min(bruteFit(o, req), n)
		if k == 0 {
			continue
		}
		if byK[k] == nil || one(o).less(one(*byK[k])) {
			byK[k] = &o
		}
	}
	var best bfScore
	found := false
	var walk func(maxK, left int, s bfScore)
	walk = func(maxK, left int, s bfScore) {
		if left <= 0 {
			if !found || s.less(best) {
				best, found = s, true
			}
			return
		}
		for k := maxK; k >= 1; k-- {
			if byK[k] != nil {
				walk(k, left-k, s.add(*byK[k]))
			}
		}
	}
	walk(n, n, bfScore{})
	return best, found
}
