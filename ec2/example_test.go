package ec2_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/ec2"
)

var square = meadowrun.Register("ec2example.Square", func(ctx context.Context, x int) (int, error) {
	return x * x, nil
})

// A map on instances launched on demand (or running ones with room): the
// cheapest type that holds two CPUs and 4 GB per worker, in the first of
// the subnets whose zone has capacity.
func ExampleNewHost() {
	h, err := ec2.NewHost(context.Background(), ec2.AllocEC2Instance{
		Region: "us-east-2", AMI: "ami-0123456789abcdef0",
		Subnets: []string{"subnet-aaa", "subnet-bbb"}, SecurityGroups: []string{"sg-ccc"},
		KeyName: "meadowrun", KeyFile: "/home/me/.ssh/meadowrun.pem",
		IdleTimeout: 10 * time.Minute,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer h.Close()
	squares, err := meadowrun.RunMap(context.Background(), square, []int{1, 2, 3}, h,
		&meadowrun.MapOptions{Options: meadowrun.Options{Resources: &meadowrun.Resources{LogicalCPU: 2, MemoryGB: 4}}})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(squares)
}

// The same host as a URL, for the CLI's --host.
func ExampleURL() {
	fmt.Println(ec2.URL(ec2.AllocEC2Instance{Region: "us-east-2", AMI: "ami-0123456789abcdef0",
		Subnets: []string{"subnet-aaa", "subnet-bbb"}, KeyName: "meadowrun", KeyFile: "/keys/meadowrun.pem"}))
	// Output:
	// ec2://us-east-2?ami=ami-0123456789abcdef0&key=%2Fkeys%2Fmeadowrun.pem&key_name=meadowrun&subnet=subnet-aaa&subnet=subnet-bbb
}
