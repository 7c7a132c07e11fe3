package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meadowrun-go/meadowrun/bench/internal/rec"
)

const ours = "meadowrun"

// higherBetter lists the metrics where a larger value wins; every other
// metric is lower-is-better.
var higherBetter = map[string]bool{"tasks_per_s": true, "mb_per_s": true, "jobs_per_s": true}

var metricOrder = []string{"tasks_per_s", "p50_us", "p99_us", "mean_us", "cold_start_ms", "cold_exit_ms",
	"mb_per_s", "wall_s", "pct_over_ideal", "jobs_per_s", "client_peak_rss_mb"}

var implOrder = []string{ours, "mp_pool_chunk1", "mp_pool", "cf_ppe", "joblib", "dask", "xargs", "gnu_parallel"}

type key struct{ workload, impl, size, metric string }

type cell struct {
	vals    []float64
	unit    string
	version string
	params  map[string]any
	notes   []string
}

func (c *cell) median() float64 { return rec.Median(c.vals) }

type report struct {
	cells     map[key]*cell
	workloads []string
}

func buildReport(cfg *config, rs []rec.Record) *report {
	r := &report{cells: map[key]*cell{}, workloads: cfg.workloads}
	for _, x := range rs {
		k := key{x.Workload, x.Impl, x.Size(), x.Metric}
		c := r.cells[k]
		if c == nil {
			c = &cell{unit: x.Unit, version: x.Version, params: x.Params}
			r.cells[k] = c
		}
		c.vals = append(c.vals, x.Value)
		if x.Note != "" && !slices.Contains(c.notes, x.Note) {
			c.notes = append(c.notes, x.Note)
		}
	}
	return r
}

// get returns the median of a cell and whether it exists.
func (r *report) get(workload, impl, size, metric string) (float64, bool) {
	c := r.cells[key{workload, impl, size, metric}]
	if c == nil {
		return 0, false
	}
	return c.median(), true
}

// sizes of a workload measured by impl ("" = any impl), ascending.
func (r *report) sizes(workload, impl string) []string {
	var out []string
	for k := range r.cells {
		if k.workload == workload && (impl == "" || k.impl == impl) && !slices.Contains(out, k.size) {
			out = append(out, k.size)
		}
	}
	slices.SortFunc(out, func(a, b string) int {
		x, _ := strconv.Atoi(a)
		y, _ := strconv.Atoi(b)
		return cmp.Or(cmp.Compare(x, y), cmp.Compare(a, b))
	})
	return out
}

func indexOr(list []string, s string) int {
	if i := slices.Index(list, s); i >= 0 {
		return i
	}
	return len(list)
}

func fmtNum(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 1e4:
		return commas(int64(math.Round(v)))
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
}

