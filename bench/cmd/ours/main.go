// Command ours runs meadowrun-go's side of the benchmark workloads on the
// local host and prints JSON lines (schema 1, impl "meadowrun") on stdout;
// see bench/README.md. The harness (bench/cmd/bench) builds it once and
// runs it once per repetition, so every repetition starts a fresh process.
//
//	ours [-workloads P1,P2,P4,P5,P10] [-quick] [-reps N] [-cpuprofile FILE]
//
// P3 (cold start) is measured by the harness with bench/cmd/coldstart; P6
// needs the `meadowrun map` CLI, which does not exist yet, so nothing is
// printed for it.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"iter"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/bench/internal/rec"
)

var (
	inc = meadowrun.Register("bench.Inc", func(ctx context.Context, x int) (int, error) {
		return x + 1, nil
	})
	echo = meadowrun.Register("bench.Echo", func(ctx context.Context, b []byte) ([]byte, error) {
		return b, nil
	})
	sleepMs = meadowrun.Register("bench.SleepMs", func(ctx context.Context, ms int) (int, error) {
		time.Sleep(time.Duration(ms) * time.Millisecond)
		return ms, nil
	})
)

// Supported are the workloads this program measures. P10 runs first so
// that the client's peak RSS is not inflated by P4's 2 GB of buffers.
var Supported = []string{"P10", "P1", "P2", "P4", "P5"}

type sizes struct {
	p1   []int
	p2   int
	p4n  int
	p4b  int
	p5n  int
	p10n int
}

func sizesFor(quick bool) sizes {
	if quick {
		return sizes{p1: []int{200}, p2: 50, p4n: 4, p4b: 1_000_000, p5n: 8, p10n: 2000}
	}
	return sizes{p1: []int{10_000, 100_000}, p2: 1000, p4n: 100, p4b: 10_000_000, p5n: 200, p10n: 1_000_000}
}

type bench struct {
	ctx  context.Context
	host *meadowrun.Host
	sz   sizes
	reps int
	out  *rec.Emitter
}

func main() {
	meadowrun.Main()
	workloads := flag.String("workloads", strings.Join(Supported, ","), "comma-separated workloads (P1..P10; unsupported ones are skipped)")
	quick := flag.Bool("quick", false, "tiny sizes for a CI smoke run")
	reps := flag.Int("reps", 1, "repetitions in this process; each prints its own lines with rep=i")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of this (client) process to `file`")
	flag.Parse()
	if *reps < 1 {
		fatalf("-reps must be >= 1")
	}
	want := map[string]bool{}
	for _, w := range strings.Split(*workloads, ",") {
		w = strings.ToUpper(strings.TrimSpace(w))
		if w == "" {
			continue
		}
		var n int
		if _, err := fmt.Sscanf(w, "P%d", &n); err != nil || n < 1 || n > 10 || w != fmt.Sprintf("P%d", n) {
			fmt.Fprintf(os.Stderr, "ours: unknown workload %q (known: P1..P10)\n", w)
			os.Exit(2)
		}
		if !slices.Contains(Supported, w) {
			logf("no meadowrun measurement for %s here, skipping", w)
		}
		want[w] = true
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fatalf("%v", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fatalf("%v", err)
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}
	b := &bench{ctx: context.Background(), host: meadowrun.Local(), sz: sizesFor(*quick), reps: *reps,
		out: &rec.Emitter{W: os.Stdout, Impl: "meadowrun", Version: "meadowrun-go (" + runtime.Version() + ")"}}
	fns := map[string]func(){"P1": b.p1, "P2": b.p2, "P4": b.p4, "P5": b.p5, "P10": b.p10}
	for _, w := range Supported {
		if !want[w] {
			continue
		}
		t0 := time.Now()
		fns[w]()
		logf("%s done in %.1fs", w, time.Since(t0).Seconds())
	}
}

func logf(format string, a ...any) { fmt.Fprintf(os.Stderr, "[ours] "+format+"\n", a...) }

func fatalf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "ours: "+format+"\n", a...)
	os.Exit(1)
}

func check(err error, what string) {
	if err != nil {
		fatalf("%s: %v", what, err)
	}
}

func mapOpts(concurrency int, cpu float64) *meadowrun.MapOptions {
	o := &meadowrun.MapOptions{Concurrency: concurrency, MaxAttempts: 1}
	o.Output = io.Discard
	if cpu > 0 {
		o.Resources = &meadowrun.Resources{LogicalCPU: cpu}
	}
	return o
}

func ints(n int) []int {
	xs := make([]int, n)
	for i := range xs {
		xs[i] = i
	}
	return xs
}

// warm starts k workers for f's resources with a tiny map, so that pool
// start-up is excluded from timings (the peers warm their pools too).
func (b *bench) warm(k int, cpu float64) {
	out, err := meadowrun.RunMap(b.ctx, inc, ints(20*k), b.host, mapOpts(k, cpu))
	check(err, "warm-up map")
	if len(out) != 20*k || out[len(out)-1] != 20*k {
		fatalf("warm-up map: wrong results")
	}
}

func (b *bench) p1() {
	const k = 2
	b.warm(k, 0)
	for rep := range b.reps {
		for _, n := range b.sz.p1 {
			xs := ints(n)
			t0 := time.Now()
			out, err := meadowrun.RunMap(b.ctx, inc, xs, b.host, mapOpts(k, 0))
			dt := time.Since(t0).Seconds()
			check(err, "P1")
			if len(out) != n || out[n-1] != n {
				fatalf("P1: wrong results")
			}
			b.out.Emit("P1", map[string]any{"n": n, "workers": k, "api": "RunMap", "host": "Local{}"},
				"tasks_per_s", float64(n)/dt, "tasks/s", rep, "")
		}
	}
}

