// Package tracepoint records timestamped marks of where a program is on
// a path it wants to measure (such as a new client's first call on an EC2
// instance), for the benchmark programs to print. Recording is off until
// Enable; a Mark then costs one atomic load.
package tracepoint

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// Event is one mark.
type Event struct {
	At   time.Time
	What string
}

var (
	on  atomic.Bool
	mu  sync.Mutex
	evs []Event
)

// Enable turns recording on for the rest of the process.
func Enable() { on.Store(true) }

// Enabled says whether marks are recorded.
func Enabled() bool { return on.Load() }

// Mark records what happened now, when recording is on.
func Mark(what string) {
	if !on.Load() {
		return
	}
	e := Event{At: time.Now(), What: what}
	mu.Lock()
	evs = append(evs, e)
	mu.Unlock()
}

// Markf is Mark with a format; the arguments are not formatted when
// recording is off.
func Markf(format string, a ...any) {
	if !on.Load() {
		return
	}
	Mark(fmt.Sprintf(format, a...))
}

// Take returns the marks recorded since the last Take, in order, and
// forgets them.
func Take() []Event {
	mu.Lock()
	defer mu.Unlock()
	out := evs
	evs = nil
	return out
}

// Print writes events to w, one a line, each with its time since start
// and since the event before it.
func Print(w io.Writer, start time.Time, events []Event) {
	prev := start
	for _, e := range events {
		fmt.Fprintf(w, "  %8.2f ms  +%7.2f ms  %s\n", ms(e.At.Sub(start)), ms(e.At.Sub(prev)), e.What)
		prev = e.At
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
