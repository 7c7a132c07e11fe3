package meadowrun

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strconv"
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
	lf := &logFollower{w: w, opts: opts}
	if rec.Machine != "" {
		rj, err := openRemote(ctx, st, rec)
		if err != nil {
			return err
		}
		return rj.log(ctx, lf)
	}
	p := newPoller(st)
	for {
		final := rec.Final() || isLost(rec)
		if rec.LogFile != "" {
			if err := lf.read(rec.LogFile); err != nil {
				return err
			}
		}
		if final || !opts.Follow {
			// The job's last output was written before its end was
			// journaled: one more read gets all of it.
			if rec.LogFile != "" {
				if err := lf.read(rec.LogFile); err != nil {
					return err
				}
			}
			lf.flush()
			if opts.Follow && isLost(rec) {
				return fmt.Errorf("%w: %s: %s", ErrJobLost, id, infoOf(rec).Error)
			}
			return nil
		}
		if err := p.wait(ctx); err != nil {
			lf.flush()
			return err
		}
		if p.changed() {
			if rec, err = st.Get(ctx, id); err != nil {
				return notFound(err, id)
			}
		}
	}
}

// logFollower reads a growing log file and writes its complete lines,
// filtered.
type logFollower struct {
	w       io.Writer
	opts    *LogOptions
	off     int64
	partial []byte
	// task, when set, maps the log's task numbers to the job's (a part of
	// a split map), and prefix goes before the lines of no task.
	task   func(int) int
	prefix string
}

func (l *logFollower) read(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // created with the first output
	}
	if err != nil {
		return fmt.Errorf("meadowrun: reading the job's log: %w", err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		n, err := f.ReadAt(buf, l.off)
		if ferr := l.feed(buf[:n]); ferr != nil {
			return ferr
		}
		if err != nil || n == 0 {
			return nil
		}
	}
}

// feed takes the next bytes of the log, from offset off on.
func (l *logFollower) feed(b []byte) error {
	l.off += int64(len(b))
	data := append(l.partial, b...)
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		if err := l.line(data[:i+1]); err != nil {
			return err
		}
		data = data[i+1:]
	}
	l.partial = append([]byte(nil), data...)
	return nil
}

func (l *logFollower) flush() {
	if len(l.partial) > 0 {
		l.line(append(l.partial, '\n'))
		l.partial = nil
	}
}

func (l *logFollower) line(b []byte) error {
	task, rest, ok := cutTaskPrefix(b)
	if ok && l.task != nil {
		task = l.task(task)
		b = fmt.Appendf(nil, "[task %d] %s", task, rest)
	}
	if l.opts.Tasks != nil && (!ok || !slices.Contains(l.opts.Tasks, task)) {
		return nil
	}
	switch {
	case ok && l.opts.Bare:
		b = rest
	case !ok && l.prefix != "":
		b = append([]byte(l.prefix), b...)
	}
	_, err := l.w.Write(b)
	return err
}

// cutTaskPrefix parses a "[task N] " line prefix.
func cutTaskPrefix(b []byte) (int, []byte, bool) {
	const p = "[task "
	if !bytes.HasPrefix(b, []byte(p)) {
		return 0, b, false
	}
	end := bytes.Index(b, []byte("] "))
	if end < 0 {
		return 0, b, false
	}
	n, err := strconv.Atoi(string(b[len(p):end]))
	if err != nil {
		return 0, b, false
	}
	return n, b[end+2:], true
}
