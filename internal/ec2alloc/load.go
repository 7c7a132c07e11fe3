package ec2alloc

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/pricing"
	pricingtypes "github.com/aws/aws-sdk-go-v2/service/pricing/types"
)

// EC2API is the part of the EC2 client [LoadCatalog] calls;
// *ec2.Client implements it.
type EC2API interface {
	ec2.DescribeInstanceTypesAPIClient
	ec2.DescribeInstanceTypeOfferingsAPIClient
	ec2.DescribeSpotPriceHistoryAPIClient
}

// PricingAPI is the part of the AWS Pricing client [LoadCatalog] calls;
// *pricing.Client implements it. The Pricing API answers only in a few
// regions (us-east-1 among them) whatever region it prices.
type PricingAPI interface {
	pricing.GetProductsAPIClient
}

// LoadOptions say where [LoadCatalog] reads from. The zero value of each
// optional field is valid.
type LoadOptions struct {
	// Region is the region to list; required.
	Region string
	// EC2 is a client for Region; required.
	EC2 EC2API
	// Pricing gives on-demand prices; required.
	Pricing PricingAPI
	// SpotAdvisor, when set, is the Spot Instance Advisor's data (the
	// JSON document spot-advisor-data.json, fetched by the caller) for
	// the interruption ranges; without it every spot type's range is
	// unknown (80%).
	SpotAdvisor io.Reader
	// Now is the clock for the spot price window; nil means time.Now.
	Now func() time.Time
}

// LoadCatalog lists Region's instance types with their prices:
//
//   - DescribeInstanceTypes gives CPUs, memory, GPUs, architectures and the
//     CPU maker (flags "intel", "amd_cpu"; GPU makers give "nvidia",
//     "amd_gpu");
//   - DescribeInstanceTypeOfferings gives the zones of each type;
//   - the Pricing API's GetProducts (Linux, shared tenancy, no
//     preinstalled software, capacity status "Used") gives on-demand
//     prices and the CPU features ("avx", "avx2", "avx512",
//     "intel_deep_learning_boost");
//   - DescribeSpotPriceHistory over the last hour gives the latest spot
//     price of each type in each zone (types whose usage classes exclude
//     spot get none);
//   - the Spot Instance Advisor's data gives interruption ranges.
//
// Types without an on-demand price are kept (they may still be bought on
// spot). Errors name the call that failed.
func LoadCatalog(ctx context.Context, opts LoadOptions) (*Catalog, error) {
	if opts.Region == "" || opts.EC2 == nil || opts.Pricing == nil {
		return nil, fmt.Errorf("ec2alloc: LoadCatalog needs Region, EC2 and Pricing")
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	byName := map[string]*InstanceType{}
	spotOK := map[string]bool{}
	types := ec2.NewDescribeInstanceTypesPaginator(opts.EC2, &ec2.DescribeInstanceTypesInput{})
	for types.HasMorePages() {
		page, err := types.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("ec2alloc: listing instance types in %s: DescribeInstanceTypes: %w", opts.Region, err)
		}
		for _, info := range page.InstanceTypes {
			t := fromInfo(info)
			byName[t.Name] = t
			spotOK[t.Name] = slices.Contains(info.SupportedUsageClasses, ec2types.UsageClassTypeSpot)
		}
	}

	offerings := ec2.NewDescribeInstanceTypeOfferingsPaginator(opts.EC2, &ec2.DescribeInstanceTypeOfferingsInput{
		LocationType: ec2types.LocationTypeAvailabilityZone,
	})
	for offerings.HasMorePages() {
		page, err := offerings.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("ec2alloc: listing the zones of instance types in %s: DescribeInstanceTypeOfferings: %w", opts.Region, err)
		}
		for _, o := range page.InstanceTypeOfferings {
			if t := byName[string(o.InstanceType)]; t != nil && o.Location != nil {
				t.Zones = append(t.Zones, *o.Location)
			}
		}
	}

	if err := loadOnDemand(ctx, opts, byName); err != nil {
		return nil, err
	}

	type zoneKey struct{ typ, zone string }
	latest := map[zoneKey]time.Time{}
	spot := ec2.NewDescribeSpotPriceHistoryPaginator(opts.EC2, &ec2.DescribeSpotPriceHistoryInput{
		StartTime:           aws.Time(now().Add(-time.Hour)),
		ProductDescriptions: []string{"Linux/UNIX"},
	})
	for spot.HasMorePages() {
		page, err := spot.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("ec2alloc: reading spot prices in %s: DescribeSpotPriceHistory: %w", opts.Region, err)
		}
		for _, p := range page.SpotPriceHistory {
			t := byName[string(p.InstanceType)]
			if t == nil || !spotOK[t.Name] || p.AvailabilityZone == nil || p.SpotPrice == nil {
				continue
			}
			price, err := strconv.ParseFloat(*p.SpotPrice, 64)
			if err != nil || price <= 0 {
				continue
			}
			k := zoneKey{t.Name, *p.AvailabilityZone}
			at := aws.ToTime(p.Timestamp)
			if old, seen := latest[k]; seen && at.Before(old) {
				continue
			}
			latest[k] = at
			if t.SpotPrices == nil {
				t.SpotPrices = map[string]float64{}
			}
			t.SpotPrices[k.zone] = price
		}
	}

	if opts.SpotAdvisor != nil {
		ranges, err := ParseSpotAdvisor(opts.SpotAdvisor, opts.Region)
		if err != nil {
			return nil, err
		}
		for name, r := range ranges {
			if t := byName[name]; t != nil {
				t.Interruption = r
			}
		}
	}

	c := &Catalog{Region: opts.Region}
	for _, t := range byName {
		slices.Sort(t.Zones)
		slices.Sort(t.Flags)
		c.Types = append(c.Types, *t)
	}
	slices.SortFunc(c.Types, func(a, b InstanceType) int { return cmp.Compare(a.Name, b.Name) })
	return c, nil
}

