// Package ec2alloctest is the price side of the EC2 test bench: moto
// serves real instance types but no Pricing API, a constant spot price and
// no Spot Instance Advisor data, so this package makes up a deterministic
// price table from each type's size (the same every run, unrelated to
// AWS's prices) and serves it the way AWS does: a Pricing API fake on a
// loopback port and the advisor's JSON document.
package ec2alloctest

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/meadowrun-go/meadowrun/internal/ec2alloc"
)

// Type is what the made-up prices depend on.
type Type struct {
	Name      string
	VCPU      int
	MemoryMiB int64
	GPUs      int
	GPUName   string
	Intel     bool
}

func hash(parts ...string) uint32 {
	h := fnv.New32a()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return h.Sum32()
}

func round4(p float64) float64 { return math.Round(p*1e4) / 1e4 }

var gpuHourly = map[string]float64{"T4": 0.35, "T4g": 0.3, "A10G": 0.6, "L4": 0.45, "L40S": 1.2, "A100": 2.5, "H100": 4, "H200": 5, "V100": 1.5, "M60": 0.4, "K80": 0.2}

// OnDemandPrice is t's made-up on-demand price in USD per hour: linear in
// CPUs, memory and GPUs, give or take 10% per family.
func OnDemandPrice(t Type) float64 {
	p := 0.0245*float64(t.VCPU) + 0.0031*float64(t.MemoryMiB)/1024
	if t.GPUs > 0 {
		g, ok := gpuHourly[t.GPUName]
		if !ok {
			g = 0.8
		}
		p += g * float64(t.GPUs)
	}
	family, _, _ := strings.Cut(t.Name, ".")
	p *= 1 + float64(int(hash(family)%21)-10)/100
	return max(round4(p), 0.0001)
}

// SpotPrice is the made-up spot price of a type in a zone: 25% to 75% of
// its on-demand price.
func SpotPrice(name string, onDemand float64, zone string) float64 {
	return max(round4(onDemand*(0.25+float64(hash(name, zone)%51)/100)), 0.0001)
}

// Interruption is the made-up interruption range of a type; one type in
// six is unknown to the advisor.
func Interruption(name string) ec2alloc.Interruption {
	return ec2alloc.Interruption(hash("r", name) % 6)
}

// Features is the made-up processorFeatures attribute of a type.
func Features(t Type) string {
	switch {
	case !t.Intel:
		return "AVX; AVX2"
	case hash("f", t.Name)%2 == 0:
		return "Intel AVX; Intel AVX2; Intel AVX512; Intel Deep Learning Boost; Intel Turbo"
	}
	return "Intel AVX; Intel AVX2; Intel Turbo"
}

// ApplySpotPrices replaces c's spot prices and interruption ranges with
// the made-up ones, in every zone of each type that supports spot (that
// has a spot price already).
func ApplySpotPrices(c *ec2alloc.Catalog) {
	for i := range c.Types {
		t := &c.Types[i]
		t.Interruption = Interruption(t.Name)
		for z := range t.SpotPrices {
			t.SpotPrices[z] = SpotPrice(t.Name, t.OnDemandPrice, z)
		}
	}
}

// ProductJSON is the Pricing API's price list item for t in region.
func ProductJSON(t Type, region string) string {
	item := map[string]any{
		"product": map[string]any{
			"productFamily": "Compute Instance",
			"attributes": map[string]string{
				"instanceType": t.Name, "regionCode": region, "operatingSystem": "Linux",
				"tenancy": "Shared", "capacitystatus": "Used", "preInstalledSw": "NA",
				"vcpu": strconv.Itoa(t.VCPU), "processorFeatures": Features(t),
			},
		},
		"terms": map[string]any{"OnDemand": map[string]any{"T1": map[string]any{"priceDimensions": map[string]any{
			"D1": map[string]any{"unit": "Hrs", "pricePerUnit": map[string]string{"USD": strconv.FormatFloat(OnDemandPrice(t), 'f', -1, 64)}},
		}}}},
	}
	b, _ := json.Marshal(item)
	return string(b)
}

