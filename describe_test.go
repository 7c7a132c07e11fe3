package meadowrun_test

import (
	"context"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/local"
)

func TestDescribeLocalHostShowsItsBudgetAndWhatIsBooked(t *testing.T) {
	ctx := context.Background()
	h, err := local.NewHost(ctx, local.Options{LogicalCPU: 1.5, MemoryGB: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ms, err := meadowrun.DescribeHost(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 || ms[0].Name != "localhost" || ms[0].Err != nil || ms[0].LogicalCPU != 1.5 || ms[0].MemoryGB != 2 ||
		ms[0].Platform != runtime.GOOS+"/"+runtime.GOARCH || ms[0].MemoryEnforcement == "" || ms[0].BookedCPU != 0 {
		t.Fatalf("DescribeHost = %+v", ms)
	}
	// A running task's worker is booked.
	dir := t.TempDir()
	j, err := meadowrun.StartFunction(ctx, sleepPID.With(dir), h, &meadowrun.Options{LogDir: t.TempDir(),
		Resources: &meadowrun.Resources{LogicalCPU: 1, MemoryGB: 0.5}})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Cancel()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if m, _ := filepath.Glob(filepath.Join(dir, "*.pid")); len(m) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the task did not start")
		}
	}
	ms, _ = meadowrun.DescribeHost(ctx, h)
	if ms[0].BookedCPU != 1 || ms[0].BookedMemoryGB != 0.5 {
		t.Fatalf("while a task runs: booked %g CPUs, %g GB; want 1, 0.5", ms[0].BookedCPU, ms[0].BookedMemoryGB)
	}
}

// A host opened by URL and closed is opened again by the next OpenHost of
// that URL (a CLI command run twice in one process), not returned closed.
func TestOpenHostAfterCloseOpensItAgain(t *testing.T) {
	ctx := context.Background()
	const u = "inprocess://?cpu=3"
	h1, err := meadowrun.OpenHost(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := meadowrun.DescribeHost(ctx, h1); err != nil {
		t.Fatal(err)
	}
	h1.Close()
	h2, err := meadowrun.OpenHost(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer h2.Close()
	if _, err := meadowrun.DescribeHost(ctx, h2); err != nil {
		t.Fatalf("the host opened again after Close: %v", err)
	}
}