// fromInfo converts DescribeInstanceTypes' answer for one type.
func fromInfo(info ec2types.InstanceTypeInfo) *InstanceType {
	t := &InstanceType{Name: string(info.InstanceType)}
	if info.VCpuInfo != nil {
		t.VCPU = int(aws.ToInt32(info.VCpuInfo.DefaultVCpus))
	}
	if info.MemoryInfo != nil {
		t.MemoryBytes = aws.ToInt64(info.MemoryInfo.SizeInMiB) << 20
	}
	if p := info.ProcessorInfo; p != nil {
		for _, a := range p.SupportedArchitectures {
			t.Architectures = append(t.Architectures, string(a))
		}
		switch strings.ToLower(aws.ToString(p.Manufacturer)) {
		case "intel":
			t.Flags = append(t.Flags, "intel")
		case "amd":
			t.Flags = append(t.Flags, "amd_cpu")
		}
	}
	if g := info.GpuInfo; g != nil {
		for _, d := range g.Gpus {
			t.GPUs += int(aws.ToInt32(d.Count))
			t.GPUName = aws.ToString(d.Name)
			t.GPUManufacturer = aws.ToString(d.Manufacturer)
			if d.MemoryInfo != nil {
				t.GPUMemoryBytes = int64(aws.ToInt32(d.MemoryInfo.SizeInMiB)) << 20
			}
		}
		switch strings.ToLower(t.GPUManufacturer) {
		case "nvidia":
			t.Flags = append(t.Flags, "nvidia")
		case "amd":
			t.Flags = append(t.Flags, "amd_gpu")
		}
	}
	return t
}

