package sshhost

import (
	"net"
	"syscall"
)

// quickAck returns c reading with delayed acknowledgements off.
//
// sshd leaves Nagle's algorithm on for non-interactive connections, and
// after the login it writes two small packets in a row (its host keys
// notice, then the answer to the first channel the client opens): the
// second waits until the first is acknowledged, which Linux's delayed
// acknowledgement holds back for 40 ms. Acknowledging at once after each
// read (TCP_QUICKACK, which the kernel turns off again by itself, hence
// each time) removes that wait from every new connection's first
// exchange.
func quickAck(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	return &quickAckConn{TCPConn: tc, rc: rc}
}

type quickAckConn struct {
	*net.TCPConn
	rc syscall.RawConn
}

func (c *quickAckConn) Read(b []byte) (int, error) {
	n, err := c.TCPConn.Read(b)
	c.rc.Control(func(fd uintptr) {
		syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
	})
	return n, err
}
