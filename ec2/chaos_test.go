package ec2_test

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	awsec2 "github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/internal/ec2alloc"
	"github.com/meadowrun-go/meadowrun/internal/ec2sim"
)

var ec2Slow = meadowrun.Register("ec2.Slow", func(ctx context.Context, x int) (int, error) {
	time.Sleep(150 * time.Millisecond)
	return x * 10, nil
})

// An instance terminated in the middle of a map: its tasks run again on
// the other instance, or a new one, and every task's result arrives once;
// the terminated instance leaves the allocation table.
func TestEC2AnInstanceTerminatedMidMapLosesNoTask(t *testing.T) {
	b := ec2sim.Open(t)
	h := newEC2(t, options(b))
	const n = 60
	args := make([]int, n)
	for i := range args {
		args[i] = i
	}
	seen := map[int]int{}
	var victim string
	for r := range meadowrun.RunMapAsCompleted(t.Context(), ec2Slow, args, h, &meadowrun.MapOptions{
		Options: meadowrun.Options{LogDir: t.TempDir()}, Concurrency: 4, MaxAttempts: 3}) {
		if r.Err != nil {
			t.Fatalf("task %d: %v", r.TaskID, r.Err)
		}
		if r.Value != r.TaskID*10 {
			t.Fatalf("task %d returned %d", r.TaskID, r.Value)
		}
		seen[r.TaskID]++
		if len(seen) == 8 && victim == "" {
			victim = r.Machine
			t.Logf("terminating %s after %d results", victim, len(seen))
			if _, err := b.EC2.TerminateInstances(t.Context(), &awsec2.TerminateInstancesInput{InstanceIds: []string{victim}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if victim == "" {
		t.Fatal("no instance was terminated")
	}
	for i := range n {
		if seen[i] != 1 {
			t.Errorf("task %d: %d results, want exactly one", i, seen[i])
		}
	}
	tbl := ec2alloc.NewTable(dynamodb.NewFromConfig(b.Config), "")
	recs, err := tbl.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.InstanceID == victim {
			t.Errorf("the terminated instance %s is still in the allocation table", victim)
		}
	}
	t.Logf("instances booted: %v", b.Sim.Booted())
}