// loadOnDemand fills in on-demand prices and CPU features from the
// Pricing API.
func loadOnDemand(ctx context.Context, opts LoadOptions, byName map[string]*InstanceType) error {
	match := func(field, value string) pricingtypes.Filter {
		return pricingtypes.Filter{Type: pricingtypes.FilterTypeTermMatch, Field: aws.String(field), Value: aws.String(value)}
	}
	products := pricing.NewGetProductsPaginator(opts.Pricing, &pricing.GetProductsInput{
		ServiceCode:   aws.String("AmazonEC2"),
		FormatVersion: aws.String("aws_v1"),
		Filters: []pricingtypes.Filter{
			match("regionCode", opts.Region),
			match("operatingSystem", "Linux"),
			match("tenancy", "Shared"),
			match("capacitystatus", "Used"),
			match("preInstalledSw", "NA"),
		},
	})
	for products.HasMorePages() {
		page, err := products.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("ec2alloc: reading on-demand prices for %s: Pricing GetProducts: %w", opts.Region, err)
		}
		for _, doc := range page.PriceList {
			name, price, features, err := parseProduct(doc)
			if err != nil {
				return fmt.Errorf("ec2alloc: reading on-demand prices for %s: %w", opts.Region, err)
			}
			t := byName[name]
			if t == nil || price <= 0 {
				continue
			}
			if t.OnDemandPrice == 0 || price < t.OnDemandPrice {
				t.OnDemandPrice = price
			}
			for _, f := range features {
				if !slices.Contains(t.Flags, f) {
					t.Flags = append(t.Flags, f)
				}
			}
		}
	}
	return nil
}

// product is the part of a Pricing API price list item that matters here.
type product struct {
	Product struct {
		Attributes struct {
			InstanceType      string `json:"instanceType"`
			ProcessorFeatures string `json:"processorFeatures"`
		} `json:"attributes"`
	} `json:"product"`
	Terms struct {
		OnDemand map[string]struct {
			PriceDimensions map[string]struct {
				Unit         string            `json:"unit"`
				PricePerUnit map[string]string `json:"pricePerUnit"`
			} `json:"priceDimensions"`
		} `json:"OnDemand"`
	} `json:"terms"`
}

// parseProduct reads one price list item: the type, its hourly USD price
// (0 when it has none) and the flags its processor features give.
func parseProduct(doc string) (name string, price float64, flags []string, err error) {
	var p product
	if err := json.Unmarshal([]byte(doc), &p); err != nil {
		return "", 0, nil, fmt.Errorf("a price list item is not the JSON expected: %w", err)
	}
	for _, term := range p.Terms.OnDemand {
		for _, dim := range term.PriceDimensions {
			if dim.Unit != "Hrs" {
				continue
			}
			if v, err := strconv.ParseFloat(dim.PricePerUnit["USD"], 64); err == nil && v > 0 {
				price = v
			}
		}
	}
	feats := strings.ToLower(p.Product.Attributes.ProcessorFeatures)
	for _, f := range strings.Split(feats, ";") {
		switch strings.TrimSpace(f) {
		case "intel avx", "avx":
			flags = append(flags, "avx")
		case "intel avx2", "avx2", "amd avx2":
			flags = append(flags, "avx2", "avx")
		case "intel avx512", "avx512", "amd avx512":
			flags = append(flags, "avx512")
		case "intel deep learning boost":
			flags = append(flags, "intel_deep_learning_boost")
		}
	}
	return p.Product.Attributes.InstanceType, price, flags, nil
}

// ParseSpotAdvisor reads the Spot Instance Advisor's data
// (spot-advisor-data.json) and returns the interruption range of each
// Linux instance type in region.
func ParseSpotAdvisor(r io.Reader, region string) (map[string]Interruption, error) {
	var doc struct {
		SpotAdvisor map[string]map[string]map[string]struct {
			R *int `json:"r"`
		} `json:"spot_advisor"`
	}
	if err := json.NewDecoder(r).Decode(&doc); err != nil {
		return nil, fmt.Errorf("ec2alloc: reading the Spot Instance Advisor's data: %w", err)
	}
	out := map[string]Interruption{}
	for name, e := range doc.SpotAdvisor[region]["Linux"] {
		if e.R != nil && *e.R >= 0 && *e.R <= 4 {
			out[name] = Interruption(*e.R + 1)
		}
	}
	return out, nil
}
