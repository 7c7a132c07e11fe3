package agentclient

import (
	"context"
	"errors"
	"fmt"

	"github.com/meadowrun-go/meadowrun/internal/agentproto"
)

// Supervise asks the agent of machine, or where machine is "" of the
// first machine that can be reached in the order the machines were given,
// to journal a durable job and start its supervisor (req, whose Files
// this fills in) in a working tree of files (paths relative
// to this process's working directory, uploaded unless the machine has
// them), and returns that machine's name. The supervisor runs the agent's
// program, which is on the machine once it is connected.
func (h *Host) Supervise(ctx context.Context, machine string, req agentproto.Supervise, files []string) (string, error) {
	if err := h.checkOpen(); err != nil {
		return "", err
	}
	refs, err := h.files.refs(files)
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

// JobRequest sends a request about a durable job (agentproto.JobQuery,
// CancelJob, JobLog) to the agent of the named machine, connecting to it
// first if need be. An error the agent answers comes with its response,
// so that its Kind can be told apart.
func (h *Host) JobRequest(ctx context.Context, machine string, req agentproto.JobRequest) (agentproto.JobResponse, error) {
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
