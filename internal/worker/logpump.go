package worker

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/meadowrun-go/meadowrun/internal/shm"
	"github.com/meadowrun-go/meadowrun/internal/wire"
)

// logPump forwards what the process writes to its stdout and stderr (a
// pipe whose read end it holds) as Log frames, tagged with the running task.
// Every read happens under mu, and switchTo drains the pipe under mu before
// it changes the tag, so bytes written by a task before it returned are
// always attributed to it and sent before its result.
type logPump struct {
	mu  sync.Mutex
	f   *os.File // kept open, and so fd valid, for the life of the pump
	fd  int
	rc  syscall.RawConn
	w   *wire.Writer
	log *shm.ResultLog // nil without a result log
	key uint64
	buf []byte
	eof bool
}

func newLogPump(f *os.File, w *wire.Writer, log *shm.ResultLog) (*logPump, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("worker: log pipe: %w", err)
	}
	fd := -1
	rc.Control(func(u uintptr) { fd = int(u) })
	return &logPump{f: f, fd: fd, rc: rc, w: w, log: log, buf: make([]byte, 32<<10)}, nil
}

// run forwards output as it arrives until the pipe reaches end of file.
func (p *logPump) run() {
	for {
		err := p.rc.Read(func(fd uintptr) bool {
			p.mu.Lock()
			defer p.mu.Unlock()
			return p.drainLocked(int(fd))
		})
		p.mu.Lock()
		eof := p.eof
		p.mu.Unlock()
		if err != nil || eof {
			return
		}
	}
}

// drainLocked reads everything available and reports whether the pipe is
// finished (end of file or an error other than EAGAIN).
func (p *logPump) drainLocked(fd int) bool {
	sent := false
	defer func() {
		if sent {
			p.w.Flush()
		}
	}()
	for {
		// Peek, forward, then consume: if the process dies in between, the
		// bytes are still in the socket for the host to recover. (On a
		// pipe, where peeking fails, read directly.)
		n, err := peek(fd, p.buf)
		peeked := err == nil
		if err == syscall.ENOTSOCK {
			n, err = syscall.Read(fd, p.buf)
		}
		if n > 0 {
			p.w.WriteFrame(wire.TypeLog, wire.AppendLog(nil, wire.Log{Key: p.key, Data: p.buf[:n]}))
			if peeked {
				p.w.Flush()
				if p.log != nil {
					// Forwarded but still in the socket: a host that
					// drains the socket after a death skips these bytes.
					p.log.SetOutputPending(uint64(n))
				}
				if h := afterForward.Load(); h != nil {
					(*h)()
				}
				syscall.Read(fd, p.buf[:n])
				if p.log != nil {
					p.log.SetOutputPending(0)
				}
			}
			sent = true
			continue
		}
		switch err {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		p.eof = true
		return true
	}
}

// SetAfterForwardHook makes f run after output was forwarded on the
// stream and before it is consumed from the output socket: tests use it
// to end the process at that moment, the one where the host must not
// forward the same output again.
func SetAfterForwardHook(f func()) { afterForward.Store(&f) }

var afterForward atomic.Pointer[func()]

// switchTo forwards pending output under the current tag, then tags what
// follows with key (0: the worker itself). It runs before every task, so
// the common case, nothing to forward, costs one non-blocking system call
// made directly, without the runtime's blocking-call bookkeeping.
func (p *logPump) switchTo(key uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.eof {
		p.drainLocked(p.fd)
	}
	p.key = key
}

// peek is recv(fd, buf, MSG_PEEK|MSG_DONTWAIT). It never blocks, so it
// is made as a raw system call.
func peek(fd int, buf []byte) (int, error) {
	if len(buf) == 0 {
		return 0, nil
	}
	n, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)),
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// logWriter sends what a command writes as Log frames of one task; used
// when the process's own stdout is not captured.
type logWriter struct {
	w   *wire.Writer
	key uint64
}

func (l logWriter) Write(b []byte) (int, error) {
	if err := l.w.WriteFrame(wire.TypeLog, wire.AppendLog(nil, wire.Log{Key: l.key, Data: b})); err != nil {
		return 0, err
	}
	return len(b), l.w.Flush()
}
