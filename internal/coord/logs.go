package coord

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
)

// Logs collects a job's output: it splits it into lines, prefixes each
// with its task ("[task 3] ") or worker ("[worker w2] "), streams the lines
// live to the caller's writer and appends them to the job's log file, which
// is created when the first output arrives.
type Logs struct {
	path string
	out  io.Writer

	mu      sync.Mutex
	file    *os.File
	fileErr error
	partial map[string][]byte
	closed  bool
	// opened is set once the file exists: Existing is asked once per
	// result, and must not take mu for it.
	opened atomic.Bool
}

// NewLogs makes the sink of job jobID's output: lines are streamed to out
// (nil: nowhere) and kept in dir/jobID.log.
func NewLogs(dir, jobID string, out io.Writer) *Logs {
	return &Logs{path: filepath.Join(dir, jobID+".log"), out: out}
}

// Path is where the job's log file is, or will be once output arrives.
func (s *Logs) Path() string { return s.path }

// Existing returns the log file's path if anything was written to it so
// far, and "" otherwise: results never name a log that does not exist.
func (s *Logs) Existing() string {
	if !s.opened.Load() {
		return ""
	}
	return s.path
}

// write adds output of task id-1 (id > 0) or of the named worker (id 0).
// final flushes a trailing partial line.
func (s *Logs) write(id int, worker string, data []byte, final bool) {
	prefix := "[worker " + worker + "] "
	if id > 0 {
		prefix = "[task " + strconv.Itoa(id-1) + "] "
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	buf := append(s.partial[prefix], data...)
	var lines []byte
	for {
		i := bytes.IndexByte(buf, '\n')
		if i < 0 {
			break
		}
		lines = append(lines, prefix...)
		lines = append(lines, buf[:i+1]...)
		buf = buf[i+1:]
	}
	if final && len(buf) > 0 {
		lines = append(append(append(lines, prefix...), buf...), '\n')
		buf = nil
	}
	if len(buf) > 0 {
		if s.partial == nil {
			s.partial = map[string][]byte{}
		}
		s.partial[prefix] = append([]byte(nil), buf...)
	} else {
		delete(s.partial, prefix)
	}
	s.emitLocked(lines)
}

// note records a line from the coordinator itself.
func (s *Logs) note(msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.emitLocked([]byte("[meadowrun] " + msg + "\n"))
}

func (s *Logs) emitLocked(lines []byte) {
	if len(lines) == 0 {
		return
	}
	if s.out != nil {
		s.out.Write(lines)
	}
	if s.file == nil && s.fileErr == nil {
		if err := os.MkdirAll(filepath.Dir(s.path), 0o755); err != nil {
			s.fileErr = err
		} else {
			s.file, s.fileErr = os.OpenFile(s.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
			s.opened.Store(s.file != nil)
		}
		if s.fileErr != nil && s.out != nil {
			fmt.Fprintf(s.out, "[meadowrun] cannot keep the job log: %v\n", s.fileErr)
		}
	}
	if s.file != nil {
		s.file.Write(lines)
	}
}

// close flushes partial lines and closes the log file.
func (s *Logs) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	for prefix, buf := range s.partial {
		s.emitLocked(append(append([]byte(prefix), buf...), '\n'))
	}
	s.partial = nil
	if s.file != nil {
		s.file.Close()
	}
}