func commas(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, ch := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(ch)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func fmtRatio(x float64) string {
	switch {
	case math.IsInf(x, 0) || math.IsNaN(x):
		return "n/a"
	case x >= 100:
		return commas(int64(math.Round(x))) + "×"
	default:
		return strconv.FormatFloat(x, 'g', 3, 64) + "×"
	}
}

// vsOurs compares ours with a peer: a ratio above 1 means we are better.
// pct_over_ideal is compared as a difference in percentage points.
func vsOurs(metric string, oursV, peer float64) string {
	switch {
	case metric == "pct_over_ideal":
		return fmt.Sprintf("%+.2f pp", peer-oursV)
	case higherBetter[metric]:
		return fmtRatio(oursV / peer)
	default:
		return fmtRatio(peer / oursV)
	}
}

func direction(metric string) string {
	switch {
	case metric == "pct_over_ideal":
		return "lower; vs ours = peer − ours"
	case higherBetter[metric]:
		return "higher; vs ours = ours/peer"
	default:
		return "lower; vs ours = peer/ours"
	}
}

func (r *report) markdownTable() string {
	var b strings.Builder
	b.WriteString("| W | size | metric (better; ratio) | impl | median | unit | min–max | reps | vs ours (>1: we are better) |\n")
	b.WriteString("|---|---:|---|---|---:|---|---|---:|---:|\n")
	for _, w := range r.workloads {
		for _, size := range r.sizes(w, "") {
			var metrics []string
			for k := range r.cells {
				if k.workload == w && k.size == size && !slices.Contains(metrics, k.metric) {
					metrics = append(metrics, k.metric)
				}
			}
			slices.SortFunc(metrics, func(a, b string) int { return cmp.Compare(indexOr(metricOrder, a), indexOr(metricOrder, b)) })
			for _, m := range metrics {
				var impls []string
				for k := range r.cells {
					if k.workload == w && k.size == size && k.metric == m {
						impls = append(impls, k.impl)
					}
				}
				slices.SortFunc(impls, func(a, b string) int {
					return cmp.Or(cmp.Compare(indexOr(implOrder, a), indexOr(implOrder, b)), cmp.Compare(a, b))
				})
				oursV, haveOurs := r.get(w, ours, size, m)
				for _, impl := range impls {
					c := r.cells[key{w, impl, size, m}]
					vs := "—"
					if impl != ours {
						vs = "n/a (no ours)"
						if haveOurs {
							vs = vsOurs(m, oursV, c.median())
						}
					}
					lo, hi := slices.Min(c.vals), slices.Max(c.vals)
					name := impl
					if impl == ours {
						name = "**" + impl + "**"
					}
					fmt.Fprintf(&b, "| %s | %s | %s (%s) | %s | %s | %s | %s–%s | %d | %s |\n",
						w, size, m, direction(m), name, fmtNum(c.median()), c.unit, fmtNum(lo), fmtNum(hi), len(c.vals), vs)
				}
			}
		}
	}
	return b.String()
}

type target struct {
	name, status, detail string
}

func (r *report) targets() []target {
	var ts []target
	has := func(w string) bool { return slices.Contains(r.workloads, w) }
	add := func(name string, ok, avail bool, detail string) {
		st := "n/a"
		if avail {
			st = "FAIL"
			if ok {
				st = "PASS"
			}
		}
		ts = append(ts, target{name, st, detail})
	}
	// ratio is ours vs peer, higher = better for us.
	ratio := func(w, peer, size, metric string) (float64, bool, string) {
		o, ok1 := r.get(w, ours, size, metric)
		p, ok2 := r.get(w, peer, size, metric)
		if !ok1 || !ok2 {
			return 0, false, "not measured"
		}
		x := p / o
		if higherBetter[metric] {
			x = o / p
		}
		return x, true, fmt.Sprintf("ours %s vs %s %s → %s", fmtNum(o), peer, fmtNum(p), fmtRatio(x))
	}
	abs := func(w, size, metric string, limit float64, le bool) (bool, bool, string) {
		v, ok := r.get(w, ours, size, metric)
		if !ok {
			return false, false, "not measured"
		}
		unit := r.cells[key{w, ours, size, metric}].unit
		if le {
			return v <= limit, true, fmt.Sprintf("%s %s (limit ≤ %s)", fmtNum(v), unit, fmtNum(limit))
		}
		return v >= limit, true, fmt.Sprintf("%s %s (limit ≥ %s)", fmtNum(v), unit, fmtNum(limit))
	}
	if has("P1") {
		for _, s := range r.sizes("P1", ours) {
			ok, av, d := abs("P1", s, "tasks_per_s", 1e6, false)
			add(fmt.Sprintf("P1 n=%s: ≥ 1,000,000 tasks/s", s), ok, av, d)
			for _, t := range []struct {
				peer, name string
				min        float64
				gt         bool
			}{
				{"mp_pool", "ahead of Pool.map (default chunksize)", 1, true},
				{"dask", "≥ 1600× Dask", 1600, false},
				{"mp_pool_chunk1", "≥ 10× Pool.map(chunksize=1)", 10, false},
				{"joblib", "ahead of joblib (auto batching)", 1, true},
			} {
				x, av, d := ratio("P1", t.peer, s, "tasks_per_s")
				add(fmt.Sprintf("P1 n=%s: %s", s, t.name), x >= t.min && (!t.gt || x > t.min), av, d)
			}
		}
	}
	if has("P2") {
		for _, s := range r.sizes("P2", ours) {
			ok, av, d := abs("P2", s, "p50_us", 50, true)
			add("P2: p50 ≤ 50 µs", ok, av, d)
			ok, av, d = abs("P2", s, "p99_us", 200, true)
			add("P2: p99 ≤ 200 µs", ok, av, d)
			x, av, d := ratio("P2", "mp_pool", s, "p50_us")
			add("P2: ≥ 5× faster than Pool.apply (p50)", x >= 5, av, d)
		}
	}
	if has("P3") {
		ok, av, d := abs("P3", "", "cold_start_ms", 10, true)
		add("P3: cold start ≤ 10 ms", ok, av, d)
		x, av, d := ratio("P3", "mp_pool", "", "cold_start_ms")
		add("P3: ≥ 2.5× faster than multiprocessing (Pool)", x >= 2.5, av, d)
	}
	if has("P4") {
		for _, s := range r.sizes("P4", ours) {
			ok, av, d := abs("P4", s, "mb_per_s", 2000, false)
			add("P4: ≥ 2 GB/s", ok, av, d)
			x, av, d := ratio("P4", "cf_ppe", s, "mb_per_s")
			add("P4: ≥ 5× ProcessPoolExecutor", x >= 5, av, d)
		}
	}
	if has("P5") {
		for _, s := range r.sizes("P5", ours) {
			ok, av, d := abs("P5", s, "pct_over_ideal", 1, true)
			add("P5: ≤ 1% over ideal", ok, av, d)
		}
	}
	if has("P6") {
		for _, s := range r.sizes("P6", ours) {
			x, av, d := ratio("P6", "xargs", s, "jobs_per_s")
			add("P6: ≥ xargs rate (medians)", x >= 1, av, d)
			ok, av, d := r.everyRep("P6", "xargs", s, "jobs_per_s")
			add("P6: ≥ xargs rate in every repetition", ok, av, d)
			x, av, d = ratio("P6", "gnu_parallel", s, "jobs_per_s")
			add("P6: ≥ 5× GNU parallel", x >= 5, av, d)
		}
	}
	if has("P10") {
		for _, s := range r.sizes("P10", ours) {
			ok, av, d := abs("P10", s, "client_peak_rss_mb", 100, true)
			add(fmt.Sprintf("P10 n=%s: client peak RSS ≤ 100 MB", s), ok, av, d)
			v, ok1 := r.get("P10", ours, s, "tasks_per_s")
			p1 := r.sizes("P1", ours)
			if !ok1 || len(p1) == 0 {
				add(fmt.Sprintf("P10 n=%s: throughput within 20%% of P1", s), false, false, "needs P1 and P10")
				continue
			}
			big := p1[len(p1)-1]
			ref, _ := r.get("P1", ours, big, "tasks_per_s")
			add(fmt.Sprintf("P10 n=%s: throughput within 20%% of P1", s), v >= 0.8*ref, true,
				fmt.Sprintf("%s tasks/s vs P1 n=%s %s tasks/s (%.0f%%)", fmtNum(v), big, fmtNum(ref), 100*v/ref))
		}
	}
	return ts
}

// everyRep reports whether ours beat the peer in every repetition of a
// workload (repetitions paired by their order), for targets that a median
// would flatter.
func (r *report) everyRep(w, peer, size, metric string) (ok, avail bool, detail string) {
	o, ok1 := r.cells[key{w, ours, size, metric}]
	p, ok2 := r.cells[key{w, peer, size, metric}]
	if !ok1 || !ok2 || len(o.vals) == 0 || len(o.vals) != len(p.vals) {
		return false, false, "not measured in paired repetitions"
	}
	worst := math.Inf(1)
	for i := range o.vals {
		x := o.vals[i] / p.vals[i]
		if !higherBetter[metric] {
			x = p.vals[i] / o.vals[i]
		}
		worst = min(worst, x)
	}
	return worst >= 1, true, fmt.Sprintf("worst repetition: ours vs %s → %s", peer, fmtRatio(worst))
}

func (r *report) markdownTargets() string {
	var b strings.Builder
	b.WriteString("| target | result | measured (medians) |\n|---|---|---|\n")
	for _, t := range r.targets() {
		st := t.status
		if st != "n/a" {
			st = "**" + st + "**"
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", t.name, st, t.detail)
	}
	return b.String()
}

// details lists each contestant's version, parameters and notes.
func (r *report) details() string {
	type wi struct{ w, impl string }
	seen := map[wi]bool{}
	var list []wi
	for k := range r.cells {
		if x := (wi{k.workload, k.impl}); !seen[x] {
			seen[x] = true
			list = append(list, x)
		}
	}
	slices.SortFunc(list, func(a, b wi) int {
		return cmp.Or(cmp.Compare(indexOr(allWorkloads, a.w), indexOr(allWorkloads, b.w)),
			cmp.Compare(indexOr(implOrder, a.impl), indexOr(implOrder, b.impl)), cmp.Compare(a.impl, b.impl))
	})
	var b strings.Builder
	for _, x := range list {
		var version string
		var notes []string
		var params []string
		for k, c := range r.cells {
			if k.workload != x.w || k.impl != x.impl {
				continue
			}
			version = c.version
			var pb strings.Builder
			enc := json.NewEncoder(&pb)
			enc.SetEscapeHTML(false)
			enc.Encode(c.params)
			if p := strings.TrimSpace(pb.String()); !slices.Contains(params, p) {
				params = append(params, p)
			}
			for _, n := range c.notes {
				if !slices.Contains(notes, n) {
					notes = append(notes, n)
				}
			}
		}
		slices.Sort(params)
		fmt.Fprintf(&b, "- **%s %s** (%s): ", x.w, x.impl, version)
		for i, p := range params {
			if i > 0 {
				b.WriteString("; ")
			}
			fmt.Fprintf(&b, "`%s`", p)
		}
		for _, n := range notes {
			fmt.Fprintf(&b, " — note: %s", n)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func cmdOut(name string, args ...string) string {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return "unavailable (" + err.Error() + ")"
	}
	return firstLine(string(out))
}

func fileField(path, prefix string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "unknown"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, prefix) {
			v := strings.TrimSpace(strings.TrimPrefix(l, prefix))
			v = strings.TrimPrefix(v, ":")
			v = strings.TrimPrefix(v, "=")
			return strings.Trim(strings.TrimSpace(v), `"`)
		}
	}
	return "unknown"
}

func memTotal() string {
	v := fileField("/proc/meminfo", "MemTotal")
	f := strings.Fields(v)
	if len(f) == 2 && f[1] == "kB" {
		if kb, err := strconv.ParseFloat(f[0], 64); err == nil {
			return fmt.Sprintf("%.1f GiB (%s)", kb/(1<<20), v)
		}
	}
	return v
}

func (r *report) document(cfg *config, table, targets, side string, took time.Duration) string {
	var b strings.Builder
	args := strings.Join(os.Args[1:], " ")
	cmdline := "go run ./bench/cmd/bench"
	if args != "" {
		cmdline += " " + args
	}
	py := cfg.python
	pyVers := cmdOut(py, "-c", "import sys, dask, distributed, joblib; print('python', sys.version.split()[0], '| dask', dask.__version__, '| distributed', distributed.__version__, '| joblib', joblib.__version__)")
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	fmt.Fprintf(&b, "# Benchmarks\n\n")
	fmt.Fprintf(&b, "Generated by `%s` on %s (took %.0f s). Regenerate with the same command from the repository root; see `bench/README.md` for the workloads, the peers and how to read this.\n\n",
		cmdline, time.Now().UTC().Format("2006-01-02 15:04 MST"), took.Seconds())
	if cfg.quick {
		b.WriteString("**-quick run: tiny sizes for a smoke test; these numbers are not benchmarks.**\n\n")
	}
	b.WriteString("## Machine\n\n")
	fmt.Fprintf(&b, "- nproc: %s (Go runtime.NumCPU %d)\n", cmdOut("nproc"), runtime.NumCPU())
	fmt.Fprintf(&b, "- CPU: %s\n", fileField("/proc/cpuinfo", "model name"))
	fmt.Fprintf(&b, "- memory: %s\n", memTotal())
	fmt.Fprintf(&b, "- kernel: %s (%s)\n", strings.TrimSpace(string(kernel)), fileField("/etc/os-release", "PRETTY_NAME"))
	b.WriteString("\n## Versions\n\n")
	fmt.Fprintf(&b, "- %s\n", cmdOut("go", "version"))
	fmt.Fprintf(&b, "- %s (`%s`)\n", pyVers, py)
	fmt.Fprintf(&b, "- %s\n", cmdOut("parallel", "--version"))
	fmt.Fprintf(&b, "- %s\n", cmdOut("xargs", "--version"))
	b.WriteString("\n## Method\n\n")
	fmt.Fprintf(&b, "%d repetition(s). In each, every contestant runs once as a fresh process (`--reps 1`), in an order rotated from one repetition to the next: meadowrun-go's workloads (`bench/cmd/ours`, P3 via `bench/cmd/coldstart`: median of %d cold start(s) per rep), then the peer scripts (%s). Workers and pools are started and warmed before timing except in P3. Each cell is the median over repetitions; min–max shows the spread. `vs ours` is oriented so that **> 1 means meadowrun-go is better**: ours/peer for throughputs (higher is better), peer/ours for times and latencies (lower is better); `pct_over_ideal` is compared as peer − ours in percentage points (> 0: we are closer to ideal).\n\n",
		cfg.reps, cfg.coldRuns, strings.Join(cfg.peers, ", "))
	b.WriteString("## Results\n\n")
	b.WriteString(table)
	b.WriteString("\n## Targets (from the issue)\n\n")
	b.WriteString(targets)
	b.WriteString("\n")
	b.WriteString(side)
	b.WriteString("\n## Parameters, versions and notes per contestant\n\n")
	b.WriteString(r.details())
	return b.String()
}
