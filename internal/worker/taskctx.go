package worker

import (
	"context"
	"sync"
	"time"
)

// taskContext is the context of one task whose parent can never be
// cancelled (a worker process serves under context.Background()). It is
// context.WithCancel without what a task of a map of short tasks never
// uses: the Done channel is made only when asked for, and cancelling
// registers nothing with the parent. A worker runs a task per
// microsecond, so this is a measurable part of its time.
type taskContext struct {
	context.Context // the parent: values, and no deadline
	mu              sync.Mutex
	done            chan struct{}
	err             error
}

// closedDone is the Done channel of a task cancelled before anyone asked
// for it.
var closedDone = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// newTaskContext returns a cancellable child of parent and its cancel
// function, cheaply when parent is never done.
func newTaskContext(parent context.Context) (context.Context, func()) {
	var slab []taskContext
	return newTaskContextFrom(parent, &slab)
}

// taskSlab is how many task contexts are allocated together.
const taskSlab = 64

// newTaskContextFrom is newTaskContext taking the context from *slab,
// refilled taskSlab at a time: one allocation per taskSlab tasks.
func newTaskContextFrom(parent context.Context, slab *[]taskContext) (context.Context, func()) {
	if parent.Done() != nil {
		return context.WithCancel(parent)
	}
	if len(*slab) == 0 {
		*slab = make([]taskContext, taskSlab)
	}
	c := &(*slab)[0]
	*slab = (*slab)[1:]
	c.Context = parent
	return c, c.cancel
}

func (c *taskContext) Deadline() (time.Time, bool) { return time.Time{}, false }

func (c *taskContext) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
	}
	return c.done
}

func (c *taskContext) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *taskContext) cancel() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	c.err = context.Canceled
	if c.done == nil {
		c.done = closedDone
	} else {
		close(c.done)
	}
}

func (c *taskContext) String() string { return "meadowrun task context" }
