package sysres

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as the worker process of the limiter tests: with
// sysresHelperEnv set, TestMain runs allocatorMain instead of the tests.
const (
	sysresHelperEnv = "SYSRES_TEST_ALLOCATE_MIB"
	sysresHoldEnv   = "SYSRES_TEST_HOLD"
	// sysresFreeEnv makes the allocator unmap its memory before it says
	// ready: only its high-water mark shows it.
	sysresFreeEnv = "SYSRES_TEST_FREE"
)

func TestMain(m *testing.M) {
	if mib := os.Getenv(sysresHelperEnv); mib != "" {
		os.Exit(allocatorMain(mib, os.Getenv(sysresHoldEnv)))
	}
	os.Exit(m.Run())
}

// allocatorMain waits for one byte on stdin (sent once the parent has
// attached it to a group), touches mib MiB of fresh anonymous memory,
// writes "ready\n" to stdout, holds the memory for the hold duration and
// exits 0.
//
// The memory is mapped with mmap rather than allocated by Go, so that its
// resident size is exactly what is touched: the race detector does not
// shadow memory outside the Go heap.
func allocatorMain(mibStr, holdStr string) int {
	mib, err := strconv.Atoi(mibStr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "allocator:", err)
		return 2
	}
	hold, err := time.ParseDuration(holdStr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "allocator:", err)
		return 2
	}
	var go1 [1]byte
	if _, err := io.ReadFull(os.Stdin, go1[:]); err != nil {
		fmt.Fprintln(os.Stderr, "allocator: waiting for the go signal:", err)
		return 2
	}
	if mib > 0 {
		mem, err := syscall.Mmap(-1, 0, mib<<20, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
		if err != nil {
			fmt.Fprintln(os.Stderr, "allocator:", err)
			return 2
		}
		pageSize := os.Getpagesize()
		for i := 0; i < len(mem); i += pageSize {
			mem[i] = 1
		}
		if os.Getenv(sysresFreeEnv) != "" {
			syscall.Munmap(mem)
		}
	}
	fmt.Println("ready")
	time.Sleep(hold)
	return 0
}

// child is a worker process started for a test, in its own process group.
type child struct {
	cmd    *exec.Cmd
	stdin  *os.File // the go signal; nil for commands other than the allocator
	stdout *bufio.Reader
	stderr *bytes.Buffer
	done   chan error // receives the result of cmd.Wait
}

// startAllocator starts the allocator: it allocates mib MiB once released,
// then holds it for hold.
func startAllocator(t *testing.T, mib int, hold time.Duration) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), sysresHelperEnv+"="+strconv.Itoa(mib), sysresHoldEnv+"="+hold.String())
	return startChild(t, cmd, true, true)
}

// startCommand starts an arbitrary command in its own process group.
func startCommand(t *testing.T, name string, args ...string) *child {
	t.Helper()
	return startChild(t, exec.Command(name, args...), false, true)
}

// startChild starts cmd, with the allocator's pipes if withPipes is set, in
// a process group of its own if setpgid is set. The child is killed and
// reaped at cleanup.
func startChild(t *testing.T, cmd *exec.Cmd, withPipes, setpgid bool) *child {
	t.Helper()
	c := &child{cmd: cmd, stderr: &bytes.Buffer{}, done: make(chan error, 1)}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: setpgid}
	cmd.Stderr = c.stderr
	var stdinR, stdoutW *os.File
	if withPipes {
		var err error
		if stdinR, c.stdin, err = os.Pipe(); err != nil {
			t.Fatal(err)
		}
		var stdoutR *os.File
		if stdoutR, stdoutW, err = os.Pipe(); err != nil {
			t.Fatal(err)
		}
		cmd.Stdin, cmd.Stdout = stdinR, stdoutW
		c.stdout = bufio.NewReader(stdoutR)
		t.Cleanup(func() {
			c.stdin.Close()
			stdoutR.Close()
		})
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if withPipes {
		stdinR.Close()
		stdoutW.Close()
	}
	go func() { c.done <- cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case <-c.done: // already reaped: its pid may be reused, do not signal it
			return
		default:
		}
		if setpgid {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
		cmd.Process.Kill()
		<-c.done
	})
	return c
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// release sends the allocator its go signal.
func (c *child) release(t *testing.T) {
	t.Helper()
	if _, err := c.stdin.Write([]byte{'g'}); err != nil {
		t.Fatalf("releasing the allocator: %v", err)
	}
}

// awaitReady waits until the allocator has touched its memory.
func (c *child) awaitReady(t *testing.T) {
	t.Helper()
	line, err := c.stdout.ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("allocator did not get ready: %q, %v; stderr: %s", line, err, c.stderr)
	}
}

// wait waits for the child to exit and returns its wait status. The done
// channel is refilled so that the cleanup can receive from it again.
func (c *child) wait(t *testing.T) syscall.WaitStatus {
	t.Helper()
	select {
	case err := <-c.done:
		c.done <- err
	case <-time.After(30 * time.Second):
		t.Fatalf("pid %d did not exit", c.pid())
	}
	return c.cmd.ProcessState.Sys().(syscall.WaitStatus)
}
