package coord

import (
	"slices"
	"testing"
)

func tasks(from, to int) []*task {
	var ts []*task
	for i := from; i < to; i++ {
		ts = append(ts, &task{index: i, payload: make([]byte, 10)})
	}
	return ts
}

func indexes(ts []*task) []int {
	var xs []int
	for _, t := range ts {
		xs = append(xs, t.index)
	}
	return xs
}

func TestTaskQueueKeepsOrderAcrossChunks(t *testing.T) {
	var q taskQueue
	q.pushBack(tasks(3, 6))
	q.pushBack(tasks(6, 10))
	q.pushFront(tasks(0, 3))
	if q.len() != 10 || q.front().index != 0 {
		t.Fatalf("len %d, front %d", q.len(), q.front().index)
	}
	if got := indexes(q.popFront(4)); !slices.Equal(got, []int{0, 1, 2, 3}) {
		t.Fatalf("first 4 = %v", got)
	}
	if got := q.prefixUnder(5, 25); got != 2 {
		t.Fatalf("prefixUnder(5, 25 bytes) of 10-byte payloads = %d, want 2", got)
	}
	if got := q.prefixUnder(5, 5); got != 1 {
		t.Fatalf("prefixUnder(5, 5 bytes) = %d, want at least one task", got)
	}
	if got := q.prefixUnder(3, 1<<20); got != 3 {
		t.Fatalf("prefixUnder(3, 1 MiB) = %d", got)
	}
	if got := indexes(q.drain()); !slices.Equal(got, []int{4, 5, 6, 7, 8, 9}) || q.len() != 0 {
		t.Fatalf("drain = %v, len after %d", got, q.len())
	}
	q.pushFront(nil)
	q.pushBack(nil)
	if q.len() != 0 || len(q.popFront(3)) != 0 {
		t.Fatal("an empty queue gave tasks")
	}
}
