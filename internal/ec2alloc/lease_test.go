package ec2alloc_test

import (
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/ec2alloc"
	"github.com/meadowrun-go/meadowrun/internal/mototest"
)

// Bookings under leases: those of a holder whose lease ended (a dead
// client) are released by ReleaseExpired, with their capacity; a live
// holder's stay, also when it renewed after the sweep read the table; a
// holder with no lease keeps its bookings for the grace period.
func TestLeasesOnMoto(t *testing.T) {
	ctx := t.Context()
	moto := mototest.Start(t)
	tab := ec2alloc.NewTable(dynamodb.NewFromConfig(moto.Config()), "leases")
	if err := tab.Create(ctx); err != nil {
		t.Fatal(err)
	}
	per, _ := ec2alloc.WorkerCapacity(driver.Resources{LogicalCPU: 1, MemoryBytes: gib, MaxEvictionRate: 80}, 0)
	rec := ec2alloc.NewRecord("i-1", "10.0.0.1", "k", instanceOf("m.xlarge", 4, 16, 0, ec2alloc.OnDemand))
	if err := tab.Register(ctx, rec, []string{"dead-host-1", "dead-host-2", "live-host-1", "late-host-1"}, per); err != nil {
		t.Fatal(err)
	}
	if got := ec2alloc.HolderOf("dead-host-12"); got != "dead-host" {
		t.Errorf("HolderOf(dead-host-12) = %q", got)
	}
	now := time.Now()
	for h, until := range map[string]time.Time{"dead-host": now.Add(-time.Second), "live-host": now.Add(time.Hour), "late-host": now.Add(-time.Second)} {
		if err := tab.Renew(ctx, "i-1", h, until); err != nil {
			t.Fatal(err)
		}
	}
	stale, err := tab.Get(ctx, "i-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(stale.Leases) != 3 || !stale.Leases["live-host"].After(now) {
		t.Fatalf("leases %v", stale.Leases)
	}
	// late-host renews after the sweep read the record.
	if err := tab.Renew(ctx, "i-1", "late-host", now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	released, err := tab.ReleaseExpired(ctx, stale, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(released)
	if !slices.Equal(released, []string{"dead-host-1", "dead-host-2"}) {
		t.Errorf("released %v, want dead-host's two workers", released)
	}
	got, err := tab.Get(ctx, "i-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Workers) != 2 || got.Workers["live-host-1"] != per || got.Workers["late-host-1"] != per {
		t.Errorf("workers left %v, want live-host-1 and late-host-1", got.Workers)
	}
	if want := rec.Total.Minus(per.Times(2)); got.Free != want {
		t.Errorf("free %+v, want %+v", got.Free, want)
	}
	if _, ok := got.Leases["dead-host"]; ok || len(got.Leases) != 2 {
		t.Errorf("leases %v: want dead-host's dropped", got.Leases)
	}

	// No lease: kept for the grace period, released after it.
	rec2 := ec2alloc.NewRecord("i-2", "10.0.0.2", "k", instanceOf("m.xlarge", 4, 16, 0, ec2alloc.OnDemand))
	if err := tab.Register(ctx, rec2, []string{"old-host-1"}, per); err != nil {
		t.Fatal(err)
	}
	got2, err := tab.Get(ctx, "i-2")
	if err != nil {
		t.Fatal(err)
	}
	if released, err := tab.ReleaseExpired(ctx, got2, time.Hour); err != nil || len(released) != 0 {
		t.Errorf("within the grace period: released %v, %v", released, err)
	}
	if released, err := tab.ReleaseExpired(ctx, got2, 0); err != nil || !slices.Equal(released, []string{"old-host-1"}) {
		t.Errorf("after the grace period: released %v, %v; want old-host-1", released, err)
	}
	if err := tab.Renew(ctx, "i-9", "h", now); err == nil {
		t.Error("renewing on an instance not in the table: no error")
	}
}
