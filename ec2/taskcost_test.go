package ec2_test

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/ec2"
	"github.com/meadowrun-go/meadowrun/internal/cli"
	"github.com/meadowrun-go/meadowrun/internal/ec2alloc"
	"github.com/meadowrun-go/meadowrun/internal/ec2sim"
)

// near reports whether a and b are equal but for rounding.
func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(math.Abs(a), math.Abs(b)) }

// Each task's share of a map's cost is the time it ran on its worker ×
// the worker's rate (the instance's price × the worker's share); the
// shares add up to no more than the map's cost, the rest being the
// workers' boot and idle time. A journaled map keeps the shares: another
// handle (AttachMap) reads them back, and the command line's --json
// output has them.
func TestEC2CostPerTask(t *testing.T) {
	b := ec2sim.Open(t)
	t.Setenv("XDG_STATE_HOME", t.TempDir())
	h := newEC2(t, options(b))
	ctx := t.Context()
	rateOf := func() float64 {
		t.Helper()
		recs, err := ec2alloc.NewTable(dynamodb.NewFromConfig(b.Config), "").List(ctx)
		if err != nil || len(recs) == 0 {
			t.Fatalf("table: %v, %v", recs, err)
		}
		return recs[0].Price / 2 // one CPU of a t3.medium's two
	}
	check := func(what string, rs []meadowrun.TaskResult[int], rate, jobCost, took float64) {
		t.Helper()
		sum := 0.0
		for _, r := range rs {
			if r.Err != nil {
				t.Fatalf("%s: task %d: %v", what, r.TaskID, r.Err)
			}
			// Slow sleeps 150 ms; the task ran no longer than the call.
			if lo, hi := rate*(150*time.Millisecond).Hours(), rate*took; r.CostUSD < lo || r.CostUSD > hi || !near(r.CostUSD, rate*r.Duration.Hours()) {
				t.Errorf("%s: task %d cost $%g, want $%g/h × its %v = $%g, between $%g and $%g", what, r.TaskID, r.CostUSD, rate, r.Duration, rate*r.Duration.Hours(), lo, hi)
			}
			sum += r.CostUSD
		}
		if sum <= 0 || sum > jobCost {
			t.Errorf("%s: the tasks' costs add up to $%g, want more than 0 and at most the job's $%g", what, sum, jobCost)
		}
		t.Logf("%s: tasks $%g of the job's $%g", what, sum, jobCost)
	}

	start := time.Now()
	m, err := meadowrun.StartMap(ctx, ec2Slow, []int{1, 2, 3, 4}, h, &meadowrun.MapOptions{Options: meadowrun.Options{LogDir: t.TempDir()}, Concurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	var rs []meadowrun.TaskResult[int]
	for r := range m.AsCompleted() {
		rs = append(rs, r)
	}
	if len(rs) != 4 {
		t.Fatalf("%d results, want 4", len(rs))
	}
	check("map", rs, rateOf(), m.Cost(), time.Since(start).Hours())

	// Journaled, run by this process.
	start = time.Now()
	d, err := meadowrun.SubmitMap(ctx, ec2Slow, []int{5, 6, 7}, h, &meadowrun.MapOptions{Options: meadowrun.Options{LogDir: t.TempDir()}, Concurrency: 2},
		&meadowrun.SubmitOptions{InProcess: true})
	if err != nil {
		t.Fatal(err)
	}
	rs = nil
	for r := range d.AsCompleted(ctx) {
		rs = append(rs, r)
	}
	took := time.Since(start).Hours()
	cost, ok := d.Cost()
	if len(rs) != 3 || !ok {
		t.Fatalf("journaled map: %d results, cost %v %v", len(rs), cost, ok)
	}
	check("journaled map", rs, rateOf(), cost, took)
	byTask := map[int]float64{}
	for _, r := range rs {
		byTask[r.TaskID] = r.CostUSD
	}
	a, err := meadowrun.AttachMap[int](ctx, d.ID())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for r := range a.AsCompleted(ctx) {
		n++
		if r.CostUSD != byTask[r.TaskID] {
			t.Errorf("attached: task %d cost $%g, the submitter saw $%g", r.TaskID, r.CostUSD, byTask[r.TaskID])
		}
	}
	if n != 3 {
		t.Errorf("attached: %d results, want 3", n)
	}

	// The command line: each --json line has the task's cost.
	t.Setenv("AWS_ACCESS_KEY_ID", "testing")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "testing")
	t.Setenv("AWS_ENDPOINT_URL", b.Moto.Endpoint)
	t.Setenv("AWS_ENDPOINT_URL_PRICING", deref(b.PricingConfig.BaseEndpoint))
	o := options(b)
	o.AWSConfig, o.PricingConfig = nil, nil
	o.Region = "us-east-1"
	o.BootTimeout = 0
	var out, errb bytes.Buffer
	if rc := cli.Main(context.Background(), []string{"map", "-j", "2", "--json", "--host", ec2.URL(o), "--", "sleep", "0.{}"}, strings.NewReader("2\n3\n"), &out, &errb); rc != 0 {
		t.Fatalf("meadowrun map: exit %d\n%s%s", rc, out.String(), errb.String())
	}
	t.Logf("$ meadowrun map --json\n%s%s", out.String(), errb.String())
	lines := 0
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var x struct {
			Task      int     `json:"task"`
			OK        bool    `json:"ok"`
			DurationS float64 `json:"duration_s"`
			CostUSD   float64 `json:"cost_usd"`
		}
		if err := json.Unmarshal([]byte(l), &x); err != nil || !x.OK {
			continue // the job's summary
		}
		lines++
		if lo := rateOf() * (200 * time.Millisecond).Hours(); x.CostUSD < lo || !near(x.CostUSD, rateOf()*x.DurationS/3600) {
			t.Errorf("--json task %d: cost_usd %g, want %g/h × %gs (at least %g)", x.Task, x.CostUSD, rateOf(), x.DurationS, lo)
		}
	}
	if lines != 2 {
		t.Errorf("--json: %d task lines, want 2", lines)
	}
}

