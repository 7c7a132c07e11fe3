package agent

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/agentproto"
	"github.com/meadowrun-go/meadowrun/internal/journal"
)

// Jobs returns the job keeper of the journal st: the one that keeps this
// machine's durable jobs, each run by a supervisor. A supervisor is the
// agent's own program re-executed, which package meadowrun knows how to
// start and this package cannot import, so meadowrun sets Jobs when it is
// linked in (it always is: the agent runs inside meadowrun.Main). Nil
// refuses durable jobs.
var Jobs func(st *journal.Store) driver.JobKeeper

// StateDir is the state directory of the agents of dir on machine (an id
// of MachineID): its journal is
// StateDir/journal.db and its jobs' logs are in StateDir/logs. A job's
// supervisor runs with XDG_STATE_HOME set to its parent.
func StateDir(dir, machine string) string { return filepath.Join(dir, "state-"+machine, "meadowrun") }

// job serves the durable-job operations (Supervise, JobQuery, CancelJob
// and JobLog) with the machine's job keeper.
func (a *agent) job(ctx context.Context, req agentproto.Request) agentproto.JobResponse {
	fail := func(r agentproto.Response) agentproto.JobResponse { return agentproto.JobResponse{Response: r} }
	if Jobs == nil {
		return fail(agentproto.Response{Error: "agent: this program cannot run durable jobs (meadowrun.Main did not start the agent)", Kind: agentproto.KindUnsupported})
	}
	keeper := Jobs(journal.New(StateDir(a.dir, a.machine), journal.Options{}))
	var st driver.JobStatus
	var err error
	switch req := req.(type) {
	case *agentproto.Supervise:
		if req.Job.ID == "" {
			return fail(errResponse(errors.New("agent: supervise: no job")))
		}
		// The supervisor runs where the deployment's files are, so that
		// the job's globs find them as they did on the submitting machine.
		dir, err := a.deploy(req.Files)
		if err != nil {
			return fail(errResponse(fmt.Errorf("agent: supervise: deployment files: %w", err)))
		}
		if _, err := keeper.SubmitJob(ctx, "", driver.JobSubmission{Job: req.Job.Record(), Args: req.Args, Dir: dir}); err != nil {
			return fail(jobError(err))
		}
		return agentproto.JobResponse{}
	case *agentproto.JobQuery:
		st, err = keeper.InspectJob(ctx, "", req.ID, req.Results, req.After)
	case *agentproto.CancelJob:
		st, err = keeper.CancelJob(ctx, "", req.ID)
	case *agentproto.JobLog:
		st, err = keeper.JobLog(ctx, "", req.ID, req.Offset)
	default:
		return fail(agentproto.Response{Error: fmt.Sprintf("agent: unknown operation %q", req.Op()), Kind: agentproto.KindFailed})
	}
	if err != nil {
		return fail(jobError(err))
	}
	j := agentproto.JobOf(st.Job)
	return agentproto.JobResponse{Job: &j, Lost: st.Lost, Results: agentproto.ResultsOf(st.Results), Last: st.Cursor, Log: st.Log}
}

// jobError is the response to a job keeper's error, classified.
func jobError(err error) agentproto.Response {
	switch {
	case errors.Is(err, driver.ErrJobNotFound):
		return agentproto.Response{Error: err.Error(), Kind: agentproto.KindNotFound}
	case errors.Is(err, driver.ErrJobFinished):
		return agentproto.Response{Error: err.Error(), Kind: agentproto.KindFinished}
	}
	return errResponse(err)
}
