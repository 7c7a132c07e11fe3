package meadowrun

import (
	"context"

	"github.com/meadowrun-go/meadowrun/internal/durable"
)

// JournalError is returned with the results of a job that ran, when its
// outcomes could not all be journaled (for example the disk is full): the
// caller has the results, but other processes may not see them. The
// journal itself is left intact. Its Err is the journal's error.
type JournalError = durable.JournalError

// startLocal runs an in-process job on a goroutine, with its output going
// to the caller's writer.
func startLocal(ctx context.Context, r *durable.Runner, o *Options) *localJob {
	lj := &localJob{runner: r, done: make(chan struct{})}
	go func() {
		lj.err = r.Run(context.WithoutCancel(ctx), o.Output)
		close(lj.done)
	}()
	return lj
}

// localJob is a job this process runs: the in-process fast path of its
// handle, which gets the job's outcomes straight from the runner.
type localJob struct {
	runner *durable.Runner
	done   chan struct{}
	err    error // the journal's error, once done
}
