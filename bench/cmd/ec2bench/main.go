// Command ec2bench measures meadowrun's EC2 host (P9) on moto_server and
// the instance simulator of internal/ec2sim, on the machines of
// scripts/sshnet.sh (MEADOWRUN_SSHNET names its directory): dispatch to
// a warm, reused instance by a new client (its checks, the allocation
// table lookup and booking included), the control plane's part of a cold
// start without the simulated boot, and 100 concurrent allocations
// against one table (checked for overbooking).
//
// Each warm client is a new process of this program, given its settings
// in the environment as a user's would be ($AWS_ENDPOINT_URL and the
// credentials); -trace prints the phases of its first call and its AWS
// calls.
//
//	scripts/sshnet.sh up DIR ID && MEADOWRUN_SSHNET=DIR go run ./bench/cmd/ec2bench [-quick] [-trace]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/bench/internal/benchmain"
	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/ec2"
	"github.com/meadowrun-go/meadowrun/hosttest"
	"github.com/meadowrun-go/meadowrun/internal/ec2alloc"
	"github.com/meadowrun-go/meadowrun/internal/ec2sim"
	"github.com/meadowrun-go/meadowrun/internal/tracepoint"
)

var inc = meadowrun.Register("ec2bench.Inc", func(ctx context.Context, x int) (int, error) {
	return x + 1, nil
})

var (
	traceFlag   = flag.Bool("trace", false, "print the phases of each warm client's first call, and its AWS calls")
	clientsFlag = flag.Int("clients", 0, "warm clients (0: 20, 5 with -quick)")
	warmFlag    = flag.Bool("warm", false, "measure the warm clients only (one cold start, no allocations)")
)

func main() {
	if os.Getenv(clientEnv) != "" {
		meadowrun.Main()
		if err := client(); err != nil {
			fmt.Fprintf(os.Stderr, "ec2bench client: %v\n", err)
			os.Exit(1)
		}
		return
	}
	benchmain.Main("ec2bench", run)
}

