package ec2_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
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

// Two clients mapping at once on one allocation table: no instance ever
// has more workers booked than its type holds, and every task's result
// arrives once. (moto does not make conditional writes atomic, as
// DynamoDB does: both clients reach it through mototest's
// one-request-at-a-time proxy.)
func TestEC2TwoClientsAtOnceNeverOverbookAnInstance(t *testing.T) {
	b := ec2sim.Open(t)
	cfg := b.Moto.Atomic(t)
	o := options(b)
	o.AWSConfig = &cfg
	hs := []*meadowrun.Host{newEC2(t, o), newEC2(t, o)}
	tbl := ec2alloc.NewTable(dynamodb.NewFromConfig(b.Config), "")
	stop := make(chan struct{})
	watched := make(chan error, 1)
	go func() {
		var bad error
		defer func() { watched <- bad }()
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			recs, err := tbl.List(context.Background())
			if err != nil {
				continue // the table is created by the first host
			}
			for _, r := range recs {
				f := r.Free
				if f.MilliCPU < 0 || f.MemoryBytes < 0 || len(r.Workers) > 2 {
					bad = fmt.Errorf("instance %s overbooked: %d workers, free %+v", r.InstanceID, len(r.Workers), f)
				}
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make([]error, len(hs))
	for i, h := range hs {
		wg.Go(func() {
			args := make([]int, 12)
			for j := range args {
				args[j] = 100*i + j
			}
			got, err := meadowrun.RunMap(context.Background(), ec2Slow, args, h, &meadowrun.MapOptions{
				Options: meadowrun.Options{LogDir: t.TempDir()}, Concurrency: 4})
			if err == nil {
				for j, x := range args {
					if got[j] != 10*x {
						err = fmt.Errorf("task %d returned %d", j, got[j])
					}
				}
			}
			errs[i] = err
		})
	}
	wg.Wait()
	close(stop)
	if err := errors.Join(append(errs, <-watched)...); err != nil {
		t.Fatal(err)
	}
	recs, err := tbl.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("instances booted: %d; in the table: %d", len(b.Sim.Booted()), len(recs))
}
