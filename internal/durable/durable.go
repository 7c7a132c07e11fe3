package durable

import (
	"context"
	"errors"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/journal"
)

// ErrJobLost: the process running the job died before the job ended. The
// results it journaled are kept.
var ErrJobLost = errors.New("meadowrun: job lost")

// Arg is an encoded argument, or the error encoding it.
type Arg struct {
	B   []byte
	Err error
}

// Jobs is the durable-job layer of a process: its journal, which keeps
// its own jobs and the copies of the records of jobs that other machines
// keep, and how to reach those machines again.
type Jobs struct {
	// Store is this side's journal.
	Store *journal.Store
	// OpenKeeper opens the host of URL url as a job keeper, as any
	// process of this machine can; nil without an error means that host
	// keeps no jobs.
	OpenKeeper func(ctx context.Context, url string) (driver.JobKeeper, error)
}
