package cli

import (
	"bytes"
	"io"
	"sync"
)

// commandOutput routes the lines of a job's log, as the library streams
// them ("[task N] ..." for tasks, "[worker w1] ..." and "[meadowrun] ..."
// for meadowrun's own). For a command: its lines, without the prefix, to
// out; meadowrun's lines, and the command's lines that are meadowrun's
// messages about it ("meadowrun: command not found: x"), to errs. For a
// map (keep): task lines, prefix kept, to out; the others to errs.
type commandOutput struct {
	mu      sync.Mutex
	out     io.Writer
	errs    io.Writer
	keep    bool // keep every task's prefix (maps)
	partial []byte
}

func (c *commandOutput) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	data := append(c.partial, p...)
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		c.line(data[:i+1])
		data = data[i+1:]
	}
	c.partial = append([]byte(nil), data...)
	return len(p), nil
}

func (c *commandOutput) line(b []byte) {
	if c.keep {
		// A map: task lines keep their prefix; meadowrun's go to errs.
		if bytes.HasPrefix(b, []byte("[task ")) {
			c.out.Write(b)
		} else {
			c.errs.Write(b)
		}
		return
	}
	const prefix = "[task 0] "
	if !bytes.HasPrefix(b, []byte(prefix)) {
		c.errs.Write(b)
		return
	}
	b = b[len(prefix):]
	if bytes.HasPrefix(b, []byte("meadowrun: ")) {
		c.errs.Write(b)
		return
	}
	c.out.Write(b)
}

// lockedWriter serialises writes from the library's goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
	// before and after, if set, run around each write (to clear and
	// redraw a progress bar).
	before, after func()
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.before != nil {
		l.before()
	}
	n, err := l.w.Write(p)
	if l.after != nil {
		l.after()
	}
	return n, err
}
