package meadowrun

import (
	"slices"
	"testing"
	"time"
)

func TestPullBatchedYieldsEveryArgumentInOrder(t *testing.T) {
	for _, n := range []int{0, 1, pullAhead - 1, pullAhead, 3*pullAhead + 7} {
		next, stop := pullBatched(slices.Values(ints(n)))
		var got []int
		for v, ok := next(); ok; v, ok = next() {
			got = append(got, v)
		}
		stop()
		if !slices.Equal(got, ints(n)) {
			t.Fatalf("n=%d: got %d values, not 0..%d in order", n, len(got), n-1)
		}
		if _, ok := next(); ok {
			t.Fatalf("n=%d: next after the end and stop gave a value", n)
		}
	}
}

func ints(n int) []int {
	xs := make([]int, n)
	for i := range xs {
		xs[i] = i
	}
	return xs
}

func TestPullBatchedStopEndsTheIteratorAndWaitsForIt(t *testing.T) {
	returned := false
	seq := func(yield func(int) bool) {
		defer func() { returned = true }()
		for i := 0; ; i++ {
			if !yield(i) {
				return
			}
		}
	}
	next, stop := pullBatched(seq)
	for i := range 10 {
		if v, ok := next(); !ok || v != i {
			t.Fatalf("next = %d, %v; want %d", v, ok, i)
		}
	}
	stop()
	if !returned {
		t.Fatal("stop returned before the iterator did")
	}
	if _, ok := next(); ok {
		t.Fatal("next after stop gave a value")
	}
	stop() // a second stop does nothing
}

func TestPullBatchedHandsOverArgumentsWithoutWaitingForABatch(t *testing.T) {
	release := make(chan struct{})
	seq := func(yield func(int) bool) {
		if !yield(1) {
			return
		}
		<-release // the second argument comes only after the first was used
		yield(2)
	}
	next, stop := pullBatched(seq)
	defer stop()
	got := make(chan int)
	go func() {
		v, _ := next()
		got <- v
	}()
	select {
	case v := <-got:
		if v != 1 {
			t.Fatalf("first = %d", v)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the first argument waited for more")
	}
	close(release)
	if v, ok := next(); !ok || v != 2 {
		t.Fatalf("second = %d, %v", v, ok)
	}
}

func TestPullBatchedRaisesTheIteratorsPanicInNext(t *testing.T) {
	seq := func(yield func(int) bool) {
		yield(1)
		panic("boom")
	}
	next, stop := pullBatched(seq)
	defer stop()
	defer func() {
		if r := recover(); r != "boom" {
			t.Fatalf("recovered %v, want the iterator's panic", r)
		}
	}()
	for {
		if _, ok := next(); !ok {
			t.Fatal("next ended without the panic")
		}
	}
}
