package ec2alloc_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/ec2alloc"
)

const gib = 1 << 30

// small is a hand-made catalog for the table tests; prices are invented.
func small() *ec2alloc.Catalog {
	x86 := []string{"x86_64"}
	z := []string{"us-east-2a"}
	return &ec2alloc.Catalog{Region: "us-east-2", Types: []ec2alloc.InstanceType{
		{Name: "c.large", VCPU: 2, MemoryBytes: 4 * gib, Architectures: x86, Flags: []string{"intel", "avx2"}, Zones: z, OnDemandPrice: 0.085},
		{Name: "m.large", VCPU: 2, MemoryBytes: 8 * gib, Architectures: x86, Flags: []string{"intel", "avx2", "avx512"}, Zones: z, OnDemandPrice: 0.096},
		{Name: "m.2xlarge", VCPU: 8, MemoryBytes: 32 * gib, Architectures: x86, Flags: []string{"intel", "avx2", "avx512"}, Zones: z, OnDemandPrice: 0.384},
		{Name: "r.large", VCPU: 2, MemoryBytes: 16 * gib, Architectures: x86, Flags: []string{"amd_cpu", "avx2"}, Zones: z, OnDemandPrice: 0.126},
		{Name: "g.xlarge", VCPU: 4, MemoryBytes: 16 * gib, Architectures: x86, Flags: []string{"intel", "avx2", "nvidia"},
			GPUs: 1, GPUName: "T4", GPUManufacturer: "NVIDIA", GPUMemoryBytes: 16 * gib, Zones: z, OnDemandPrice: 0.526},
		{Name: "g5.xlarge", VCPU: 4, MemoryBytes: 16 * gib, Architectures: x86, Flags: []string{"amd_cpu", "avx2", "nvidia"},
			GPUs: 1, GPUName: "A10G", GPUManufacturer: "NVIDIA", GPUMemoryBytes: 24 * gib, Zones: z, OnDemandPrice: 1.006},
		{Name: "a.large", VCPU: 2, MemoryBytes: 8 * gib, Architectures: []string{"arm64"}, Zones: z, OnDemandPrice: 0.01},
	}}
}

func withSpot(c *ec2alloc.Catalog, name string, price float64, in ec2alloc.Interruption) *ec2alloc.Catalog {
	for i := range c.Types {
		if c.Types[i].Name == name {
			c.Types[i].SpotPrices = map[string]float64{"us-east-2a": price}
			c.Types[i].Interruption = in
		}
	}
	return c
}

// names lists the chosen instances as "type/market×workers".
func names(ch ec2alloc.Choice) string {
	var parts []string
	for _, in := range ch.Instances {
		parts = append(parts, in.Offer.Type.Name+"/"+string(in.Offer.Market)+"×"+itoa(in.Workers))
	}
	return strings.Join(parts, " ")
}

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}

func TestChoose(t *testing.T) {
	res := func(cpu, memGiB float64) driver.Resources {
		return driver.Resources{LogicalCPU: cpu, MemoryBytes: int64(memGiB * gib), MaxEvictionRate: 80}
	}
	tests := []struct {
		name    string
		catalog *ec2alloc.Catalog
		req     ec2alloc.Request
		want    string
	}{
		{"the cheapest type that fits wins", small(),
			ec2alloc.Request{Resources: res(1, 2), Workers: 1}, "c.large/on-demand×1"},
		{"memory rules out the cheapest type", small(),
			ec2alloc.Request{Resources: res(1, 6), Workers: 1}, "m.large/on-demand×1"},
		{"a GPU request forces a GPU type", small(),
			ec2alloc.Request{Resources: driver.Resources{LogicalCPU: 1, GPUs: 1, MaxEvictionRate: 80}, Workers: 1}, "g.xlarge/on-demand×1"},
		{"GPU memory per GPU forces the bigger GPU", small(),
			ec2alloc.Request{Resources: driver.Resources{LogicalCPU: 1, GPUs: 1, GPUMemoryBytes: 20 * gib, MaxEvictionRate: 80}, Workers: 1}, "g5.xlarge/on-demand×1"},
		{"half a GPU each puts two workers on one GPU", small(),
			ec2alloc.Request{Resources: driver.Resources{LogicalCPU: 1, GPUs: 0.5, MaxEvictionRate: 80}, Workers: 2}, "g.xlarge/on-demand×2"},
		{"packing by CPU: two workers share each two-CPU instance", small(),
			ec2alloc.Request{Resources: res(1, 1), Workers: 4}, "c.large/on-demand×2 c.large/on-demand×2"},
		{"packing by memory: memory, not CPUs, limits workers per instance", small(),
			ec2alloc.Request{Resources: res(0.5, 7), Workers: 4}, "r.large/on-demand×2 r.large/on-demand×2"},
		{"a cheap spot offer within the eviction limit wins", withSpot(small(), "c.large", 0.03, ec2alloc.Interruption5To10),
			ec2alloc.Request{Resources: res(1, 2), Workers: 1}, "c.large/spot×1"},
		{"the eviction limit forces a pricier type", withSpot(withSpot(small(), "c.large", 0.03, ec2alloc.InterruptionOver20), "m.large", 0.04, ec2alloc.InterruptionUnder5),
			ec2alloc.Request{Resources: driver.Resources{LogicalCPU: 1, MaxEvictionRate: 10}, Workers: 1}, "m.large/spot×1"},
		{"on demand only refuses spot", withSpot(small(), "c.large", 0.03, ec2alloc.InterruptionUnder5),
			ec2alloc.Request{Resources: driver.Resources{LogicalCPU: 1}, Workers: 1}, "c.large/on-demand×1"},
		{"an unknown interruption range counts as 80%", withSpot(small(), "c.large", 0.03, ec2alloc.InterruptionUnknown),
			ec2alloc.Request{Resources: driver.Resources{LogicalCPU: 1, MaxEvictionRate: 79}, Workers: 1}, "c.large/on-demand×1"},
		{"equal price: the lowest eviction rate wins", withSpot(withSpot(small(), "c.large", 0.05, ec2alloc.Interruption15To20), "m.large", 0.05, ec2alloc.Interruption5To10),
			ec2alloc.Request{Resources: res(1, 2), Workers: 1}, "m.large/spot×1"},
		{"a required flag rules out types without it", small(),
			ec2alloc.Request{Resources: driver.Resources{LogicalCPU: 1, Flags: []string{"avx512"}, MaxEvictionRate: 80}, Workers: 1}, "m.large/on-demand×1"},
		{"an arm64 request takes the arm64 type", small(),
			ec2alloc.Request{Resources: res(1, 1), Workers: 1, Architecture: "arm64"}, "a.large/on-demand×1"},
		{"skipped offers are not chosen", small(),
			ec2alloc.Request{Resources: res(1, 2), Workers: 1, Skip: func(o ec2alloc.Offer) bool { return o.Type.Name == "c.large" }}, "m.large/on-demand×1"},
		{"no workers chooses nothing", small(), ec2alloc.Request{Resources: res(1, 1)}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch, err := ec2alloc.Choose(tt.catalog, tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if got := names(ch); got != tt.want {
				t.Errorf("chose %q, want %q", got, tt.want)
			}
		})
	}
}

