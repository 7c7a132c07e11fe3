package durable

import (
	"context"
	"errors"
	"fmt"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/journal"
)

// Import copies the record of job id, which the keeper k of the host of
// URL url keeps on machine, into js.Store, unless it is there: how a
// process that did not submit the job (on another machine) gets the
// record that Open, and so attaching, logs and cancel, follow.
func (js *Jobs) Import(ctx context.Context, k driver.JobKeeper, url, machine, id string) (journal.Record, error) {
	if rec, err := js.Store.Get(ctx, id); err == nil {
		return rec, nil
	}
	s, err := k.InspectJob(ctx, machine, id, false, 0)
	if err != nil {
		return journal.Record{}, err
	}
	rec := s.Job
	if rec.ID != id {
		return journal.Record{}, fmt.Errorf("meadowrun: %s answered job %q for job %s", machine, rec.ID, id)
	}
	rec.Host, rec.Machine, rec.Parts, rec.Detached = url, machine, nil, true
	rec.PID, rec.Proc = 0, ""
	if err := js.Store.Create(ctx, rec); errors.Is(err, journal.ErrExists) {
		return js.Store.Get(ctx, id)
	} else if err != nil {
		return journal.Record{}, fmt.Errorf("meadowrun: %w", err)
	}
	return rec, nil
}
