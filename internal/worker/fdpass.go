package worker

import (
	"fmt"
	"net"
	"os"
	"syscall"
	"time"
)

// EnvWorkerFDs names a Unix socket from which a worker receives its
// protocol file descriptors, where a host cannot let it inherit them (a
// worker in a container): the worker connects, and the host sends the
// task reader, the result writer, and the read and write ends of the
// worker's output socket, in that order, as one SCM_RIGHTS message. The
// worker makes the write end its stdout and stderr.
const EnvWorkerFDs = "MEADOWRUN_WORKER_FDS"

// fdsTimeout bounds how long a worker waits for its file descriptors.
const fdsTimeout = 2 * time.Minute

// receiveFDs connects to the socket at path and returns the task reader,
// the result writer and the output reader; the output writer becomes fds
// 1 and 2.
func receiveFDs(path string) (tasks, results, logR int, err error) {
	fail := func(err error) (int, int, int, error) {
		return 0, 0, 0, fmt.Errorf("receiving the protocol file descriptors from %s: %w", path, err)
	}
	conn, err := net.DialTimeout("unix", path, fdsTimeout)
	if err != nil {
		return fail(err)
	}
	defer conn.Close()
	uc := conn.(*net.UnixConn)
	uc.SetReadDeadline(time.Now().Add(fdsTimeout))
	buf, oob := make([]byte, 1), make([]byte, syscall.CmsgSpace(4*4))
	_, oobn, _, _, err := uc.ReadMsgUnix(buf, oob)
	if err != nil {
		return fail(err)
	}
	msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return fail(fmt.Errorf("no file descriptors in the message (%v)", err))
	}
	fds, err := syscall.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 4 {
		return fail(fmt.Errorf("want 4 file descriptors, got %d (%v)", len(fds), err))
	}
	for _, out := range []int{1, 2} {
		if err := syscall.Dup3(fds[3], out, 0); err != nil {
			return fail(err)
		}
	}
	syscall.Close(fds[3])
	return fds[0], fds[1], fds[2], nil
}

// SendFDs accepts one connection on l and sends the worker its task
// reader, result writer, output reader and output writer (see
// EnvWorkerFDs). It gives up when cancel is closed.
func SendFDs(l *net.UnixListener, files [4]*os.File, cancel <-chan struct{}) error {
	type accepted struct {
		c   *net.UnixConn
		err error
	}
	got := make(chan accepted, 1)
	go func() {
		c, err := l.AcceptUnix()
		got <- accepted{c, err}
	}()
	var a accepted
	select {
	case a = <-got:
	case <-cancel:
		l.Close()
		if a = <-got; a.c != nil {
			a.c.Close()
		}
		return fmt.Errorf("the worker ended before it connected for its file descriptors")
	}
	if a.err != nil {
		return a.err
	}
	defer a.c.Close()
	fds := make([]int, len(files))
	for i, f := range files {
		fds[i] = int(f.Fd())
	}
	_, _, err := a.c.WriteMsgUnix([]byte{0}, syscall.UnixRights(fds...), nil)
	return err
}