func TestChooseBeatsGreedyPricePerWorker(t *testing.T) {
	// The reference takes the best price per worker first: for 4 workers
	// that is one "three" (3 workers, $3) and then one "two" for the
	// last worker, $5.10 in all; two "two"s hold them for $4.20.
	x86 := []string{"x86_64"}
	c := &ec2alloc.Catalog{Types: []ec2alloc.InstanceType{
		{Name: "three", VCPU: 3, MemoryBytes: 3 * gib, Architectures: x86, OnDemandPrice: 3},
		{Name: "two", VCPU: 2, MemoryBytes: 2 * gib, Architectures: x86, OnDemandPrice: 2.1},
	}}
	ch, err := ec2alloc.Choose(c, ec2alloc.Request{Resources: driver.Resources{LogicalCPU: 1}, Workers: 4})
	if err != nil {
		t.Fatal(err)
	}
	if got := names(ch); got != "two/on-demand×2 two/on-demand×2" || ch.Price != 4.2 {
		t.Errorf("chose %q at $%g, want two \"two\"s at $4.2", got, ch.Price)
	}
}

func TestChooseManyWorkers(t *testing.T) {
	ch, err := ec2alloc.Choose(small(), ec2alloc.Request{Resources: driver.Resources{LogicalCPU: 1}, Workers: 100001})
	if err != nil {
		t.Fatal(err)
	}
	placed := 0
	for _, in := range ch.Instances {
		placed += in.Workers
		if in.Workers > ec2alloc.WorkersPerInstance(in.Offer.Type, driver.Resources{LogicalCPU: 1}) {
			t.Fatalf("%d workers on a %s", in.Workers, in.Offer.Type.Name)
		}
	}
	if placed != 100001 {
		t.Errorf("placed %d workers, want 100001", placed)
	}
	// c.large holds 2 for $0.085: 50001 of them is the optimum.
	if want := 50001 * 0.085; ch.Price < want-1e-6 || ch.Price > want+1e-6 {
		t.Errorf("price $%g, want $%g", ch.Price, want)
	}
}

func TestChooseNoFit(t *testing.T) {
	tests := []struct {
		name    string
		catalog *ec2alloc.Catalog
		req     ec2alloc.Request
		want    string
	}{
		{"too much memory", small(), ec2alloc.Request{Resources: driver.Resources{LogicalCPU: 1, MemoryBytes: 1 << 50}, Workers: 1}, "no type has enough"},
		{"an unknown flag", small(), ec2alloc.Request{Resources: driver.Resources{LogicalCPU: 1, Flags: []string{"quantum"}}, Workers: 1}, "no type has enough"},
		{"another architecture", small(), ec2alloc.Request{Resources: driver.Resources{LogicalCPU: 1}, Workers: 1, Architecture: "riscv"}, "other architectures"},
		{"a zone with no offer", small(), ec2alloc.Request{Resources: driver.Resources{LogicalCPU: 1}, Workers: 1, Zones: []string{"us-east-2c"}}, "zones us-east-2c"},
		{"spot only, above the eviction limit",
			&ec2alloc.Catalog{Types: []ec2alloc.InstanceType{{Name: "s", VCPU: 2, MemoryBytes: gib, Architectures: []string{"x86_64"},
				SpotPrices: map[string]float64{"z": 0.01}, Interruption: ec2alloc.InterruptionOver20}}},
			ec2alloc.Request{Resources: driver.Resources{LogicalCPU: 1, MaxEvictionRate: 20}, Workers: 1}, "raise MaxEvictionRate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ec2alloc.Choose(tt.catalog, tt.req)
			if !errors.Is(err, ec2alloc.ErrNoFit) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want ErrNoFit saying %q", err, tt.want)
			}
		})
	}
}