func run(quick bool) (err error) {
	if os.Getenv("MEADOWRUN_SSHNET") == "" {
		return fmt.Errorf("MEADOWRUN_SSHNET is not set: start the machines with scripts/sshnet.sh up DIR ID")
	}
	tb := newTB()
	defer tb.end()
	defer func() {
		if r := recover(); r != nil {
			if f, ok := r.(tbFailure); ok {
				err = f
				return
			}
			panic(r)
		}
	}()
	b := ec2sim.Open(tb)
	cfg, pcfg := b.Config, b.PricingConfig
	log := &hosttest.SyncBuffer{}
	o := ec2.AllocEC2Instance{AMI: b.AMI, Subnets: []string{b.Subnet}, SecurityGroups: []string{b.Group},
		KeyName: b.KeyName, KeyFile: b.KeyFile, User: "root", PrivateAddress: true, InstanceTypes: []string{"t3.medium"},
		MaxInstances: 2, BootTimeout: time.Minute, AWSConfig: &cfg, PricingConfig: &pcfg, CacheDir: tb.TempDir(), Log: log}
	ctx := context.Background()
	opts := func() *meadowrun.Options { return &meadowrun.Options{Output: io.Discard, LogDir: tb.TempDir()} }

	// The catalog, once per region and hour.
	h, err := ec2.NewHost(ctx, o)
	if err != nil {
		return err
	}
	drv, err := h.Driver(ctx)
	if err != nil {
		return err
	}
	t := time.Now()
	if _, err := drv.Fit(ctx, driver.Resources{LogicalCPU: 1, MaxEvictionRate: 80}); err != nil {
		return err
	}
	fmt.Printf("catalog (DescribeInstanceTypes, offerings, the Pricing API fake, spot prices), loaded once an hour per region: %v\n", time.Since(t).Round(time.Millisecond))
	h.Close()

	// Cold starts: a table of its own each, so that nothing is reused.
	colds := 3
	if quick || *warmFlag {
		colds = 1
	}
	reg := regexp.MustCompile(`running and registered after ([0-9.]+[mµn]?s)`)
	ans := regexp.MustCompile(`answers after ([0-9.]+[mµn]?s)`)
	for i := range colds {
		co := o
		co.TableName = fmt.Sprintf("ec2bench_cold_%d", i)
		l := &hosttest.SyncBuffer{}
		co.Log = l
		t := time.Now()
		h, err := ec2.NewHost(ctx, co)
		if err != nil {
			return err
		}
		if _, err := meadowrun.RunFunction(ctx, inc.With(i), h, opts()); err != nil {
			return err
		}
		total := time.Since(t)
		h.Close()
		mr, ma := reg.FindStringSubmatch(l.String()), ans.FindStringSubmatch(l.String())
		if mr == nil || ma == nil {
			return fmt.Errorf("cold start %d: the host's log has no launch and answer times:\n%s", i, l)
		}
		registered, _ := time.ParseDuration(mr[1])
		answered, _ := time.ParseDuration(ma[1])
		fmt.Printf("cold start %d: %v in all; control plane without the boot %v (RunInstances to running and registered %v); boot, SSH login, upload and agent start %v\n",
			i+1, total.Round(time.Millisecond), (total - answered).Round(time.Millisecond), registered.Round(time.Millisecond), answered.Round(time.Millisecond))
	}

	// Warm: one instance, reused by new clients, each a new process of
	// this program (what a user's next run is): it shares nothing with
	// the one before but the user's cache directory.
	h, err = ec2.NewHost(ctx, o)
	if err != nil {
		return err
	}
	if _, err := meadowrun.RunFunction(ctx, inc.With(0), h, opts()); err != nil {
		return err
	}
	h.Close()
	clients := 20
	if quick {
		clients = 5
	}
	if *clientsFlag > 0 {
		clients = *clientsFlag
	}
	cc := clientConfig{Endpoint: aws.ToString(cfg.BaseEndpoint), PricingEndpoint: aws.ToString(pcfg.BaseEndpoint), Region: cfg.Region,
		AMI: b.AMI, Subnet: b.Subnet, Group: b.Group, KeyName: b.KeyName, KeyFile: b.KeyFile, CacheDir: o.CacheDir,
		UserCache: tb.TempDir(), LogDir: tb.TempDir(), Trace: *traceFlag}
	var first, spawned, opens, next []time.Duration
	for i := range clients {
		cc.Arg = i
		r, err := runClient(ctx, cc)
		if err != nil {
			return fmt.Errorf("client %d: %w", i, err)
		}
		first = append(first, r.First)
		spawned = append(spawned, r.Spawned)
		opens = append(opens, r.Opened)
		next = append(next, r.Next...)
		if *traceFlag {
			fmt.Printf("client %d: first call %v (NewHost %v), %v from the process's start; its phases:\n", i+1,
				r.First.Round(10*time.Microsecond), r.Opened.Round(10*time.Microsecond), r.Spawned.Round(10*time.Microsecond))
			tracepoint.Print(os.Stdout, r.Start, r.Events)
		}
	}
	if n := len(b.Sim.Booted()); n != 1+colds {
		return fmt.Errorf("%d instances booted, want %d: the warm instance was not reused", n, 1+colds)
	}
	fmt.Printf("warm dispatch by a new client process to a reused instance (NewHost's checks, table lookup and booking, SSH login, agent session, worker start): p50 %v, p90 %v over %d clients; of which NewHost p50 %v; from the process's start p50 %v\n",
		pct(first, 50), pct(first, 90), clients, pct(opens, 50), pct(spawned, 50))
	fmt.Printf("warm dispatch by that client to its warm worker: p50 %v, p90 %v over %d calls\n", pct(next, 50), pct(next, 90), len(next))

	// 100 concurrent allocations against one table, through moto's
	// serializing proxy (moto alone lets racing conditional writes pass).
	if *warmFlag {
		return nil
	}
	return allocations(ctx, tb, b, quick)
}

