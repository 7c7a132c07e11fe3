package meadowrun_test

import (
	"context"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/inprocess"
)

var inc = meadowrun.Register("bench.Inc", func(ctx context.Context, x int) (int, error) { return x + 1, nil })

// BenchmarkWarmCall measures one RunFunction on a warm local worker: the
// latency a caller sees, reported as p50 and p99.
func BenchmarkWarmCall(b *testing.B) {
	ctx := context.Background()
	o := &meadowrun.Options{Output: io.Discard}
	if _, err := meadowrun.RunFunction(ctx, inc.With(0), meadowrun.Local(), o); err != nil {
		b.Fatal(err)
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t := time.Now()
		if _, err := meadowrun.RunFunction(ctx, inc.With(i), meadowrun.Local(), o); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkMapTrivial measures the throughput of a map of x → x+1 over
// two warm local workers.
func BenchmarkMapTrivial(b *testing.B) {
	ctx := context.Background()
	args := make([]int, 100_000)
	for i := range args {
		args[i] = i
	}
	o := &meadowrun.MapOptions{Options: meadowrun.Options{Output: io.Discard}, Concurrency: 2}
	if _, err := meadowrun.RunMap(ctx, inc, args[:100], meadowrun.Local(), o); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if _, err := meadowrun.RunMap(ctx, inc, args, meadowrun.Local(), o); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(args))/time.Since(start).Seconds(), "tasks/s")
}

// BenchmarkWarmCallInProcess is BenchmarkWarmCall without processes: the
// coordinator's own cost.
func BenchmarkWarmCallInProcess(b *testing.B) {
	ctx := context.Background()
	h := inprocess.NewHost(2)
	defer h.Close()
	o := &meadowrun.Options{Output: io.Discard}
	if _, err := meadowrun.RunFunction(ctx, inc.With(0), h, o); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := meadowrun.RunFunction(ctx, inc.With(i), h, o); err != nil {
			b.Fatal(err)
		}
	}
}
