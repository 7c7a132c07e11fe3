package worker

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestTaskContextIsCancelledLikeWithCancel(t *testing.T) {
	t.Run("done asked for before the cancel is closed by it", func(t *testing.T) {
		ctx, cancel := newTaskContext(context.Background())
		done := ctx.Done()
		child, stop := context.WithCancel(ctx)
		defer stop()
		if ctx.Err() != nil {
			t.Fatalf("Err before cancel = %v", ctx.Err())
		}
		cancel()
		<-done
		select {
		case <-child.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("a child of the task context was not cancelled")
		}
		if !errors.Is(ctx.Err(), context.Canceled) || !errors.Is(context.Cause(ctx), context.Canceled) {
			t.Fatalf("Err = %v, Cause = %v", ctx.Err(), context.Cause(ctx))
		}
		cancel() // a second cancel does nothing
	})
	t.Run("done asked for after the cancel is closed already", func(t *testing.T) {
		ctx, cancel := newTaskContext(context.Background())
		cancel()
		select {
		case <-ctx.Done():
		default:
			t.Fatal("Done of a cancelled task context is open")
		}
		if _, ok := ctx.Deadline(); ok {
			t.Fatal("a task context has a deadline")
		}
	})
	t.Run("a parent that can be cancelled still cancels the task", func(t *testing.T) {
		parent, stop := context.WithCancel(context.Background())
		ctx, cancel := newTaskContext(parent)
		defer cancel()
		stop()
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("the parent's cancel did not reach the task")
		}
	})
	t.Run("values come from the parent", func(t *testing.T) {
		type key struct{}
		ctx, cancel := newTaskContext(context.WithValue(context.Background(), key{}, 7))
		defer cancel()
		if ctx.Value(key{}) != 7 {
			t.Fatalf("Value = %v", ctx.Value(key{}))
		}
	})
}
