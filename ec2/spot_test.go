package ec2_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/internal/ec2alloc"
	"github.com/meadowrun-go/meadowrun/internal/ec2sim"
)

// countedArg is an item of a map whose executions are counted: each one
// leaves a file in Dir (shared by the simulated instances, whose home
// directories only are their own) naming the item and the address of the
// instance it ran on.
type countedArg struct {
	Dir string
	X   int
}

var ec2Counted = meadowrun.Register("ec2.Counted", func(ctx context.Context, a countedArg) (int, error) {
	ip := "unknown"
	if f := strings.Fields(os.Getenv("SSH_CONNECTION")); len(f) >= 3 {
		ip = f[2]
	}
	b := make([]byte, 6)
	rand.Read(b)
	if err := os.WriteFile(filepath.Join(a.Dir, fmt.Sprintf("%d_%s_%s", a.X, ip, hex.EncodeToString(b))), nil, 0o644); err != nil {
		return 0, err
	}
	time.Sleep(300 * time.Millisecond)
	return a.X * 10, nil
})

// A spot interruption notice in the middle of a map: the agent on the
// instance sees it in the instance metadata (amazon-ec2-metadata-mock in
// the instance's namespace), the host keeps new work off the instance and
// runs its tasks again elsewhere, on-demand (OnDemandAfterInterruption):
// every result arrives exactly once, only the interrupted instance's
// tasks run twice, and none runs more than twice.
func TestEC2SpotInterruptionNoticeMidMapLosesNoTask(t *testing.T) {
	b := ec2sim.Open(t)
	o := options(b)
	o.MaxInstances = 3
	o.MetadataPoll = 200 * time.Millisecond
	o.OnDemandAfterInterruption = true
	h := newEC2(t, o)
	dir := t.TempDir()
	os.Chmod(dir, 0o777)
	const n = 60
	args := make([]countedArg, n)
	for i := range args {
		args[i] = countedArg{Dir: dir, X: i}
	}
	seen := map[int]int{}
	var victim, victimIP string
	for r := range meadowrun.RunMapAsCompleted(t.Context(), ec2Counted, args, h, &meadowrun.MapOptions{
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
			victimIP = b.Sim.Running()[victim]
			t.Logf("spot interruption notice for %s (%s) after %d results", victim, victimIP, len(seen))
			b.Sim.Interrupt(t, victim)
		}
	}
	if victim == "" || victimIP == "" {
		t.Fatalf("no instance was interrupted (victim %q at %q)", victim, victimIP)
	}
	for i := range n {
		if seen[i] != 1 {
			t.Errorf("task %d: %d results, want exactly one", i, seen[i])
		}
	}
	files, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	onVictim, elsewhere := map[int]int{}, map[int]int{}
	for _, f := range files {
		var x int
		parts := strings.Split(f.Name(), "_")
		if _, err := fmt.Sscan(parts[0], &x); err != nil || len(parts) != 3 {
			t.Fatalf("execution record %q", f.Name())
		}
		if parts[1] == victimIP {
			onVictim[x]++
		} else {
			elsewhere[x]++
		}
	}
	reruns := 0
	for i := range n {
		switch {
		case onVictim[i]+elsewhere[i] == 0:
			t.Errorf("task %d never ran", i)
		case onVictim[i] > 1 || elsewhere[i] > 1:
			t.Errorf("task %d ran %d times on the interrupted instance and %d times elsewhere: only an interrupted task runs again, once", i, onVictim[i], elsewhere[i])
		case onVictim[i] == 1 && elsewhere[i] == 1:
			reruns++
		}
	}
	// The interrupted instance had two workers (a t3.medium's two CPUs).
	if reruns > 2 {
		t.Errorf("%d tasks ran again; the interrupted instance ran at most 2 at once", reruns)
	}
	tbl := ec2alloc.NewTable(dynamodb.NewFromConfig(b.Config), "")
	recs, err := tbl.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	onDemand := 0
	for _, r := range recs {
		if r.InstanceID == victim && !r.PreventFurtherAllocation {
			t.Errorf("the interrupted instance %s still takes work in the allocation table", victim)
		}
		if r.Market == ec2alloc.OnDemand {
			onDemand++
		}
	}
	if onDemand == 0 {
		t.Errorf("no on-demand instance was launched after the interruption (OnDemandAfterInterruption); table: %+v", recs)
	}
	t.Logf("tasks run again: %d; instances booted: %v", reruns, b.Sim.Booted())
}
