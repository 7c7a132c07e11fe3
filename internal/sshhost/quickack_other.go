//go:build !linux

package sshhost

import "net"

// quickAck returns c: only Linux has TCP_QUICKACK (quickack_linux.go).
func quickAck(c net.Conn) net.Conn { return c }
