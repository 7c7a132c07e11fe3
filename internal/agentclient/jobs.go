package agentclient

import (
	"context"
	"errors"
	"fmt"
	"github.com/meadowrun-go/meadowrun/driver"

	"github.com/meadowrun-go/meadowrun/internal/agentproto"
)

// The agent client is a driver whose machines keep durable jobs.
var (
	_ driver.Host      = (*Host)(nil)
	_ driver.JobKeeper = (*Host)(nil)
)

// SubmitJob implements driver.JobKeeper: the agent of machine, or where
// machine is "" of the first machine that can be reached in the order the
// machines were given, journals the job and starts its supervisor in a
// working tree of the job's files (uploaded unless the machine has them).
// The supervisor runs the agent's program, which is on the machine once it
// is connected.
func (h *Host) SubmitJob(ctx context.Context, machine string, sub driver.JobSubmission) (string, error) {
	return h.supervise(ctx, machine, agentproto.Supervise{Job: agentproto.JobOf(sub.Job), Args: sub.Args}, sub.Dir, sub.Files)
}

// InspectJob implements driver.JobKeeper.
func (h *Host) InspectJob(ctx context.Context, machine, id string, results bool, after uint64) (driver.JobStatus, error) {
	return h.jobStatus(ctx, machine, id, agentproto.JobQuery{ID: id, Results: results, After: after})
}

// JobLog implements driver.JobKeeper.
func (h *Host) JobLog(ctx context.Context, machine, id string, offset int64) (driver.JobStatus, error) {
	return h.jobStatus(ctx, machine, id, agentproto.JobLog{ID: id, Offset: offset})
}

// CancelJob implements driver.JobKeeper.
func (h *Host) CancelJob(ctx context.Context, machine, id string) (driver.JobStatus, error) {
	return h.jobStatus(ctx, machine, id, agentproto.CancelJob{ID: id})
}

// jobStatus sends a request about job id to machine's agent and returns
// its answer as job keepers give it.
func (h *Host) jobStatus(ctx context.Context, machine, id string, req agentproto.JobRequest) (driver.JobStatus, error) {
	r, err := h.jobRequest(ctx, machine, req)
	switch {
	case r.Kind == agentproto.KindNotFound:
		return driver.JobStatus{}, fmt.Errorf("%w: %q is not in the journal of %s (was the agent's directory there removed?): %s", driver.ErrJobNotFound, id, machine, r.Error)
	case r.Kind == agentproto.KindFinished:
		return driver.JobStatus{}, fmt.Errorf("%w: %s", driver.ErrJobFinished, r.Error)
	case err != nil:
		return driver.JobStatus{}, err
	case r.Job == nil:
		return driver.JobStatus{}, fmt.Errorf("%s: %s: the agent answered no record of job %s", h.opts.Kind, machine, id)
	}
	return driver.JobStatus{Job: r.Job.Record(), Lost: r.Lost, Results: agentproto.JournalResults(r.Results), Cursor: r.Last, Log: r.Log}, nil
}

// supervise asks an agent to journal and start a job (see SubmitJob); it
// fills in req's Files.
func (h *Host) supervise(ctx context.Context, machine string, req agentproto.Supervise, dir string, files []string) (string, error) {
	if err := h.checkOpen(); err != nil {
		return "", err
	}
	refs, err := h.files.refs(dir, files)
	if err != nil {
		return "", err
	}
	req.Files = agentFiles(refs)
	var errs []error
	for _, m := range h.machines {
		if machine != "" && m.name != machine {
			continue
		}
		if _, err := m.ensure(ctx); err != nil {
			if ctx.Err() != nil {
				return "", ctx.Err()
			}
			errs = append(errs, err)
			continue
		}
		m.mu.Lock()
		bin := m.bin
		m.mu.Unlock()
		if err := m.ensureContent(bin, refs); err != nil {
			errs = append(errs, err)
			continue
		}
		resp, err := requestCtx[agentproto.Response](ctx, m, req)
		if err == nil {
			return m.name, nil
		}
		if resp.Error != "" || ctx.Err() != nil {
			// The agent refused: another machine would too.
			return "", err
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return "", fmt.Errorf("%s: %s is not one of its machines (%s)", h.opts.Kind, machine, h.Name())
	}
	return "", fmt.Errorf("%s: no machine can supervise the job: %w", h.opts.Kind, errors.Join(errs...))
}

// jobRequest sends a request about a durable job (agentproto.JobQuery,
// CancelJob, JobLog) to the agent of the named machine, connecting to it
// first if need be. An error the agent answers comes with its response,
// so that its Kind can be told apart.
func (h *Host) jobRequest(ctx context.Context, machine string, req agentproto.JobRequest) (agentproto.JobResponse, error) {
	if err := h.checkOpen(); err != nil {
		return agentproto.JobResponse{}, err
	}
	for _, m := range h.machines {
		if m.name != machine {
			continue
		}
		if _, err := m.ensure(ctx); err != nil {
			return agentproto.JobResponse{}, err
		}
		return requestCtx[agentproto.JobResponse](ctx, m, req)
	}
	return agentproto.JobResponse{}, fmt.Errorf("%s: %s is not one of its machines (%s)", h.opts.Kind, machine, h.Name())
}

// Closed reports whether Close was called.
func (h *Host) Closed() bool { return h.checkOpen() != nil }

func (h *Host) checkOpen() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return errors.New(h.opts.Kind + ": closed")
	}
	return nil
}

// requestCtx is m.request for an exchange of one line each way, answered
// by an R, which gives up when ctx ends.
func requestCtx[R any, P interface {
	*R
	response
}](ctx context.Context, m *machine, req agentproto.Request) (R, error) {
	type answer struct {
		resp R
		err  error
	}
	got := make(chan answer, 1)
	go func() {
		var r R
		conn, _, err := m.request(req, nil, P(&r))
		if conn != nil {
			conn.Close()
		}
		got <- answer{r, err}
	}()
	select {
	case a := <-got:
		return a.resp, a.err
	case <-ctx.Done():
		var zero R
		return zero, fmt.Errorf("%s: %w", m.name, ctx.Err())
	}
}

// PutFiles uploads to machine's agent what it lacks of the deployment
// files (paths relative to dir, "" for the working directory), through
// the host's ContentStore when it has one, and returns them as the
// agent's protocol names them: the agent keeps each one's content under
// its files directory (agentproto.FileDir) by sha256. A host that keeps
// jobs elsewhere than the agent's own journal (a Kubernetes supervisor's
// volume) uses it to place a job's files there itself.
func (h *Host) PutFiles(ctx context.Context, machine, dir string, files []string) ([]agentproto.File, error) {
	if err := h.checkOpen(); err != nil {
		return nil, err
	}
	refs, err := h.files.refs(dir, files)
	if err != nil {
		return nil, err
	}
	for _, m := range h.machines {
		if m.name != machine {
			continue
		}
		if _, err := m.ensure(ctx); err != nil {
			return nil, err
		}
		m.mu.Lock()
		bin := m.bin
		m.mu.Unlock()
		if err := m.ensureContent(bin, refs); err != nil {
			return nil, err
		}
		return agentFiles(refs), nil
	}
	return nil, fmt.Errorf("%s: %s is not one of its machines (%s)", h.opts.Kind, machine, h.Name())
}
