package durable

import (
	"context"
	"sync"

	"github.com/meadowrun-go/meadowrun/internal/journal"
)

// Queue hands a job's outcomes to the in-process handle, unbounded,
// so that a slow reader never holds the job up.
type Queue struct {
	mu     sync.Mutex
	items  []journal.Result
	closed bool
	wake   chan struct{}
	taken  bool
}

// NewQueue returns an empty queue.
func NewQueue() *Queue { return &Queue{wake: make(chan struct{}, 1)} }

// Push adds an outcome.
func (q *Queue) Push(r journal.Result) {
	q.mu.Lock()
	q.items = append(q.items, r)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// Close says that no more outcomes come.
func (q *Queue) Close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// Take claims the queue for one reader; later readers use the journal.
func (q *Queue) Take() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.taken {
		return false
	}
	q.taken = true
	return true
}

// All yields every outcome until the queue is closed or ctx ends.
func (q *Queue) All(ctx context.Context, yield func(journal.Result) bool) error {
	for {
		q.mu.Lock()
		items, closed := q.items, q.closed
		q.items = nil
		q.mu.Unlock()
		for _, it := range items {
			if !yield(it) {
				return nil
			}
		}
		if closed && len(items) == 0 {
			return nil
		}
		if len(items) > 0 {
			continue
		}
		select {
		case <-q.wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
