package ec2alloc_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/ec2alloc"
	"github.com/meadowrun-go/meadowrun/internal/mototest"
)

// instanceOf is an offer of a made-up type for the table tests.
func instanceOf(name string, vcpu int, memGiB int64, gpus int, market ec2alloc.Market) ec2alloc.Offer {
	t := &ec2alloc.InstanceType{Name: name, VCPU: vcpu, MemoryBytes: memGiB * gib, Architectures: []string{"x86_64"}, Flags: []string{"intel"},
		GPUs: gpus, Interruption: ec2alloc.Interruption5To10}
	if gpus > 0 {
		t.GPUMemoryBytes, t.GPUName, t.Flags = 16*gib, "T4", []string{"intel", "nvidia"}
	}
	return ec2alloc.Offer{Type: t, Market: market, Zone: "us-east-1a", Price: 0.1}
}

func TestTableOnMoto(t *testing.T) {
	moto := mototest.Start(t)
	cfg := moto.Config()
	n := 0
	newTable := func(t *testing.T) *ec2alloc.Table {
		n++
		tab := ec2alloc.NewTable(dynamodb.NewFromConfig(cfg), fmt.Sprintf("alloc%d", n))
		if err := tab.Create(t.Context()); err != nil {
			t.Fatal(err)
		}
		if err := tab.Create(t.Context()); err != nil {
			t.Fatalf("creating the table again: %v", err)
		}
		return tab
	}
	oneCPU := driver.Resources{LogicalCPU: 1, MemoryBytes: gib, MaxEvictionRate: 80}
	per, _ := ec2alloc.WorkerCapacity(oneCPU, 0)

	t.Run("a running instance with free capacity is reused, up to its capacity", func(t *testing.T) {
		ctx := t.Context()
		tab := newTable(t)
		rec := ec2alloc.NewRecord("i-1", "10.0.0.1", "k", instanceOf("m.xlarge", 4, 16, 0, ec2alloc.OnDemand))
		if err := tab.Register(ctx, rec, []string{"old/0"}, per); err != nil {
			t.Fatal(err)
		}
		if err := tab.Register(ctx, rec, nil, per); !errors.Is(err, ec2alloc.ErrRegistered) {
			t.Errorf("registering twice: %v, want ErrRegistered", err)
		}
		if err := tab.Register(ctx, ec2alloc.NewRecord("i-2", "b", "k", instanceOf("m.xlarge", 4, 16, 0, ec2alloc.OnDemand)), []string{"a", "b", "c", "d", "e"}, per); err == nil || !strings.Contains(err.Error(), "do not fit") {
			t.Errorf("registering 5 one-CPU workers on 4 CPUs: %v", err)
		}
		booked, left, err := tab.Allocate(ctx, ec2alloc.AllocRequest{Workers: []string{"j/0", "j/1", "j/2", "j/3"}, Resources: oneCPU, LaunchKey: "k"})
		if err != nil {
			t.Fatal(err)
		}
		if len(booked) != 1 || booked[0].InstanceID != "i-1" || booked[0].Address != "10.0.0.1" || !slices.Equal(booked[0].Workers, []string{"j/0", "j/1", "j/2"}) || !slices.Equal(left, []string{"j/3"}) {
			t.Errorf("booked %+v, left %v; want j/0..2 on i-1 and j/3 left", booked, left)
		}
		got, err := tab.Get(ctx, "i-1")
		if err != nil {
			t.Fatal(err)
		}
		if got.Free.MilliCPU != 0 || got.Free.MemoryBytes != 12*gib || len(got.Workers) != 4 {
			t.Errorf("after booking: free %+v, workers %v", got.Free, got.Workers)
		}
	})

	t.Run("instances launched otherwise, held back, too small or on spot beyond the limit are not reused", func(t *testing.T) {
		ctx := t.Context()
		tab := newTable(t)
		for _, r := range []ec2alloc.Record{
			ec2alloc.NewRecord("i-other", "a", "other-key", instanceOf("m.xlarge", 4, 16, 0, ec2alloc.OnDemand)),
			ec2alloc.NewRecord("i-held", "b", "k", instanceOf("m.xlarge", 4, 16, 0, ec2alloc.OnDemand)),
			ec2alloc.NewRecord("i-spot", "c", "k", instanceOf("m.xlarge", 4, 16, 0, ec2alloc.Spot)),
		} {
			if err := tab.Register(ctx, r, nil, per); err != nil {
				t.Fatal(err)
			}
		}
		if err := tab.SetPreventFurtherAllocation(ctx, "i-held", true); err != nil {
			t.Fatal(err)
		}
		for _, tt := range []struct {
			name string
			res  driver.Resources
		}{
			{"on demand only", driver.Resources{LogicalCPU: 1}},
			{"an eviction limit under the spot type's 7.5%", driver.Resources{LogicalCPU: 1, MaxEvictionRate: 5}},
			{"a GPU", driver.Resources{LogicalCPU: 1, GPUs: 1, MaxEvictionRate: 80}},
			{"more memory than any has", driver.Resources{LogicalCPU: 1, MemoryBytes: 17 * gib, MaxEvictionRate: 80}},
			{"a flag none has", driver.Resources{LogicalCPU: 1, Flags: []string{"avx512"}, MaxEvictionRate: 80}},
		} {
			booked, left, err := tab.Allocate(ctx, ec2alloc.AllocRequest{Workers: []string{"w"}, Resources: tt.res, LaunchKey: "k"})
			if err != nil || len(booked) != 0 || len(left) != 1 {
				t.Errorf("%s: booked %+v, left %v, %v; want nothing booked", tt.name, booked, left, err)
			}
		}
		booked, _, err := tab.Allocate(ctx, ec2alloc.AllocRequest{Workers: []string{"w"}, Resources: oneCPU, LaunchKey: "k"})
		if err != nil || len(booked) != 1 || booked[0].InstanceID != "i-spot" {
			t.Errorf("booked %+v, %v; want the spot instance, the only one left that fits", booked, err)
		}
	})

	t.Run("more workers than one update books all land on one big instance", func(t *testing.T) {
		ctx := t.Context()
		tab := newTable(t)
		if err := tab.Register(ctx, ec2alloc.NewRecord("i-huge", "a", "k", instanceOf("m.16xlarge", 64, 256, 0, ec2alloc.OnDemand)), nil, per); err != nil {
			t.Fatal(err)
		}
		var workers []string
		for i := range 100 {
			workers = append(workers, fmt.Sprintf("w%d", i))
		}
		booked, left, err := tab.Allocate(ctx, ec2alloc.AllocRequest{Workers: workers, Resources: oneCPU, LaunchKey: "k"})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, b := range booked {
			n += len(b.Workers)
		}
		got, err := tab.Get(ctx, "i-huge")
		if err != nil || n != 64 || len(left) != 36 || len(got.Workers) != 64 || got.Free.MilliCPU != 0 {
			t.Errorf("booked %d in %d updates, %d left, the record holds %d with %d mCPU free (%v); want 64 booked, 36 left", n, len(booked), len(left), len(got.Workers), got.Free.MilliCPU, err)
		}
	})

	t.Run("the instance with the least left over is filled first", func(t *testing.T) {
		ctx := t.Context()
		tab := newTable(t)
		if err := tab.Register(ctx, ec2alloc.NewRecord("i-big", "a", "k", instanceOf("m.4xlarge", 16, 64, 0, ec2alloc.OnDemand)), nil, per); err != nil {
			t.Fatal(err)
		}
		if err := tab.Register(ctx, ec2alloc.NewRecord("i-small", "b", "k", instanceOf("m.large", 2, 8, 0, ec2alloc.OnDemand)), []string{"x"}, per); err != nil {
			t.Fatal(err)
		}
		booked, _, err := tab.Allocate(ctx, ec2alloc.AllocRequest{Workers: []string{"w"}, Resources: oneCPU, LaunchKey: "k"})
		if err != nil || len(booked) != 1 || booked[0].InstanceID != "i-small" {
			t.Errorf("booked %+v, %v; want i-small", booked, err)
		}
	})

	t.Run("a released worker frees its capacity once; only an idle instance deregisters when asked so", func(t *testing.T) {
		ctx := t.Context()
		tab := newTable(t)
		rec := ec2alloc.NewRecord("i-1", "a", "k", instanceOf("g.xlarge", 4, 16, 1, ec2alloc.OnDemand))
		gpu := driver.Resources{LogicalCPU: 2, GPUs: 1, MaxEvictionRate: 80}
		gper, _ := ec2alloc.WorkerCapacity(gpu, 16*gib)
		if err := tab.Register(ctx, rec, []string{"w"}, gper); err != nil {
			t.Fatal(err)
		}
		if _, left, _ := tab.Allocate(ctx, ec2alloc.AllocRequest{Workers: []string{"v"}, Resources: gpu, LaunchKey: "k"}); len(left) != 1 {
			t.Errorf("a second GPU worker was booked on a one-GPU instance")
		}
		if err := tab.DeregisterIdle(ctx, "i-1", 0); !errors.Is(err, ec2alloc.ErrBusy) {
			t.Errorf("deregistering a busy instance: %v, want ErrBusy", err)
		}
		if err := tab.Release(ctx, "i-1", "w"); err != nil {
			t.Fatal(err)
		}
		if err := tab.Release(ctx, "i-1", "w"); !errors.Is(err, ec2alloc.ErrNotBooked) {
			t.Errorf("releasing twice: %v, want ErrNotBooked", err)
		}
		got, err := tab.Get(ctx, "i-1")
		if err != nil || got.Free != got.Total || len(got.Workers) != 0 {
			t.Errorf("after release: %+v, %v; want all free", got, err)
		}
		if err := tab.DeregisterIdle(ctx, "i-1", time.Hour); !errors.Is(err, ec2alloc.ErrBusy) {
			t.Errorf("deregistering an instance released a moment ago as idle for an hour: %v, want ErrBusy", err)
		}
		if err := tab.DeregisterIdle(ctx, "i-1", 0); err != nil {
			t.Fatal(err)
		}
		if err := tab.Deregister(ctx, "i-1"); !errors.Is(err, ec2alloc.ErrNotRegistered) {
			t.Errorf("deregistering twice: %v, want ErrNotRegistered", err)
		}
	})

	t.Run("clients allocating at once never overbook an instance", func(t *testing.T) {
		ctx := t.Context()
		tab := newTable(t)
		const instances, clients, each = 5, 8, 5 // 20 places, 40 workers
		// Through Atomic: moto alone lets racing conditional writes both
		// pass (this test saw an instance booked 7 workers on 4 CPUs).
		atomic := moto.Atomic(t)
		for i := range instances {
			if err := tab.Register(ctx, ec2alloc.NewRecord(fmt.Sprintf("i-%d", i), "a", "k", instanceOf("m.xlarge", 4, 16, 0, ec2alloc.OnDemand)), nil, per); err != nil {
				t.Fatal(err)
			}
		}
		start := make(chan struct{})
		var wg sync.WaitGroup
		bookedBy := make([][]ec2alloc.Booking, clients)
		leftBy := make([][]string, clients)
		errs := make([]error, clients)
		for c := range clients {
			// Each client has its own SDK client and connections.
			own := ec2alloc.NewTable(dynamodb.NewFromConfig(atomic), tab.Name())
			var workers []string
			for w := range each {
				workers = append(workers, fmt.Sprintf("c%d/%d", c, w))
			}
			wg.Go(func() {
				<-start
				bookedBy[c], leftBy[c], errs[c] = own.Allocate(ctx, ec2alloc.AllocRequest{Workers: workers, Resources: oneCPU, LaunchKey: "k"})
			})
		}
		close(start)
		wg.Wait()
		placed := map[string]string{}
		left := 0
		for c := range clients {
			if errs[c] != nil {
				t.Fatalf("client %d: %v", c, errs[c])
			}
			left += len(leftBy[c])
			for _, b := range bookedBy[c] {
				for _, w := range b.Workers {
					if prev, dup := placed[w]; dup {
						t.Errorf("worker %s booked on %s and %s", w, prev, b.InstanceID)
					}
					placed[w] = b.InstanceID
				}
			}
		}
		if len(placed) != instances*4 || left != clients*each-instances*4 {
			t.Errorf("%d workers booked and %d left, want %d and %d", len(placed), left, instances*4, clients*each-instances*4)
		}
		recs, err := tab.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			used := ec2alloc.Capacity{}
			for w, held := range r.Workers {
				used = used.Plus(held)
				if placed[w] != r.InstanceID {
					t.Errorf("%s holds %s, which its client says is on %q", r.InstanceID, w, placed[w])
				}
			}
			if r.Free.MilliCPU < 0 || r.Free.MemoryBytes < 0 || r.Free.Plus(used) != r.Total {
				t.Errorf("%s overbooked or miscounted: total %+v, free %+v, %d workers", r.InstanceID, r.Total, r.Free, len(r.Workers))
			}
		}
	})
}
