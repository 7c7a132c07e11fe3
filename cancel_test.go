package meadowrun_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/inprocess"
)

// answerOnCancel blocks until the test releases it, then returns its
// argument: a task that completes while its map is being cancelled.
var (
	answerRelease  atomic.Pointer[chan struct{}]
	answerOnCancel = meadowrun.Register("test.answerOnCancel", func(ctx context.Context, x int) (int, error) {
		<-*answerRelease.Load()
		return x, nil
	})
	// failOnCancel fails, as a function that returns its context's error
	// does, once the test releases it.
	failOnCancel = meadowrun.Register("test.failOnCancel", func(ctx context.Context, x int) (int, error) {
		<-*answerRelease.Load()
		return 0, context.Canceled
	})
)

// slowKillHost is the in-process host whose kills take effect late, as a
// kill sent over a network does: the worker can still deliver results
// between the coordinator's kill and the end of its stream.
func slowKillHost(t *testing.T) *meadowrun.Host {
	d, err := inprocess.NewHost(2).Driver(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	h := meadowrun.NewHost(slowKillDriver{d}, meadowrun.HostOptions{})
	t.Cleanup(func() { h.Close() })
	return h
}

type slowKillDriver struct{ driver.Host }

func (d slowKillDriver) Start(ctx context.Context, spec driver.WorkerSpec) (driver.Worker, error) {
	w, err := d.Host.Start(ctx, spec)
	if err != nil {
		return nil, err
	}
	return slowKillWorker{w}, nil
}

type slowKillWorker struct{ driver.Worker }

func (w slowKillWorker) Kill() error {
	go func() {
		time.Sleep(200 * time.Millisecond)
		w.Worker.Kill()
	}()
	return nil
}

// A worker whose every task answered after the map was cancelled, before
// its stream ended, must not keep the map from returning.
func TestACancelledMapReturnsWhenItsWorkersAnswerBeforeDying(t *testing.T) {
	release := make(chan struct{})
	answerRelease.Store(&release)
	host := slowKillHost(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := meadowrun.RunMap(ctx, answerOnCancel, []int{1, 2}, host,
			&meadowrun.MapOptions{Options: meadowrun.Options{LogDir: t.TempDir()}, Concurrency: 2})
		done <- err
	}()
	time.Sleep(300 * time.Millisecond) // both tasks are running
	cancel()
	close(release) // they answer while their kill is on its way
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("error = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("RunMap did not return within 10 s of cancellation")
	}
}

// A task that fails because its job was cancelled, with its failure
// arriving before its worker's stream ends, is reported as cancelled, not
// as the task's own error.
func TestACancelledJobIsCancelledEvenWhenItsTaskAnswersFirst(t *testing.T) {
	release := make(chan struct{})
	answerRelease.Store(&release)
	host := slowKillHost(t)
	ctx := context.Background()
	j, err := meadowrun.StartFunction(ctx, failOnCancel.With(1), host, &meadowrun.Options{LogDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the task is running
	j.Cancel()
	close(release) // it fails while its kill is on its way
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = j.Wait(wctx)
	var te *meadowrun.TaskError
	if !errors.Is(err, context.Canceled) || errors.As(err, &te) {
		t.Fatalf("Wait = %v; want the job's cancellation, not the task's error", err)
	}
}
