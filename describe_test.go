package meadowrun_test

import (
	"context"
	"errors"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/internal/sshtest"
	"github.com/meadowrun-go/meadowrun/local"
	mrssh "github.com/meadowrun-go/meadowrun/ssh"
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

func TestDescribeSSHHostConnectsAndSaysWhyAMachineCannotBeUsed(t *testing.T) {
	n := sshtest.Open(t)
	h := newSSHMachines(t, n, mrssh.Options{ConnectTimeout: 2 * time.Second},
		n.User+"@"+n.Addr("h1"), n.User+"@"+n.Addr("h6"), n.User+"@"+n.Unreachable+":22")
	ms, err := meadowrun.DescribeHost(context.Background(), h)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 3 {
		t.Fatalf("%d machines described, want 3", len(ms))
	}
	for i, m := range ms[:2] {
		if m.Err != nil || m.LogicalCPU <= 0 || m.MemoryGB <= 0 || m.Platform != "linux/amd64" {
			t.Fatalf("machine %d: %+v", i, m)
		}
	}
	if !strings.HasPrefix(ms[0].MemoryEnforcement, "cgroup") || ms[1].MemoryEnforcement != "watchdog" {
		t.Fatalf("memory enforcement: h1 %q, h6 %q; want cgroup*, watchdog", ms[0].MemoryEnforcement, ms[1].MemoryEnforcement)
	}
	if !errors.Is(ms[2].Err, meadowrun.ErrUnreachable) || !strings.Contains(ms[2].Err.Error(), n.Unreachable) {
		t.Fatalf("unreachable machine: %v", ms[2].Err)
	}
}