func (b *bench) p2() {
	calls := b.sz.p2
	b.warm(2, 0)
	opts := &meadowrun.Options{Output: io.Discard}
	call := func() {
		v, err := meadowrun.RunFunction(b.ctx, inc.With(1), b.host, opts)
		check(err, "P2")
		if v != 2 {
			fatalf("P2: got %d", v)
		}
	}
	for range 50 {
		call()
	}
	for rep := range b.reps {
		lat := make([]float64, calls)
		for i := range lat {
			t0 := time.Now()
			call()
			lat[i] = float64(time.Since(t0).Nanoseconds()) / 1e3
		}
		slices.Sort(lat)
		var sum float64
		for _, v := range lat {
			sum += v
		}
		params := map[string]any{"calls": calls, "workers": 2, "api": "RunFunction(f.With(1))", "host": "Local{}"}
		b.out.Emit("P2", params, "p50_us", rec.Percentile(lat, 50), "us", rep, "")
		b.out.Emit("P2", params, "p99_us", rec.Percentile(lat, 99), "us", rep, "")
		b.out.Emit("P2", params, "mean_us", sum/float64(calls), "us", rep, "")
	}
}

func (b *bench) p4() {
	const k = 2
	n, size := b.sz.p4n, b.sz.p4b
	base := make([]byte, size)
	for i := range base {
		base[i] = byte(i*7 + i>>8)
	}
	data := make([][]byte, n)
	for i := range data {
		d := slices.Clone(base)
		d[0], d[1], d[2], d[3] = byte(i), byte(i>>8), byte(i>>16), byte(i>>24)
		data[i] = d
	}
	b.warm(k, 0)
	for rep := range b.reps {
		t0 := time.Now()
		out, err := meadowrun.RunMap(b.ctx, echo, data, b.host, mapOpts(k, 0))
		dt := time.Since(t0).Seconds()
		check(err, "P4")
		if len(out) != n || len(out[n-1]) != size || out[n-1][0] != byte(n-1) {
			fatalf("P4: wrong results")
		}
		out = nil
		params := map[string]any{"n": n, "bytes_per_task": size, "workers": k, "api": "RunMap", "arg": "[]byte (raw)",
			"formula": "n*bytes_per_task*2/1e6/wall_s"}
		b.out.Emit("P4", params, "mb_per_s", float64(n*size*2)/1e6/dt, "MB/s", rep, "")
		b.out.Emit("P4", params, "wall_s", dt, "s", rep, "")
		runtime.GC()
	}
}

func (b *bench) p5() {
	const k, ms = 4, 50
	const cpu = 0.5
	n := b.sz.p5n
	ideal := float64(n) * ms / 1000 / k
	b.warm(k, cpu)
	for rep := range b.reps {
		args := make([]int, n)
		for i := range args {
			args[i] = ms
		}
		t0 := time.Now()
		out, err := meadowrun.RunMap(b.ctx, sleepMs, args, b.host, mapOpts(k, cpu))
		dt := time.Since(t0).Seconds()
		check(err, "P5")
		if len(out) != n {
			fatalf("P5: wrong results")
		}
		params := map[string]any{"n": n, "sleep_ms": ms, "concurrency": k, "ideal_s": ideal,
			"config": "MapOptions{Concurrency: 4}, Resources{LogicalCPU: 0.5}: 4 worker processes"}
		b.out.Emit("P5", params, "wall_s", dt, "s", rep, "")
		b.out.Emit("P5", params, "pct_over_ideal", (dt/ideal-1)*100, "%", rep, "")
	}
}

// maxRSSMB is this process's peak resident set (getrusage RUSAGE_SELF),
// in MB (10^6 bytes). Workers are other processes and are not counted.
func maxRSSMB() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		fatalf("getrusage: %v", err)
	}
	return float64(ru.Maxrss) * 1024 / 1e6 // Linux: KiB
}

func (b *bench) p10() {
	const k = 2
	n := b.sz.p10n
	b.warm(k, 0)
	before := maxRSSMB()
	for rep := range b.reps {
		args := func(yield func(int) bool) {
			for i := range n {
				if !yield(i) {
					return
				}
			}
		}
		var seq iter.Seq[int] = args
		t0 := time.Now()
		got, sum := 0, 0
		for r := range meadowrun.RunMapSeq(b.ctx, inc, seq, b.host, mapOpts(k, 0)) {
			if r.Err != nil {
				fatalf("P10: task %d: %v", r.TaskID, r.Err)
			}
			got++
			sum += r.Value
		}
		dt := time.Since(t0).Seconds()
		if got != n || sum != n*(n+1)/2 {
			fatalf("P10: got %d results (sum %d), want %d", got, sum, n)
		}
		params := map[string]any{"n": n, "workers": k, "api": "RunMapSeq(iter.Seq)", "host": "Local{}",
			"rss_before_mb": before, "rss_measure": "getrusage(RUSAGE_SELF).ru_maxrss of the client process (high-water mark; workers excluded)"}
		b.out.Emit("P10", params, "tasks_per_s", float64(n)/dt, "tasks/s", rep, "")
		b.out.Emit("P10", params, "client_peak_rss_mb", maxRSSMB(), "MB", rep, "")
	}
}
