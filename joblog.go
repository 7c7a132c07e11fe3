package meadowrun

import (
	"context"
	"io"

	"github.com/meadowrun-go/meadowrun/internal/durable"
)

// LogOptions configure JobLog. The zero value writes the whole log once.
type LogOptions struct {
	// Tasks keeps only the lines of these tasks. Nil keeps every line,
	// the job's own ("[meadowrun] ...", "[worker w1] ...") included.
	Tasks []int
	// Bare removes the "[task N] " prefix from task lines.
	Bare bool
	// Follow keeps writing lines as they are logged, until the job has
	// ended (or ctx has).
	Follow bool
}

// JobLog writes a durable job's output, as its log file keeps it (each
// line prefixed with its task), to w.
func JobLog(ctx context.Context, id string, w io.Writer, opts *LogOptions) error {
	if opts == nil {
		opts = &LogOptions{}
	}
	st := defaultStore()
	rec, err := st.Get(ctx, id)
	if err != nil {
		return notFound(err, id)
	}
	h, err := defaultJobs().Open(ctx, rec)
	if err != nil {
		return err
	}
	return h.Log(ctx, w, durable.LogOptions(*opts))
}
