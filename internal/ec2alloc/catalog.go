package ec2alloc

import (
	"cmp"
	"maps"
	"slices"
)

// Market says how an instance is bought.
type Market string

// The markets.
const (
	OnDemand Market = "on-demand"
	Spot     Market = "spot"
)

// Interruption is a spot interruption range of the Spot Instance Advisor:
// how often, in the last month, AWS took back spot instances of a type.
// The zero value is unknown, taken as the reference's 80%.
type Interruption int8

// The Spot Instance Advisor's ranges, in its order ("r" 0 to 4 in its
// data).
const (
	InterruptionUnknown Interruption = iota
	InterruptionUnder5
	Interruption5To10
	Interruption10To15
	Interruption15To20
	InterruptionOver20
)

// UnknownEvictionRate is the eviction rate assumed for a spot type the
// advisor does not list, as the reference does.
const UnknownEvictionRate = 80

// Rate returns the eviction rate, in percent, that stands for the range
// when it is compared with a request's maximum: the middle of the range
// (2.5, 7.5, 12.5, 17.5, and 60 for "over 20%", halfway to 100), as the
// reference computes it, and [UnknownEvictionRate] when unknown.
func (i Interruption) Rate() float64 {
	switch i {
	case InterruptionUnder5:
		return 2.5
	case Interruption5To10:
		return 7.5
	case Interruption10To15:
		return 12.5
	case Interruption15To20:
		return 17.5
	case InterruptionOver20:
		return 60
	}
	return UnknownEvictionRate
}

// InstanceType is one EC2 instance type of a region, with its prices.
type InstanceType struct {
	Name          string   // "m6i.large"
	VCPU          int      // logical CPUs
	MemoryBytes   int64    // memory
	Architectures []string // AWS names: "x86_64", "arm64", ...
	// Flags are the CPU and GPU features requests can name in
	// Resources.Flags: "intel", "amd_cpu", "avx", "avx2", "avx512",
	// "intel_deep_learning_boost", "nvidia", "amd_gpu".
	Flags []string

	GPUs            int    // number of GPUs, 0 for none
	GPUName         string // "T4", "A100", ...
	GPUManufacturer string // "NVIDIA", "AMD", ...
	GPUMemoryBytes  int64  // memory of each GPU

	// Zones are the availability zones that offer the type; empty means
	// not known, and the offers carry no zone.
	Zones []string
	// OnDemandPrice is the on-demand price in USD per hour; 0 means none
	// is known, and the type is not offered on demand.
	OnDemandPrice float64
	// SpotPrices maps an availability zone to the latest spot price
	// there, in USD per hour. A zone missing has no spot offer.
	SpotPrices map[string]float64
	// Interruption is the type's spot interruption range.
	Interruption Interruption
}

// Catalog is a region's instance types.
type Catalog struct {
	Region string
	Types  []InstanceType
}

// Offer is one way to buy an instance: a type, a market and a zone.
type Offer struct {
	Type   *InstanceType
	Market Market
	Zone   string  // "" when the type's zones are not known
	Price  float64 // USD per hour
}

// EvictionRate is the offer's eviction rate in percent: 0 on demand,
// the type's interruption range's [Interruption.Rate] on spot.
func (o Offer) EvictionRate() float64 {
	if o.Market == OnDemand {
		return 0
	}
	return o.Type.Interruption.Rate()
}

// Offers lists every offer of the catalog: on demand in each zone of a
// type that has an on-demand price, and spot in each zone with a spot
// price. The order is stable: by type name, market, zone.
func (c *Catalog) Offers() []Offer {
	var out []Offer
	for i := range c.Types {
		t := &c.Types[i]
		if t.OnDemandPrice > 0 {
			zones := t.Zones
			if len(zones) == 0 {
				zones = []string{""}
			}
			for _, z := range zones {
				out = append(out, Offer{Type: t, Market: OnDemand, Zone: z, Price: t.OnDemandPrice})
			}
		}
		for _, z := range slices.Sorted(maps.Keys(t.SpotPrices)) {
			if p := t.SpotPrices[z]; p > 0 {
				out = append(out, Offer{Type: t, Market: Spot, Zone: z, Price: p})
			}
		}
	}
	slices.SortStableFunc(out, func(a, b Offer) int {
		if c := cmp.Compare(a.Type.Name, b.Type.Name); c != 0 {
			return c
		}
		if c := cmp.Compare(string(a.Market), string(b.Market)); c != 0 {
			return c
		}
		return cmp.Compare(a.Zone, b.Zone)
	})
	return out
}