// PricingServer serves GetProducts for types in region, 100 items a
// page, on a loopback port until t ends; point a pricing client's
// BaseEndpoint at its URL. Requests for another region, service or
// operating system get no items.
func PricingServer(t testing.TB, region string, types []Type) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if target := r.Header.Get("X-Amz-Target"); target != "AWSPriceListService.GetProducts" {
			http.Error(w, fmt.Sprintf(`{"__type":"InvalidParameterException","message":"unknown target %q"}`, target), http.StatusBadRequest)
			return
		}
		var in struct {
			ServiceCode string
			Filters     []struct{ Field, Value string }
			NextToken   string
		}
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			http.Error(w, `{"__type":"InvalidParameterException"}`, http.StatusBadRequest)
			return
		}
		ok := in.ServiceCode == "AmazonEC2"
		for _, f := range in.Filters {
			switch f.Field {
			case "regionCode":
				ok = ok && f.Value == region
			case "operatingSystem":
				ok = ok && f.Value == "Linux"
			}
		}
		out := struct {
			FormatVersion string
			PriceList     []string
			NextToken     *string `json:",omitempty"`
		}{FormatVersion: "aws_v1", PriceList: []string{}}
		if ok {
			from, _ := strconv.Atoi(in.NextToken)
			to := min(from+100, len(types))
			for _, ty := range types[from:to] {
				out.PriceList = append(out.PriceList, ProductJSON(ty, region))
			}
			if to < len(types) {
				next := strconv.Itoa(to)
				out.NextToken = &next
			}
		}
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		_ = json.NewEncoder(w).Encode(out)
	}))
	t.Cleanup(s.Close)
	return s
}

// AdvisorJSON is a Spot Instance Advisor document giving each named type
// its made-up [Interruption] in region (types with an unknown range are
// left out, as the advisor leaves out types it has no data for).
func AdvisorJSON(region string, names []string) string {
	linux := map[string]any{}
	for _, n := range names {
		if r := Interruption(n); r != ec2alloc.InterruptionUnknown {
			linux[n] = map[string]int{"s": 50, "r": int(r) - 1}
		}
	}
	b, _ := json.Marshal(map[string]any{
		"ranges":       []map[string]any{{"index": 0, "label": "<5%", "max": 5}, {"index": 4, "label": ">20%", "max": 100}},
		"spot_advisor": map[string]any{region: map[string]any{"Linux": linux}},
	})
	return string(b)
}

// DescribeTypes lists the instance types client's EC2 (moto) describes,
// as the Pricing fake takes them.
func DescribeTypes(t testing.TB, client *ec2.Client) []Type {
	t.Helper()
	var types []Type
	p := ec2.NewDescribeInstanceTypesPaginator(client, &ec2.DescribeInstanceTypesInput{})
	for p.HasMorePages() {
		page, err := p.NextPage(t.Context())
		if err != nil {
			t.Fatalf("DescribeInstanceTypes: %v", err)
		}
		for _, it := range page.InstanceTypes {
			ty := Type{Name: string(it.InstanceType), VCPU: int(aws.ToInt32(it.VCpuInfo.DefaultVCpus)), MemoryMiB: aws.ToInt64(it.MemoryInfo.SizeInMiB)}
			if it.ProcessorInfo != nil {
				ty.Intel = aws.ToString(it.ProcessorInfo.Manufacturer) == "Intel"
			}
			if it.GpuInfo != nil && len(it.GpuInfo.Gpus) > 0 {
				ty.GPUs = int(aws.ToInt32(it.GpuInfo.Gpus[0].Count))
				ty.GPUName = aws.ToString(it.GpuInfo.Gpus[0].Name)
			}
			types = append(types, ty)
		}
	}
	return types
}
