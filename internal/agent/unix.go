package agent

import (
	"fmt"
	"os"
	"syscall"
)

// The agent's socket is served with system calls rather than package net:
// every user program links the agent (it may be started as one), and
// package net would make every one of them a dynamically linked program,
// which costs each process a few milliseconds to start.

// listener is a listening Unix stream socket.
type listener struct {
	fd   int
	path string
}

func listenUnix(path string) (*listener, error) {
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("bind %s: %w", path, err)
	}
	if err := syscall.Listen(fd, 128); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	return &listener{fd: fd, path: path}, nil
}

// accept waits for a connection; it fails once close was called.
func (l *listener) accept() (*unixConn, error) {
	for {
		nfd, _, err := syscall.Accept4(l.fd, syscall.SOCK_CLOEXEC|syscall.SOCK_NONBLOCK)
		if err == syscall.EINTR || err == syscall.ECONNABORTED {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("accept: %w", err)
		}
		// A non-blocking descriptor makes a File that the runtime's poller
		// serves, like a net.Conn.
		return &unixConn{File: os.NewFile(uintptr(nfd), "agent-conn")}, nil
	}
}

// close wakes accept and removes the socket.
func (l *listener) close() {
	syscall.Shutdown(l.fd, syscall.SHUT_RDWR)
	os.Remove(l.path)
}

// unixConn is one accepted connection.
type unixConn struct{ *os.File }

// CloseWrite ends what the agent sends; the client reads end of stream.
func (c *unixConn) CloseWrite() error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = syscall.Shutdown(int(fd), syscall.SHUT_WR) }); err != nil {
		return err
	}
	return serr
}
