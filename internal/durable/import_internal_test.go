package durable

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/journal"
)

// A job kept by a keeper (here another journal's, with a real
// supervisor) is imported into a journal that lacks it, as the copy of a
// job kept elsewhere; an unknown job is ErrJobNotFound.
func TestAJobKeptElsewhereIsImported(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := newResumeEnv(t, 1000)
	e.submitMap(ctx, t, "kept", 2)
	js := &Jobs{Store: journal.New(filepath.Join(t.TempDir(), "meadowrun"), journal.Options{})}
	rec, err := js.Import(ctx, e.k, "k8s://?namespace=x", "machine-1", "kept")
	if err != nil {
		t.Fatal(err)
	}
	got, err := js.Store.Get(ctx, "kept")
	if err != nil || got.Machine != "machine-1" || got.Host != "k8s://?namespace=x" || got.Kind != driver.JobMap || got.Total != 2 || got.PID != 0 {
		t.Fatalf("imported %+v, stored %+v, %v; want the copy of a map kept on machine-1", rec, got, err)
	}
	if IsLost(got) {
		t.Fatal("a copy of a job kept elsewhere is never lost here")
	}
	if _, err := js.Import(ctx, e.k, "k8s://?namespace=x", "machine-1", "nope"); !errors.Is(err, driver.ErrJobNotFound) {
		t.Fatalf("importing an unknown job: %v, want ErrJobNotFound", err)
	}
}
