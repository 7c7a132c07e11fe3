package agent

import (
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/meadowrun-go/meadowrun/internal/agentproto"
)

// RunDial connects standard input and output to the agent socket named by
// agentproto.EnvDial and copies between them until either side ends, and
// returns the exit code. It is the stream to the agent for transports that
// can only run a command on the machine (Kubernetes exec): one such
// command is one connection of the agent protocol.
func RunDial() int {
	sock := os.Getenv(agentproto.EnvDial)
	os.Unsetenv(agentproto.EnvDial)
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		fmt.Fprintf(os.Stderr, "meadowrun agent dial: socket: %v\n", err)
		return 1
	}
	if err := syscall.Connect(fd, &syscall.SockaddrUnix{Name: sock}); err != nil {
		syscall.Close(fd)
		fmt.Fprintf(os.Stderr, "meadowrun agent dial: %s: %v\n", sock, err)
		return 2
	}
	c := os.NewFile(uintptr(fd), "agent")
	go func() {
		io.Copy(c, os.Stdin)
		// The client is done sending: the agent sees the end of the
		// stream, and the connection ends when the agent closes its side.
		syscall.Shutdown(fd, syscall.SHUT_WR)
	}()
	io.Copy(os.Stdout, c)
	return 0
}
