// Package ec2alloc chooses EC2 instances for a job and books workers on
// them: the part of an EC2 host that needs no machine to exist.
//
// A [Catalog] lists a region's instance types with their CPUs, memory,
// GPUs, architectures, CPU flags, on-demand price, spot price per zone and
// spot interruption range; [LoadCatalog] builds one from
// DescribeInstanceTypes, DescribeInstanceTypeOfferings, the AWS Pricing
// API, DescribeSpotPriceHistory and the Spot Instance Advisor's data.
// [Choose] picks the cheapest set of instances (type, market, zone) that
// holds a number of workers of given resources: an exact optimum, not the
// reference's greedy price per worker, which can cost more when the last
// instance is partly empty.
//
// [Table] is the allocation table in DynamoDB: one item per instance with
// its free capacity and the workers booked on it. Every booking is a
// conditional update, so two clients booking at once never overbook an
// instance; running instances with free capacity are reused before new
// ones are chosen.
package ec2alloc
