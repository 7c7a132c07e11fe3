package meadowrun

import (
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/meadowrun-go/meadowrun/internal/journal"
)

// JournalError is returned with the results of a job that ran, when its
// outcomes could not all be journaled (for example the disk is full): the
// caller has the results, but other processes may not see them. The
// journal itself is left intact.
type JournalError struct{ Err error }

// Error describes the failure; the journal error is wrapped.
func (e *JournalError) Error() string {
	return fmt.Sprintf("meadowrun: the job ran, but its outcome could not be journaled: %v", e.Err)
}

// Unwrap returns the journal's error.
func (e *JournalError) Unwrap() error { return e.Err }

// syncWriter serialises writes to w.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// resultQueue hands a job's outcomes to the in-process handle, unbounded,
// so that a slow reader never holds the job up.
type resultQueue struct {
	mu     sync.Mutex
	items  []journal.Result
	closed bool
	wake   chan struct{}
	taken  bool
}

func newResultQueue() *resultQueue { return &resultQueue{wake: make(chan struct{}, 1)} }

func (q *resultQueue) push(r journal.Result) {
	q.mu.Lock()
	q.items = append(q.items, r)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *resultQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// take claims the queue for one reader; later readers use the journal.
func (q *resultQueue) take() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.taken {
		return false
	}
	q.taken = true
	return true
}

// all yields every outcome until the queue is closed or ctx ends.
func (q *resultQueue) all(ctx context.Context, yield func(journal.Result) bool) error {
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
