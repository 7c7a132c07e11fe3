package durable

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/meadowrun-go/meadowrun/internal/journal"
)

// Recorder journals a job's outcomes in the background, committing
// whatever has accumulated in one transaction (group commit), so that
// journaling never slows the job down, and watches the journal for a
// cancel request from another process.
type Recorder struct {
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

// NewRecorder starts the recorder of job id of st. onCancel is called when
// a cancel request is seen; warn (if not nil) is told of the first
// failure of a series of failed commits; a closing recorder keeps trying
// to journal what it holds for persist.
func NewRecorder(st *journal.Store, id string, onCancel func(), warn func(error), persist time.Duration) *Recorder {
	r := &Recorder{st: st, id: id, onCancel: onCancel, warn: warn, persist: persist, wake: make(chan struct{}, 1),
		closeCh: make(chan struct{}), done: make(chan struct{})}
	go r.loop()
	return r
}

func (r *Recorder) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Add queues a task's final outcome.
func (r *Recorder) Add(res journal.Result) {
	r.mu.Lock()
	r.pending = append(r.pending, res)
	r.mu.Unlock()
	r.signal()
}

// Mutate queues a change of the job's record.
func (r *Recorder) Mutate(f func(*journal.Record)) {
	r.mu.Lock()
	r.muts = append(r.muts, f)
	r.mu.Unlock()
	r.signal()
}

// Close queues the final mutation, waits until everything is journaled or
// journaling has failed for good, and returns the journal's error.
func (r *Recorder) Close(f func(*journal.Record)) error {
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
	return r.err
}

// Stop ends the recorder without waiting for pending work (after close,
// it has none).
func (r *Recorder) Stop() {
	r.mu.Lock()
	r.stopped = true
	r.mu.Unlock()
	r.signal()
}

func (r *Recorder) loop() {
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
