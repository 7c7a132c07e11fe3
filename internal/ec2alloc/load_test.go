package ec2alloc

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/pricing"
)

func TestParseSpotAdvisor(t *testing.T) {
	doc := `{"ranges":[{"index":0,"label":"<5%","max":5}],
	  "spot_advisor":{"us-east-2":{"Linux":{"m5.large":{"s":70,"r":0},"c5.large":{"s":60,"r":4},"odd.large":{"s":1,"r":9}},
	                                "Windows":{"m5.large":{"s":70,"r":3}}},
	                  "eu-west-1":{"Linux":{"m5.large":{"s":70,"r":2}}}}}`
	got, err := ParseSpotAdvisor(strings.NewReader(doc), "us-east-2")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["m5.large"] != InterruptionUnder5 || got["c5.large"] != InterruptionOver20 {
		t.Errorf("got %v, want m5.large under 5%% and c5.large over 20%% (Linux, us-east-2 only; r out of range dropped)", got)
	}
	if _, err := ParseSpotAdvisor(strings.NewReader("<html>"), "us-east-2"); err == nil || !strings.Contains(err.Error(), "Spot Instance Advisor") {
		t.Errorf("a document that is not JSON: %v", err)
	}
}

func TestParseProduct(t *testing.T) {
	// The shape of a real Pricing API price list item, cut down.
	doc := `{"product":{"productFamily":"Compute Instance","attributes":{"instanceType":"c5.large",
	    "processorFeatures":"Intel AVX; Intel AVX2; Intel AVX512; Intel Deep Learning Boost; Intel Turbo"}},
	  "terms":{"OnDemand":{"X.JRTCKXETXF":{"priceDimensions":{"X.JRTCKXETXF.6YS6EN2CT7":
	    {"unit":"Hrs","pricePerUnit":{"USD":"0.0850000000"}}}}}}}`
	name, price, flags, err := parseProduct(doc)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(flags)
	if name != "c5.large" || price != 0.085 || !slices.Equal(slices.Compact(flags), []string{"avx", "avx2", "avx512", "intel_deep_learning_boost"}) {
		t.Errorf("got %q $%g %v", name, price, flags)
	}
	if _, _, _, err := parseProduct("{"); err == nil {
		t.Error("a broken item parsed")
	}
}

// oneType is an EC2 API with one instance type and nothing else.
type oneType struct{}

func (oneType) DescribeInstanceTypes(context.Context, *ec2.DescribeInstanceTypesInput, ...func(*ec2.Options)) (*ec2.DescribeInstanceTypesOutput, error) {
	return &ec2.DescribeInstanceTypesOutput{InstanceTypes: []ec2types.InstanceTypeInfo{{InstanceType: "m5.large"}}}, nil
}

func (oneType) DescribeInstanceTypeOfferings(context.Context, *ec2.DescribeInstanceTypeOfferingsInput, ...func(*ec2.Options)) (*ec2.DescribeInstanceTypeOfferingsOutput, error) {
	return &ec2.DescribeInstanceTypeOfferingsOutput{}, nil
}

func (oneType) DescribeSpotPriceHistory(context.Context, *ec2.DescribeSpotPriceHistoryInput, ...func(*ec2.Options)) (*ec2.DescribeSpotPriceHistoryOutput, error) {
	return &ec2.DescribeSpotPriceHistoryOutput{}, nil
}

func TestLoadCatalogNamesTheFailingCall(t *testing.T) {
	// A loopback port that nothing listens on any more.
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	p := pricing.NewFromConfig(aws.Config{
		Region: "us-east-1", BaseEndpoint: aws.String(closed.URL), RetryMaxAttempts: 1,
		Credentials: credentials.NewStaticCredentialsProvider("testing", "testing", ""),
	})
	_, err := LoadCatalog(t.Context(), LoadOptions{Region: "us-east-2", EC2: oneType{}, Pricing: p})
	if err == nil || !strings.Contains(err.Error(), "Pricing GetProducts") || !strings.Contains(err.Error(), "us-east-2") {
		t.Errorf("got %v, want an error naming Pricing GetProducts and the region", err)
	}
	if _, err := LoadCatalog(t.Context(), LoadOptions{Region: "us-east-2"}); err == nil {
		t.Error("LoadCatalog without clients did not fail")
	}
}
