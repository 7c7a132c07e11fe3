package journal

import (
	"context"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
)

// processLocks serialises the goroutines of this process that use the
// same journal file, so that at most one of them waits on the file lock.
var processLocks sync.Map // path → chan struct{}

func lockProcess(ctx context.Context, path string) (func(), error) {
	v, _ := processLocks.LoadOrStore(path, make(chan struct{}, 1))
	ch := v.(chan struct{})
	select {
	case ch <- struct{}{}:
		return func() { <-ch }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// openLocked opens the journal file and takes its lock (shared to read,
// exclusive to write), waiting in the kernel's queue rather than polling,
// up to timeout or until ctx ends. bbolt then takes the same lock on the
// same open file, which succeeds at once. Closing the file releases it,
// also when the process dies.
func openLocked(ctx context.Context, name string, flag int, perm os.FileMode, exclusive bool, timeout time.Duration) (*os.File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	if err := flock(f, how|syscall.LOCK_NB); err == nil {
		return f, nil
	} else if err != syscall.EWOULDBLOCK {
		f.Close()
		return nil, fmt.Errorf("locking: %w", err)
	}
	got := make(chan error) // unbuffered: an abandoned lock is released, never leaked
	abandoned := make(chan struct{})
	go func() {
		err := flock(f, how)
		select {
		case got <- err:
		case <-abandoned:
			// The caller gave up: release at once.
			f.Close()
		}
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case err := <-got:
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("locking: %w", err)
		}
		return f, nil
	case <-timer.C:
		close(abandoned)
		return nil, fmt.Errorf("%w %s after %s: another process holds it", ErrLockTimeout, name, timeout)
	case <-ctx.Done():
		close(abandoned)
		return nil, ctx.Err()
	}
}

func flock(f *os.File, how int) error {
	for {
		err := syscall.Flock(int(f.Fd()), how)
		if err != syscall.EINTR {
			return err
		}
	}
}
