// Package testkit holds helpers that the tests of several packages share.
// It is imported by tests only.
package testkit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/meadowrun-go/meadowrun"
)

// Main is the TestMain of test binaries that run jobs: Main serves the
// workers, agents and supervisors that are the test binary re-executed,
// and the tests' journal and logs go to a state directory of their own,
// never the user's.
func Main(m *testing.M) {
	meadowrun.Main()
	state, err := os.MkdirTemp("", "meadowrun-test-state-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv("XDG_STATE_HOME", state)
	code := m.Run()
	os.RemoveAll(state)
	os.Exit(code)
}

// StateDir points the journal of the test (and of the processes it
// starts) to a temporary directory, and returns it.
func StateDir(t *testing.T) string {
	d := t.TempDir()
	t.Setenv("XDG_STATE_HOME", d)
	return d
}

// WaitMs waits ms milliseconds, or until ctx ends when ms is negative.
func WaitMs(ctx context.Context, ms int) error {
	if ms < 0 {
		<-ctx.Done()
		return ctx.Err()
	}
	select {
	case <-time.After(time.Duration(ms) * time.Millisecond):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// AttachExit3 attaches to command job id from another handle, checks that
// it ended with exit code 3, and returns the command's output.
func AttachExit3(t *testing.T, ctx context.Context, id string) string {
	t.Helper()
	a, err := meadowrun.AttachCommand(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	jc, err := a.Wait(ctx)
	var te *meadowrun.TaskError
	if jc == nil || jc.ReturnCode != 3 || !errors.As(err, &te) || te.Kind != meadowrun.KindExit {
		t.Fatalf("Wait = %+v, %v", jc, err)
	}
	var log bytes.Buffer
	if err := meadowrun.JobLog(ctx, id, &log, &meadowrun.LogOptions{Tasks: []int{0}, Bare: true}); err != nil {
		t.Fatal(err)
	}
	return log.String()
}
