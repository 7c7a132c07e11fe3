package ec2alloc_test

import (
	"fmt"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/ec2alloc"
)

// Six workers of one CPU and 3 GiB each: a spot type within the eviction
// limit holds four, and the cheapest way to hold the last two is one
// more small instance, not a second big one.
func ExampleChoose() {
	x86 := []string{"x86_64"}
	catalog := &ec2alloc.Catalog{Region: "us-east-2", Types: []ec2alloc.InstanceType{
		{Name: "m6i.large", VCPU: 2, MemoryBytes: 8 << 30, Architectures: x86, Zones: []string{"us-east-2a"}, OnDemandPrice: 0.096,
			SpotPrices: map[string]float64{"us-east-2a": 0.04}, Interruption: ec2alloc.Interruption5To10},
		{Name: "m6i.xlarge", VCPU: 4, MemoryBytes: 16 << 30, Architectures: x86, Zones: []string{"us-east-2a"}, OnDemandPrice: 0.192,
			SpotPrices: map[string]float64{"us-east-2a": 0.07}, Interruption: ec2alloc.InterruptionUnder5},
	}}
	choice, err := ec2alloc.Choose(catalog, ec2alloc.Request{
		Resources: driver.Resources{LogicalCPU: 1, MemoryBytes: 3 << 30, MaxEvictionRate: 10},
		Workers:   6,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, in := range choice.Instances {
		fmt.Printf("%s %s in %s: %d workers\n", in.Offer.Type.Name, in.Offer.Market, in.Offer.Zone, in.Workers)
	}
	fmt.Printf("$%.2f/h\n", choice.Price)
	// Output:
	// m6i.xlarge spot in us-east-2a: 4 workers
	// m6i.large spot in us-east-2a: 2 workers
	// $0.11/h
}
