package meadowrun_test

import (
	"os"
	"testing"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/hosttest"
)

func TestMain(m *testing.M) {
	meadowrun.Main()
	os.Exit(m.Run())
}

func TestConformanceInProcess(t *testing.T) {
	hosttest.Run(t, hosttest.Config{
		NewHost: func(t *testing.T) *meadowrun.Host {
			h := meadowrun.NewInProcessHost(2)
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
