package meadowrun

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/meadowrun-go/meadowrun/internal/journal"
)

// recorder journals a job's outcomes in the background, committing
// whatever has accumulated in one transaction (group commit), so that
// journaling never slows the job down, and watches the journal for a
// cancel request from another process.
type recorder struct {
	st       *journal.Store
	id       string
	onCancel func()
	// warn, if set, is told of the first failure of a series.
	warn func(error)
	// persist is how long a closing recorder keeps trying to journal
	// what it holds.
	persist time.Duration

	mu      sync.Mutex
	pending []journal.Result
	muts    []func(*journal.Record)
	closing bool
	wake    chan struct{}
	closeCh chan struct{} // closed by close
	done    chan struct{}
	err     error // the last commit's error; nil once a commit succeeds
	stopped bool
}

// commitGap is the least time between two commits: results arriving
// meanwhile share the next transaction, other processes find the journal
// unlocked most of the time, and the disk syncs of the commits (two each)
// do not slow the machine down: on a small VM, syncing 50 times a second
// made a map of short commands 25% slower. Attached processes see results
// at most this late; the caller of an in-process job sees them at once.
const commitGap = 100 * time.Millisecond

// cancelPoll is how often an idle recorder looks for a cancel request.
const cancelPoll = 200 * time.Millisecond

func newRecorder(st *journal.Store, id string, onCancel func(), warn func(error), persist time.Duration) *recorder {
	r := &recorder{st: st, id: id, onCancel: onCancel, warn: warn, persist: persist, wake: make(chan struct{}, 1),
		closeCh: make(chan struct{}), done: make(chan struct{})}
	go r.loop()
	return r
}

func (r *recorder) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *recorder) add(res journal.Result) {
	r.mu.Lock()
	r.pending = append(r.pending, res)
	r.mu.Unlock()
	r.signal()
}

func (r *recorder) mutate(f func(*journal.Record)) {
	r.mu.Lock()
	r.muts = append(r.muts, f)
	r.mu.Unlock()
	r.signal()
}

// close queues the final mutation, waits until everything is journaled or
// journaling has failed for good, and returns the journal's error.
func (r *recorder) close(f func(*journal.Record)) error {
	r.mu.Lock()
	r.muts = append(r.muts, f)
	if !r.closing {
		r.closing = true
		close(r.closeCh)
	}
	r.mu.Unlock()
	r.signal()
	<-r.done
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return &JournalError{Err: r.err}
	}
	return nil
}

// stop ends the recorder without waiting for pending work (after close,
// it has none).
func (r *recorder) stop() {
	r.mu.Lock()
	r.stopped = true
	r.mu.Unlock()
	r.signal()
}

func (r *recorder) loop() {
	defer close(r.done)
	ctx := context.Background()
	poll := time.NewTicker(cancelPoll)
	defer poll.Stop()
	var last, closingSince time.Time
	seen := ""
	backoff := 0 * time.Second
	failures := 0
	for {
		r.mu.Lock()
		batch, muts, closing, stopped := r.pending, r.muts, r.closing, r.stopped
		r.pending, r.muts = nil, nil
		r.mu.Unlock()
		if stopped && !closing {
			return
		}
		if len(batch) == 0 && len(muts) == 0 {
			if closing {
				return
			}
			select {
			case <-r.wake:
			case <-poll.C:
				if v := r.st.Version(); v != seen {
					seen = v
					if rec, err := r.st.Get(ctx, r.id); err == nil && rec.CancelRequested {
						r.onCancel()
					}
				}
			}
			continue
		}
		if d := commitGap - time.Since(last); d > 0 && !closing {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-r.closeCh:
			}
			t.Stop()
			// Take what arrived meanwhile too.
			r.mu.Lock()
			batch, muts = append(batch, r.pending...), append(muts, r.muts...)
			r.pending, r.muts = nil, nil
			r.mu.Unlock()
		}
		rec, err := r.st.Commit(ctx, r.id, batch, func(rec *journal.Record) error {
			for _, res := range batch {
				switch {
				case res.Task < 0:
				case res.Err == nil:
					rec.Done++
				case res.Err.Kind != "":
					rec.Failed++
					// Tasks ended by the job's end (a cancel) count as neither.
				}
			}
			for _, f := range muts {
				f(rec)
			}
			return nil
		})
		last = time.Now()
		if err == nil {
			r.mu.Lock()
			r.err = nil
			r.mu.Unlock()
			backoff, failures = 0, 0
			if rec.CancelRequested && !rec.Final() {
				r.onCancel()
			}
			continue
		}
		// Keep everything for the next try: nothing is dropped while the
		// process lives.
		failures++
		r.mu.Lock()
		r.err = err
		r.pending = append(batch, r.pending...)
		r.muts = append(muts, r.muts...)
		closing = r.closing
		r.mu.Unlock()
		if closing && closingSince.IsZero() {
			closingSince = time.Now()
		}
		if errors.Is(err, journal.ErrNotFound) || closing && time.Since(closingSince) >= r.persist {
			return
		}
		if failures == 1 && r.warn != nil {
			r.warn(err)
		}
		// Retry later: the disk may have been freed meanwhile. Closing
		// interrupts the wait; a closing recorder gives up after a few
		// more tries.
		backoff = min(max(2*backoff, 100*time.Millisecond), 5*time.Second)
		if closing && r.persist < time.Minute {
			backoff = r.persist / 5
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-r.closeCh:
		}
		t.Stop()
	}
}

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
