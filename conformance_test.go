package meadowrun_test

import (
	"io"
	"os"
	"strings"
	"testing"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/hosttest"
	"github.com/meadowrun-go/meadowrun/inprocess"
	"github.com/meadowrun-go/meadowrun/internal/pyworker/pytest"
	"github.com/meadowrun-go/meadowrun/internal/testkit"
)

func TestMain(m *testing.M) { testkit.Main(m) }

func TestConformanceInProcess(t *testing.T) {
	hosttest.Run(t, hosttest.Config{
		NewHost: func(t *testing.T) *meadowrun.Host {
			h := inprocess.NewHost(2)
			t.Cleanup(func() { h.Close() })
			return h
		},
		MillionTasks: millionTasks,
	})
}

func TestConformanceLocal(t *testing.T) {
	hosttest.Run(t, hosttest.Config{
		NewHost:      func(t *testing.T) *meadowrun.Host { return meadowrun.Local() },
		MillionTasks: millionTasks,
	})
}

// TestConformancePython runs the suite's functions on Python workers: the
// same tests, with hosttest's Python module on python3 from PATH.
func TestConformancePython(t *testing.T) {
	pytest.Require(t)
	hosttest.Run(t, hosttest.Config{
		NewHost:      func(t *testing.T) *meadowrun.Host { return meadowrun.Local() },
		MillionTasks: millionTasks,
		Deployment:   meadowrun.PreinstalledInterpreter("python3", nil),
		Python:       true,
	})
}

// The tests keep their logs and journal in their own state directory: a
// job run without Options.LogDir logs there, not in the user's.
func TestTestsKeepToTheirOwnStateDirectory(t *testing.T) {
	done, err := meadowrun.RunCommand(t.Context(), []string{"echo", "hi"}, meadowrun.Local(), &meadowrun.CommandOptions{Options: meadowrun.Options{Output: io.Discard}})
	if err != nil {
		t.Fatal(err)
	}
	state := os.Getenv("XDG_STATE_HOME")
	if !strings.HasPrefix(state, os.TempDir()+"/meadowrun-test-state-") || !strings.HasPrefix(done.LogFile, state+"/") {
		t.Fatalf("the log %s is not in the tests' own state directory (XDG_STATE_HOME=%q)", done.LogFile, state)
	}
}
