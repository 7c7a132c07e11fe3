package ec2_test

import (
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/internal/ec2alloc"
	"github.com/meadowrun-go/meadowrun/internal/ec2sim"
)

// A job's cost: the time its workers were lent to it × their instance's
// price (the table's, for the market it was launched in) × the share of
// the instance each holds (one CPU of a t3.medium's two: a half).
func TestEC2CostPerJob(t *testing.T) {
	b := ec2sim.Open(t)
	h := newEC2(t, options(b))
	start := time.Now()
	jc, err := meadowrun.RunCommand(t.Context(), []string{"sleep", "1"}, h, &meadowrun.CommandOptions{Options: meadowrun.Options{LogDir: t.TempDir()}})
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := ec2alloc.NewTable(dynamodb.NewFromConfig(b.Config), "").List(t.Context())
	if err != nil || len(recs) != 1 {
		t.Fatalf("table: %v, %v", recs, err)
	}
	rate := recs[0].Price / 2
	// The worker was held for the command's second at least, and for no
	// longer than the call took.
	if lo, hi := rate*jc.Duration.Hours(), rate*took.Hours(); jc.CostUSD < lo || jc.CostUSD > hi {
		t.Errorf("cost $%g, want between $%g (the command's %v) and $%g (the call's %v) at $%g/h", jc.CostUSD, lo, jc.Duration, hi, took, rate)
	}

	start = time.Now()
	m, err := meadowrun.StartMap(t.Context(), ec2Slow, []int{1, 2, 3, 4}, h, &meadowrun.MapOptions{
		Options: meadowrun.Options{LogDir: t.TempDir()}, Concurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	took = time.Since(start)
	// Two workers, each for at least two 150 ms tasks.
	if c, lo, hi := m.Cost(), rate*2*(300*time.Millisecond).Hours(), rate*2*took.Hours(); c < lo || c > hi {
		t.Errorf("map cost $%g, want between $%g and $%g", c, lo, hi)
	}
	t.Logf("command: $%g; map: $%g in %v (at $%g/h a worker)", jc.CostUSD, m.Cost(), took, rate)
}
