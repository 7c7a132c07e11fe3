package ec2host

import (
	"context"
	"fmt"
	"time"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/agentproto"
)

// InstanceOptions are what the host asks of the agents on its instances,
// and what it does when one of them says its instance goes away.
type InstanceOptions struct {
	// OnDemandAfterInterruption makes every worker the host starts after
	// a spot interruption notice of one of its instances (the
	// interrupted tasks' re-runs first) go to on-demand instances only:
	// no spot instance is booked or launched for them.
	OnDemandAfterInterruption bool
	// IMDS is the instance metadata service the agents poll for spot
	// interruption notices; "" means http://169.254.169.254.
	IMDS string
	// IMDSPoll is how often they poll; 0 means 5 s.
	IMDSPoll time.Duration
	// NoIdleShutdown keeps the agents from shutting their instance down
	// once no client has used it for IdleTimeout (the instance then
	// terminates, being launched with shutdown behaviour terminate):
	// only open hosts and TerminateIdle terminate idle instances then.
	NoIdleShutdown bool
}

// DefaultIMDS is the address of the EC2 instance metadata service.
const DefaultIMDS = "http://169.254.169.254"

// spotState is the host's memory of interruptions, under Host.mu.
type spotState struct {
	interrupted bool // an instance of this host had a notice
}

// instanceSpot is an instance's, under Host.mu.
type instanceSpot struct {
	notice  *agentproto.Notice
	workers map[*worker]bool // running there
}

// agentEnv is the environment of the agents on the host's instances.
func (h *Host) agentEnv() map[string]string {
	env := map[string]string{agentproto.EnvIMDS: h.opts.IMDS}
	if env[agentproto.EnvIMDS] == "" {
		env[agentproto.EnvIMDS] = DefaultIMDS
	}
	if h.opts.IMDSPoll > 0 {
		env[agentproto.EnvIMDSPoll] = h.opts.IMDSPoll.String()
	}
	if !h.opts.NoIdleShutdown {
		env[agentproto.EnvIdleShutdown] = h.opts.IdleTimeout.String()
	}
	return env
}

// interrupted handles the notice of inst's agent: the instance takes no
// new worker (in the table, for every client), and its workers are
// killed and reported lost, so that the coordinator runs their tasks
// again elsewhere; results already received stay.
func (h *Host) interrupted(inst *instance, n agentproto.Notice) {
	h.mu.Lock()
	if inst.spot.notice != nil {
		h.mu.Unlock()
		return
	}
	inst.spot.notice = &n
	h.spot.interrupted = true
	var ws []*worker
	for w := range inst.spot.workers {
		ws = append(ws, w)
	}
	h.mu.Unlock()
	fmt.Fprintf(h.opts.Log, "meadowrun: ec2 host: %s has a spot interruption notice (%s at %s): it takes no more work, and its %d workers' tasks run elsewhere\n",
		inst.id, n.Action, n.Time, len(ws))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.table.SetPreventFurtherAllocation(ctx, inst.id, true); err != nil {
		fmt.Fprintf(h.opts.Log, "meadowrun: ec2 host: keeping new work off %s: %v\n", inst.id, err)
	}
	for _, w := range ws {
		w.Worker.Kill()
	}
}

// goingAway says whether inst had a notice.
func (h *Host) goingAway(inst *instance) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return inst.spot.notice != nil
}

// track counts w as running on its instance; one started there after the
// notice is killed at once.
func (h *Host) track(w *worker) {
	h.mu.Lock()
	if w.inst.spot.workers == nil {
		w.inst.spot.workers = map[*worker]bool{}
	}
	w.inst.spot.workers[w] = true
	gone := w.inst.spot.notice != nil
	h.mu.Unlock()
	if gone {
		w.Worker.Kill()
	}
}

// untrack takes w off its instance and returns the exit to report: lost
// when the instance had a notice, so that w's task runs again.
func (h *Host) untrack(w *worker, st driver.ExitStatus) driver.ExitStatus {
	h.mu.Lock()
	delete(w.inst.spot.workers, w)
	gone := w.inst.spot.notice != nil
	h.mu.Unlock()
	if gone && !st.Lost {
		return driver.ExitStatus{Code: -1, Lost: true, Output: st.Output}
	}
	return st
}

// allocResources returns r as booked and launched: after an
// interruption, with OnDemandAfterInterruption, no spot market (an
// eviction rate no spot offer is within).
func (h *Host) allocResources(r driver.Resources) driver.Resources {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.opts.OnDemandAfterInterruption && h.spot.interrupted {
		r.MaxEvictionRate = -1
	}
	return r
}

type elsewhereKey struct{}

// startElsewhere starts the worker again after it was booked on an
// instance that just had a notice (the table keeps it off it once the
// notice is recorded), a bounded number of times.
func (h *Host) startElsewhere(ctx context.Context, spec driver.WorkerSpec) (driver.Worker, error) {
	n, _ := ctx.Value(elsewhereKey{}).(int)
	if n >= 20 {
		return nil, fmt.Errorf("ec2 host: %w: every instance with room is being interrupted", driver.ErrNoCapacity)
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(50 * time.Millisecond):
	}
	return h.Start(context.WithValue(ctx, elsewhereKey{}, n+1), spec)
}
