package meadowrun_test

import (
	"errors"
	"testing"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/internal/coord"
)

// The coordinator classifies failures with its own kinds and sentinels;
// the public ones must be the same values, so that a failure keeps its
// kind, name and errors.Is behaviour across the boundary.
func TestErrorKindsAreTheCoordinatorsKinds(t *testing.T) {
	kinds := []struct {
		public   meadowrun.ErrorKind
		internal coord.Kind
		name     string
		retry    bool
	}{
		{meadowrun.KindError, coord.KindError, "error", true},
		{meadowrun.KindPanic, coord.KindPanic, "panic", true},
		{meadowrun.KindExit, coord.KindExit, "exit", true},
		{meadowrun.KindCrash, coord.KindCrash, "crash", true},
		{meadowrun.KindOOM, coord.KindOOM, "oom", true},
		{meadowrun.KindLost, coord.KindLost, "lost", true},
		{meadowrun.KindEncoding, coord.KindEncoding, "encoding", false},
		{meadowrun.KindUnknownFunction, coord.KindUnknownFunction, "unknown-function", false},
		{meadowrun.KindCanceled, coord.KindCanceled, "canceled", false},
	}
	for _, k := range kinds {
		if int(k.public) != int(k.internal) {
			t.Errorf("%s: public value %d, coordinator's %d", k.name, int(k.public), int(k.internal))
		}
		if k.public.String() != k.name || k.internal.String() != k.name {
			t.Errorf("%s: named %q publicly and %q by the coordinator", k.name, k.public, k.internal)
		}
		if k.public.Retryable() != k.retry {
			t.Errorf("%s: Retryable() = %v, want %v", k.name, k.public.Retryable(), k.retry)
		}
	}
	if s := meadowrun.ErrorKind(42).String(); s != "kind(42)" {
		t.Errorf("an unknown kind is named %q, want kind(42)", s)
	}
}

func TestTheSentinelsAreTheCoordinatorsErrors(t *testing.T) {
	for _, s := range []struct{ public, internal error }{
		{meadowrun.ErrUnknownFunction, coord.ErrUnknownFunction},
		{meadowrun.ErrRegistryMismatch, coord.ErrRegistryMismatch},
		{meadowrun.ErrWorkerStart, coord.ErrWorkerStart},
	} {
		if s.public != s.internal || !errors.Is(s.internal, s.public) {
			t.Errorf("%v is not the coordinator's %v", s.public, s.internal)
		}
	}
	te := &meadowrun.TaskError{Kind: meadowrun.KindUnknownFunction}
	if !errors.Is(te, meadowrun.ErrUnknownFunction) || !errors.Is(te, meadowrun.ErrTaskFailed) {
		t.Errorf("%v matches neither ErrUnknownFunction nor ErrTaskFailed", te)
	}
}