// A map a supervisor process runs: its cost, journaled as it runs, is
// what the handle's Cost reports, from any process, at least the sum of
// its tasks' shares.
func TestEC2CostOfADetachedMap(t *testing.T) {
	b := ec2sim.Open(t)
	t.Setenv("XDG_STATE_HOME", t.TempDir())
	t.Setenv("AWS_ACCESS_KEY_ID", "testing")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "testing")
	t.Setenv("AWS_ENDPOINT_URL", b.Moto.Endpoint)
	t.Setenv("AWS_ENDPOINT_URL_PRICING", deref(b.PricingConfig.BaseEndpoint))
	o := options(b)
	o.AWSConfig, o.PricingConfig = nil, nil
	o.Region = "us-east-1"
	ctx := t.Context()
	h, err := meadowrun.OpenHost(ctx, ec2.URL(o))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	d, err := meadowrun.SubmitMap(ctx, ec2Slow, []int{1, 2, 3}, h, &meadowrun.MapOptions{Options: meadowrun.Options{LogDir: t.TempDir()}, Concurrency: 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	n := 0
	for r := range d.AsCompleted(ctx) {
		if r.Err != nil {
			t.Fatalf("task %d: %v", r.TaskID, r.Err)
		}
		if r.CostUSD <= 0 {
			t.Errorf("task %d: cost $%g, want more than 0", r.TaskID, r.CostUSD)
		}
		sum += r.CostUSD
		n++
	}
	if n != 3 {
		t.Fatalf("%d results, want 3", n)
	}
	info, err := d.Info(ctx)
	if err != nil || !info.Detached {
		t.Fatalf("info %+v, %v: want a detached job", info, err)
	}
	cost, ok := d.Cost()
	if !ok || cost < sum || cost != info.CostUSD {
		t.Errorf("the handle's cost $%g (%v), want at least the tasks' $%g and the journal's $%g", cost, ok, sum, info.CostUSD)
	}
	a, err := meadowrun.AttachMap[int](ctx, d.ID())
	if err != nil {
		t.Fatal(err)
	}
	if c, ok := a.Cost(); !ok || c != cost {
		t.Errorf("attached: cost $%g (%v), want $%g", c, ok, cost)
	}
	t.Logf("detached map: tasks $%g of the job's $%g", sum, cost)
}
