package durable

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"strconv"
)

// LogOptions filter a job's log (see meadowrun.LogOptions).
type LogOptions struct {
	// Tasks keeps only the lines of these tasks; nil keeps every line.
	Tasks []int
	// Bare removes the "[task N] " prefix from task lines.
	Bare bool
	// Follow writes lines as they are logged, until the job has ended.
	Follow bool
}

// logFollower reads a growing log file and writes its complete lines,
// filtered.
type logFollower struct {
	w       io.Writer
	opts    LogOptions
	off     int64
	partial []byte
	// task, when set, maps the log's task numbers to the job's (a part of
	// a split map), and prefix goes before the lines of no task.
	task   func(int) int
	prefix string
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
