// Command pybench measures Python functions on meadowrun's Python workers
// next to the standard library's multiprocessing.Pool, in the same run, on
// the same python3: a map of x+1 (Pool.map with chunksize 1 and with its
// default chunksize) and a warm call (Pool.apply).
//
//	go run ./bench/cmd/pybench [-quick]
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/bench/internal/benchmain"
)

// fns is the module both sides call.
const fns = "def inc(x):\n    return x + 1\n"

// peer times multiprocessing.Pool with 2 processes: argv n, calls.
const peer = `
import multiprocessing, sys, time
from pybench_fns import inc
n, calls = int(sys.argv[1]), int(sys.argv[2])
with multiprocessing.Pool(2) as p:
    p.map(inc, range(100))
    for name, kw in (("chunksize 1", {"chunksize": 1}), ("default chunksize", {})):
        t = time.perf_counter()
        p.map(inc, range(n), **kw)
        print("map", name, n / (time.perf_counter() - t))
    lat = []
    for i in range(calls):
        t = time.perf_counter()
        p.apply(inc, (i,))
        lat.append(time.perf_counter() - t)
    lat.sort()
    print("apply", lat[len(lat) // 2], lat[len(lat) * 99 // 100])
`

func main() { benchmain.Main("pybench", run) }

func run(quick bool) error {
	n, calls := 10_000, 1000
	if quick {
		n, calls = 300, 50
	}
	dir, err := os.MkdirTemp("", "pybench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := os.WriteFile(filepath.Join(dir, "pybench_fns.py"), []byte(fns), 0o644); err != nil {
		return err
	}
	ctx := context.Background()
	o := &meadowrun.Options{Output: io.Discard, LogDir: dir,
		Deployment: meadowrun.PreinstalledInterpreter("python3", map[string]string{"PYTHONPATH": dir})}
	inc := meadowrun.Named[int, int]("pybench_fns.inc")
	h := meadowrun.Local()
	defer h.Close()
	args := make([]int, n)
	for i := range args {
		args[i] = i
	}
	mo := &meadowrun.MapOptions{Options: *o, Concurrency: 2}
	if _, err := meadowrun.RunMap(ctx, inc, args[:100], h, mo); err != nil {
		return err
	}
	start := time.Now()
	got, err := meadowrun.RunMap(ctx, inc, args, h, mo)
	if err != nil {
		return err
	}
	if got[n-1] != n {
		return fmt.Errorf("map: last result %d, want %d", got[n-1], n)
	}
	ours := float64(n) / time.Since(start).Seconds()
	lat := make([]time.Duration, 0, calls)
	for i := range calls {
		t := time.Now()
		if _, err := meadowrun.RunFunction(ctx, inc.With(i), h, o); err != nil {
			return err
		}
		lat = append(lat, time.Since(t))
	}
	slices.Sort(lat)

	cmd := exec.Command("python3", "-c", peer, strconv.Itoa(n), strconv.Itoa(calls))
	cmd.Env = append(os.Environ(), "PYTHONPATH="+dir)
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("the multiprocessing peer: %w", err)
	}
	var poolMap []float64
	var apply50, apply99 float64
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		switch f[0] {
		case "map":
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			poolMap = append(poolMap, v)
		case "apply":
			apply50, _ = strconv.ParseFloat(f[1], 64)
			apply99, _ = strconv.ParseFloat(f[2], 64)
		}
	}
	if len(poolMap) != 2 {
		return fmt.Errorf("the multiprocessing peer printed %q", out)
	}
	sec := func(s float64) time.Duration { return time.Duration(s * float64(time.Second)).Round(time.Microsecond) }
	fmt.Printf("PY1 map of x+1, %d tasks, 2 workers: meadowrun %.0f tasks/s; Pool.map chunksize 1 %.0f (ours/theirs %.2f); Pool.map default chunksize %.0f (ours/theirs %.2f)\n",
		n, ours, poolMap[0], ours/poolMap[0], poolMap[1], ours/poolMap[1])
	p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
	fmt.Printf("PY2 warm call over %d calls: meadowrun p50 %v, p99 %v; Pool.apply p50 %v, p99 %v (theirs/ours at p50 %.2f)\n",
		calls, p50.Round(time.Microsecond), p99.Round(time.Microsecond), sec(apply50), sec(apply99), apply50*float64(time.Second)/float64(p50))
	return nil
}
