package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/agentproto"
	"github.com/meadowrun-go/meadowrun/internal/journal"
)

// JobRunner starts and cancels the supervisors of durable jobs on the
// agent's machine. A supervisor is the agent's own program re-executed,
// which package meadowrun knows how to start and this package cannot
// import, so meadowrun sets Jobs when it is linked in (it always is: the
// agent runs inside meadowrun.Main).
type JobRunner interface {
	// Start starts the supervisor of job id, already journaled in st,
	// in directory dir ("" for the agent's own), and returns once it has
	// taken the job.
	Start(ctx context.Context, st *journal.Store, id, dir string) error
	// Cancel stops job id of st as meadowrun.CancelJob does.
	Cancel(ctx context.Context, st *journal.Store, id string) error
	// Lost reports whether the process running a journaled job died
	// before the job ended.
	Lost(r journal.Record) bool
}

// Jobs runs the durable jobs of this machine; nil refuses them.
var Jobs JobRunner

// StateDir is the state directory of the agents of dir on machine (an id
// of MachineID): its journal is
// StateDir/journal.db and its jobs' logs are in StateDir/logs. A job's
// supervisor runs with XDG_STATE_HOME set to its parent.
func StateDir(dir, machine string) string { return filepath.Join(dir, "state-"+machine, "meadowrun") }

// errJobFinished marks the error of cancelling a job that has ended.
var errJobFinished = errors.New("job already finished")

// job serves the durable-job operations: Supervise, JobQuery, CancelJob
// and JobLog.
func (a *agent) job(ctx context.Context, req agentproto.Request) agentproto.JobResponse {
	fail := func(r agentproto.Response) agentproto.JobResponse { return agentproto.JobResponse{Response: r} }
	if Jobs == nil {
		return fail(agentproto.Response{Error: "agent: this program cannot run durable jobs (meadowrun.Main did not start the agent)", Kind: agentproto.KindUnsupported})
	}
	st := journal.New(StateDir(a.dir, a.machine), journal.Options{})
	var id string
	switch req := req.(type) {
	case *agentproto.JobQuery:
		id = req.ID
	case *agentproto.CancelJob:
		id = req.ID
	case *agentproto.JobLog:
		id = req.ID
	}
	failErr := func(err error) agentproto.JobResponse {
		if errors.Is(err, journal.ErrNotFound) {
			return fail(agentproto.Response{Error: fmt.Sprintf("agent: job %s is not in the journal %s", id, st.Path()), Kind: agentproto.KindNotFound})
		}
		if errors.Is(err, errJobFinished) {
			return fail(agentproto.Response{Error: err.Error(), Kind: agentproto.KindFinished})
		}
		return fail(errResponse(err))
	}
	if req, ok := req.(*agentproto.Supervise); ok {
		if err := a.supervise(ctx, st, req); err != nil {
			return failErr(err)
		}
		return agentproto.JobResponse{}
	}
	rec, err := st.Get(ctx, id)
	if err != nil {
		return failErr(err)
	}
	answer := func(r journal.Record) agentproto.JobResponse {
		j := agentproto.JobOf(r)
		return agentproto.JobResponse{Job: &j, Lost: Jobs.Lost(r)}
	}
	switch req := req.(type) {
	case *agentproto.JobQuery:
		if !req.Results {
			return answer(rec)
		}
		res, last, r, err := st.Results(ctx, id, req.After)
		if err != nil {
			return failErr(err)
		}
		// The record of the same snapshot as the results, so that a
		// final record comes with every result.
		resp := answer(r)
		resp.Results, resp.Last = agentproto.ResultsOf(res), last
		return resp
	case *agentproto.CancelJob:
		if rec.Final() {
			return failErr(fmt.Errorf("%w: job %s %s at %s; its results are kept", errJobFinished, id, rec.State, rec.Finished.Format(time.DateTime)))
		}
		if err := Jobs.Cancel(ctx, st, id); err != nil {
			return failErr(err)
		}
		if rec, err = st.Get(ctx, id); err != nil {
			return failErr(err)
		}
		j := agentproto.JobOf(rec)
		return agentproto.JobResponse{Job: &j}
	case *agentproto.JobLog:
		resp := answer(rec)
		if rec.LogFile == "" {
			return resp
		}
		b, err := readAt(rec.LogFile, req.Offset, agentproto.MaxLog)
		if err != nil {
			return failErr(fmt.Errorf("agent: reading the log of job %s: %w", id, err))
		}
		resp.Log = b
		return resp
	}
	return fail(agentproto.Response{Error: fmt.Sprintf("agent: unknown operation %q", req.Op()), Kind: agentproto.KindFailed})
}

// supervise journals a job and its arguments and starts its supervisor.
func (a *agent) supervise(ctx context.Context, st *journal.Store, req *agentproto.Supervise) error {
	if req.Job.ID == "" {
		return errors.New("agent: supervise: no job")
	}
	rec := req.Job.Record()
	// The supervisor runs where the deployment's files are, so that the
	// job's globs find them as they did on the submitting machine.
	dir, err := a.deploy(req.Files)
	if err != nil {
		return fmt.Errorf("agent: supervise: deployment files: %w", err)
	}
	// Until its supervisor takes it, the job is this agent's: a job
	// whose supervisor never starts shows as lost once the agent is gone.
	rec.State, rec.Detached, rec.PID, rec.Proc = driver.JobSubmitted, true, os.Getpid(), journal.Self()
	rec.Machine = ""
	if err := st.Create(ctx, rec); err != nil {
		return err
	}
	const chunk = 4096
	for i := 0; i < len(req.Args); i += chunk {
		if err := st.PutArgs(ctx, rec.ID, i, req.Args[i:min(i+chunk, len(req.Args))]); err != nil {
			st.Delete(context.WithoutCancel(ctx), rec.ID)
			return err
		}
	}
	if err := Jobs.Start(ctx, st, rec.ID, dir); err != nil {
		st.Commit(context.WithoutCancel(ctx), rec.ID, nil, func(r *journal.Record) error {
			if r.State == driver.JobSubmitted {
				r.State, r.Error, r.Finished = driver.JobFailed, err.Error(), time.Now()
			}
			return nil
		})
		return err
	}
	return nil
}

// readAt reads up to max bytes of a file from off; a file not yet
// created reads as empty.
func readAt(path string, off int64, max int) ([]byte, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, max)
	n, err := f.ReadAt(buf, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return buf[:n], nil
}
