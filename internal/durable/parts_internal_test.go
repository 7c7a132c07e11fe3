package durable

import (
	"errors"
	"slices"
	"testing"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/journal"
)

// The dealer gives every task to exactly one part, in proportion to the
// weights over any run of sum(weights) tasks, and maps each part's task
// indices back to the map's.
func TestDealerSplitsInProportionAndMapsBack(t *testing.T) {
	for _, weights := range [][]int{{1, 1}, {2, 2, 2}, {1, 3}, {8, 2, 1}, {5}, {64, 2, 1024}} {
		d := newDealer(weights)
		const n = 5000
		counts := make([]int, len(weights))
		for i := range n {
			k, j := d.part(i)
			if j != counts[k] {
				t.Fatalf("%v: task %d is part %d's task %d, want %d (parts' tasks in order, none skipped)", weights, i, k, j, counts[k])
			}
			counts[k]++
			if back := d.task(k, j); back != i {
				t.Fatalf("%v: part %d's task %d maps back to %d, want %d", weights, k, j, back, i)
			}
		}
		for k := range weights {
			if got := d.count(k, n); got != counts[k] {
				t.Fatalf("%v: count(%d, %d) = %d, want %d", weights, k, n, got, counts[k])
			}
		}
		// Any run of cycle tasks gives part k its weight, give or take one.
		for start := 0; start+d.cycle <= n; start += d.cycle/3 + 1 {
			got := make([]int, len(weights))
			for i := start; i < start+d.cycle; i++ {
				k, _ := d.part(i)
				got[k]++
			}
			for k, w := range weights {
				if got[k] < w-1 || got[k] > w+1 {
					t.Fatalf("%v: tasks %d..%d give part %d %d tasks, want about %d", weights, start, start+d.cycle, k, got[k], w)
				}
			}
		}
	}
	// A part's share is spread over the map, not bunched at its start.
	d := newDealer([]int{1, 1, 2})
	var first []int
	for i := range 8 {
		k, _ := d.part(i)
		first = append(first, k)
	}
	for k := range 3 {
		seen := false
		for _, p := range first[:4] {
			seen = seen || p == k
		}
		if !seen {
			t.Fatalf("the first four tasks go to parts %v: part %d gets none", first[:4], k)
		}
	}
}

func TestPlanPartsWeighsWhatFits(t *testing.T) {
	gib := int64(1 << 30)
	ms := []driver.Machine{
		{Name: "a", Capacity: driver.Resources{LogicalCPU: 8, MemoryBytes: 32 * gib, Flags: []string{"avx2"}}},
		{Name: "b", Capacity: driver.Resources{LogicalCPU: 2, MemoryBytes: 4 * gib}},
		{Name: "c", Err: errors.New("unreachable")},
		{Name: "d", Capacity: driver.Resources{LogicalCPU: 64, MemoryBytes: 2 * gib}},
		{Name: "e", Capacity: driver.Resources{LogicalCPU: 4, MemoryBytes: 8 * gib, GPUs: 2, GPUMemoryBytes: 40 * gib}},
	}
	weights := func(r driver.Resources, exclude map[string]bool) map[string]int {
		out := map[string]int{}
		for _, p := range planParts(ms, r, exclude) {
			out[p.Machine] = p.Weight
		}
		return out
	}
	check := func(what string, got, want map[string]int) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %v, want %v", what, got, want)
		}
		for m, w := range want {
			if got[m] != w {
				t.Fatalf("%s: %v, want %v", what, got, want)
			}
		}
	}
	check("1 CPU, 1 GiB", weights(driver.Resources{LogicalCPU: 1, MemoryBytes: gib}, nil),
		map[string]int{"a": 8, "b": 2, "d": 2, "e": 4})
	check("1 CPU, 3 GiB", weights(driver.Resources{LogicalCPU: 1, MemoryBytes: 3 * gib}, nil),
		map[string]int{"a": 8, "b": 1, "e": 2})
	check("half a CPU", weights(driver.Resources{LogicalCPU: 0.5}, map[string]bool{"a": true}),
		map[string]int{"b": 4, "d": 128, "e": 8})
	check("a flag", weights(driver.Resources{LogicalCPU: 1, Flags: []string{"avx2"}}, nil), map[string]int{"a": 8})
	check("a GPU", weights(driver.Resources{LogicalCPU: 1, GPUs: 1, GPUMemoryBytes: 24 * gib}, nil), map[string]int{"e": 2})
	check("a tiny task", weights(driver.Resources{LogicalCPU: 0.001}, nil),
		map[string]int{"a": 128, "b": 32, "d": maxWeight, "e": 64})
}

func TestSplitConcurrency(t *testing.T) {
	for _, c := range []struct {
		c       int
		weights []int
		want    []int
	}{
		{0, []int{2, 2}, []int{0, 0}},
		{4, []int{2, 2}, []int{2, 2}},
		{3, []int{1, 1, 1}, []int{1, 1, 1}},
		{10, []int{8, 2}, []int{8, 2}},
		{5, []int{8, 2}, []int{4, 1}},
		{7, []int{1, 1, 1}, []int{3, 2, 2}},
		{2, []int{64, 1}, []int{1, 1}},
		{100, []int{3, 1}, []int{75, 25}},
	} {
		got := splitConcurrency(c.c, c.weights)
		if !slices.Equal(got, c.want) {
			t.Errorf("splitConcurrency(%d, %v) = %v, want %v", c.c, c.weights, got, c.want)
		}
	}
}

func TestDealToKeepsPartsWithWork(t *testing.T) {
	parts := func(weights ...int) []journal.Part {
		var ps []journal.Part
		for i, w := range weights {
			ps = append(ps, journal.Part{Machine: string(rune('a' + i)), Weight: w})
		}
		return ps
	}
	names := func(ps []journal.Part) string {
		var s string
		for _, p := range ps {
			s += p.Machine
		}
		return s
	}
	for _, c := range []struct {
		parts []journal.Part
		n, c  int
		want  string
	}{
		{parts(2, 2, 2), 100, 0, "abc"},
		{parts(2, 2, 2), 2, 0, "ab"},
		{parts(1000, 1), 2, 0, "a"},
		{parts(1000, 1), 1001, 0, "ab"},
		{parts(1, 4, 2), 100, 2, "bc"},
		{parts(1, 4, 2), 100, 1, "b"},
		{parts(), 10, 0, ""},
	} {
		got, d := dealTo(c.parts, c.n, c.c)
		if names(got) != c.want {
			t.Errorf("dealTo(%v, n=%d, c=%d) keeps %q, want %q", c.parts, c.n, c.c, names(got), c.want)
			continue
		}
		for k := range got {
			if d.count(k, c.n) == 0 {
				t.Errorf("dealTo(%v, n=%d, c=%d): part %d gets no task", c.parts, c.n, c.c, k)
			}
		}
	}
}