func allocations(ctx context.Context, tb *benchTB, b *ec2sim.Bench, quick bool) error {
	atomic := b.Moto.Atomic(tb)
	tab := ec2alloc.NewTable(dynamodb.NewFromConfig(atomic), "ec2bench_alloc")
	if err := tab.Create(ctx); err != nil {
		return err
	}
	// 20 instances of 4 CPUs: 80 places for 100 one-CPU workers (4 and
	// 20 with -quick).
	instances, allocs := 20, 100
	if quick {
		instances, allocs = 4, 20
	}
	typ := &ec2alloc.InstanceType{Name: "m.xlarge", VCPU: 4, MemoryBytes: 16 << 30, Architectures: []string{"x86_64"}}
	oneCPU := driver.Resources{LogicalCPU: 1, MemoryBytes: 1 << 30, MaxEvictionRate: 80}
	per, _ := ec2alloc.WorkerCapacity(oneCPU, 0)
	for i := range instances {
		rec := ec2alloc.NewRecord(fmt.Sprintf("i-%02d", i), "a", "k", ec2alloc.Offer{Type: typ, Market: ec2alloc.OnDemand, Zone: "us-east-1a", Price: 0.1})
		if err := tab.Register(ctx, rec, nil, per); err != nil {
			return err
		}
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	took := make([]time.Duration, allocs)
	booked := make([][]ec2alloc.Booking, allocs)
	errs := make([]error, allocs)
	for c := range allocs {
		own := ec2alloc.NewTable(dynamodb.NewFromConfig(atomic), tab.Name())
		wg.Go(func() {
			<-start
			t := time.Now()
			booked[c], _, errs[c] = own.Allocate(ctx, ec2alloc.AllocRequest{Workers: []string{fmt.Sprintf("w%03d", c)}, Resources: oneCPU, LaunchKey: "k"})
			took[c] = time.Since(t)
		})
	}
	t := time.Now()
	close(start)
	wg.Wait()
	wall := time.Since(t)
	placed := 0
	for c := range allocs {
		if errs[c] != nil {
			return fmt.Errorf("allocation %d: %w", c, errs[c])
		}
		placed += len(booked[c])
	}
	recs, err := tab.List(ctx)
	if err != nil {
		return err
	}
	over := 0
	for _, r := range recs {
		used := ec2alloc.Capacity{}
		for _, held := range r.Workers {
			used = used.Plus(held)
		}
		if r.Free.MilliCPU < 0 || r.Free.MemoryBytes < 0 || r.Free.Plus(used) != r.Total {
			over++
		}
	}
	if over > 0 || placed != instances*4 {
		return fmt.Errorf("%d allocations: %d placed on %d places, %d instances overbooked", allocs, placed, instances*4, over)
	}
	fmt.Printf("%d concurrent allocations against one table (%d instances, %d places, GOMAXPROCS %d): %d placed, none overbooked; per allocation p50 %v, p90 %v, max %v; all in %v (%v per allocation)\n",
		allocs, instances, instances*4, runtime.GOMAXPROCS(0), placed, pct(took, 50), pct(took, 90), pct(took, 100), wall.Round(time.Millisecond),
		(wall / time.Duration(allocs)).Round(10*time.Microsecond))
	// The same table freed, one client alone: an allocation uncontended.
	for _, r := range recs {
		for w := range r.Workers {
			if err := tab.Release(ctx, r.InstanceID, w); err != nil {
				return err
			}
		}
	}
	var alone []time.Duration
	for c := range 20 {
		t := time.Now()
		if _, _, err := tab.Allocate(ctx, ec2alloc.AllocRequest{Workers: []string{fmt.Sprintf("s%03d", c)}, Resources: oneCPU, LaunchKey: "k"}); err != nil {
			return err
		}
		alone = append(alone, time.Since(t))
	}
	fmt.Printf("one client allocating alone on that table: p50 %v, p90 %v over %d allocations\n", pct(alone, 50), pct(alone, 90), len(alone))
	return nil
}

func pct(ds []time.Duration, q int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := len(s) * q / 100
	if i >= len(s) {
		i = len(s) - 1
	}
	d := s[i]
	if d > time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(10 * time.Microsecond)
}

// benchTB lets the test helpers (moto, the simulated machines and
// instances) run in a program: a failure ends the run with its message,
// cleanups run at the end. Methods it does not override are not used by
// those helpers (the embedded interface is nil).
type benchTB struct {
	testing.TB
	mu       sync.Mutex
	cleanups []func()
	dirs     []string
	ctx      context.Context
	cancel   context.CancelFunc
	failed   bool
}

type tbFailure string

func (f tbFailure) Error() string { return string(f) }

func newTB() *benchTB {
	ctx, cancel := context.WithCancel(context.Background())
	return &benchTB{ctx: ctx, cancel: cancel}
}

func (t *benchTB) end() {
	t.cancel()
	t.mu.Lock()
	cs := t.cleanups
	t.cleanups = nil
	t.mu.Unlock()
	for i := len(cs) - 1; i >= 0; i-- {
		cs[i]()
	}
	for _, d := range t.dirs {
		os.RemoveAll(d)
	}
}

func (t *benchTB) Helper()                  {}
func (t *benchTB) Name() string             { return "ec2bench" }
func (t *benchTB) Context() context.Context { return t.ctx }
func (t *benchTB) Cleanup(f func()) {
	t.mu.Lock()
	t.cleanups = append(t.cleanups, f)
	t.mu.Unlock()
}
func (t *benchTB) TempDir() string {
	d, err := os.MkdirTemp("", "ec2bench-")
	if err != nil {
		t.Fatal(err)
	}
	t.mu.Lock()
	t.dirs = append(t.dirs, d)
	t.mu.Unlock()
	return d
}
func (t *benchTB) Logf(format string, a ...any) {}
func (t *benchTB) Log(a ...any)                 {}
func (t *benchTB) Errorf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "ec2bench: "+format+"\n", a...)
	t.mu.Lock()
	t.failed = true
	t.mu.Unlock()
}
func (t *benchTB) Error(a ...any) { t.Errorf("%s", fmt.Sprint(a...)) }
func (t *benchTB) Failed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.failed
}
func (t *benchTB) Fatalf(format string, a ...any) { panic(tbFailure(fmt.Sprintf(format, a...))) }
func (t *benchTB) Fatal(a ...any)                 { panic(tbFailure(fmt.Sprint(a...))) }
func (t *benchTB) FailNow()                       { panic(tbFailure("failed")) }
func (t *benchTB) Skipf(format string, a ...any)  { panic(tbFailure(fmt.Sprintf(format, a...))) }
func (t *benchTB) Skip(a ...any)                  { panic(tbFailure(fmt.Sprint(a...))) }
func (t *benchTB) Setenv(k, v string)             { os.Setenv(k, v) }
