package sshhost

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proxyConn is a connection carried by an ssh config's ProxyCommand: the
// command's standard input and output, as OpenSSH uses them.
type proxyConn struct {
	cmd  *exec.Cmd
	r    io.ReadCloser
	w    io.WriteCloser
	errs *tailBuffer
	addr proxyAddr
	once sync.Once
}

// startProxyCommand runs command with sh in a process group of its own,
// as the way to addr (host:port, which known_hosts is checked for).
func startProxyCommand(command, addr string) (*proxyConn, error) {
	cmd := exec.Command("sh", "-c", command)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	w, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	r, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	errs := &tailBuffer{max: 2000}
	cmd.Stderr = errs
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("ProxyCommand %q: %w", command, err)
	}
	return &proxyConn{cmd: cmd, r: r, w: w, errs: errs, addr: proxyAddr(addr)}, nil
}

func (c *proxyConn) Read(b []byte) (int, error)  { return c.r.Read(b) }
func (c *proxyConn) Write(b []byte) (int, error) { return c.w.Write(b) }

// Close ends the command and its children.
func (c *proxyConn) Close() error {
	c.once.Do(func() {
		c.w.Close()
		syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		c.cmd.Wait()
	})
	return nil
}

// said is the end of what the command wrote to its standard error.
func (c *proxyConn) said() string {
	// Give a command that is failing a moment to say why.
	time.Sleep(50 * time.Millisecond)
	return strings.TrimSpace(c.errs.String())
}

func (c *proxyConn) LocalAddr() net.Addr              { return proxyAddr("") }
func (c *proxyConn) RemoteAddr() net.Addr             { return c.addr }
func (c *proxyConn) SetDeadline(time.Time) error      { return nil }
func (c *proxyConn) SetReadDeadline(time.Time) error  { return nil }
func (c *proxyConn) SetWriteDeadline(time.Time) error { return nil }

// proxyAddr is the address a ProxyCommand leads to.
type proxyAddr string

func (proxyAddr) Network() string  { return "proxycommand" }
func (a proxyAddr) String() string { return string(a) }

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   bytes.Buffer
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b.Write(p)
	if over := t.b.Len() - t.max; over > 0 {
		t.b.Next(over)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.b.String()
}
