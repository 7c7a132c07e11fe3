package agentproto

import (
	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/journal"
	"github.com/meadowrun-go/meadowrun/internal/sysres"
)

// Conversions between the protocol's messages and the types the two ends
// work with. They copy field by field, so that a field added to one of
// those types stays off the wire until it is added here and to the
// protocol's document.

// ResourcesOf is r on the wire.
func ResourcesOf(r driver.Resources) Resources {
	return Resources{LogicalCPU: r.LogicalCPU, MemoryBytes: r.MemoryBytes, GPUs: r.GPUs, GPUMemoryBytes: r.GPUMemoryBytes,
		Flags: r.Flags, EphemeralBytes: r.EphemeralBytes, MaxEvictionRate: r.MaxEvictionRate}
}

// Driver is r as the driver package has it.
func (r Resources) Driver() driver.Resources {
	return driver.Resources{LogicalCPU: r.LogicalCPU, MemoryBytes: r.MemoryBytes, GPUs: r.GPUs, GPUMemoryBytes: r.GPUMemoryBytes,
		Flags: r.Flags, EphemeralBytes: r.EphemeralBytes, MaxEvictionRate: r.MaxEvictionRate}
}

// WorkerSpecOf is s on the wire; its files travel in Start.Files. The
// defaults, RuntimeGo and DeployMirrorLocal, are left out, so that a Go
// worker's start line is what it was before the fields existed.
func WorkerSpecOf(s driver.WorkerSpec) WorkerSpec {
	rt := s.Runtime
	if rt == driver.RuntimeGo {
		rt = ""
	}
	w := WorkerSpec{Name: s.Name, Resources: ResourcesOf(s.Resources), Env: s.Env,
		Runtime: string(rt), Deployment: DeploymentOf(s.Deployment), Ports: s.Ports}
	for _, c := range s.Sidecars {
		w.Sidecars = append(w.Sidecars, Container{Name: c.Name, Image: c.Image, Env: c.Env, Args: c.Args, Credentials: credentialsOf(c.Credentials)})
	}
	return w
}

// Driver is s as the driver package has it, without files.
func (s WorkerSpec) Driver() driver.WorkerSpec {
	w := driver.WorkerSpec{Name: s.Name, Resources: s.Resources.Driver(), Env: s.Env,
		Runtime: driver.Runtime(s.Runtime), Deployment: s.Deployment.Driver(), Ports: s.Ports}
	for _, c := range s.Sidecars {
		w.Sidecars = append(w.Sidecars, driver.Container{Name: c.Name, Image: c.Image, Env: c.Env, Args: c.Args, Credentials: c.Credentials.driver()})
	}
	return w
}

func credentialsOf(c *driver.Credentials) *Credentials {
	if c == nil {
		return nil
	}
	return &Credentials{Username: c.Username, Password: c.Password}
}

func (c *Credentials) driver() *driver.Credentials {
	if c == nil {
		return nil
	}
	return &driver.Credentials{Username: c.Username, Password: c.Password}
}

// DeploymentOf is d on the wire; the kind DeployMirrorLocal, the default,
// is left out.
func DeploymentOf(d driver.Deployment) Deployment {
	kind := d.Kind
	if kind == driver.DeployMirrorLocal {
		kind = ""
	}
	return Deployment{Kind: string(kind), Image: d.Image, Repo: d.Repo, Branch: d.Branch, Commit: d.Commit, Interpreter: d.Interpreter,
		Credentials: credentialsOf(d.Credentials), Environment: environmentOf(d.Environment)}
}

func environmentOf(e *driver.Environment) *Environment {
	if e == nil {
		return nil
	}
	p := e.Pip
	return &Environment{Manager: e.Manager, Spec: e.Spec, Format: e.Format, Python: e.Python,
		Pip: PipOptions{IndexURL: p.IndexURL, ExtraIndexURLs: p.ExtraIndexURLs, FindLinks: p.FindLinks, NoIndex: p.NoIndex}}
}

func (e *Environment) driver() *driver.Environment {
	if e == nil {
		return nil
	}
	p := e.Pip
	return &driver.Environment{Manager: e.Manager, Spec: e.Spec, Format: e.Format, Python: e.Python,
		Pip: driver.PipOptions{IndexURL: p.IndexURL, ExtraIndexURLs: p.ExtraIndexURLs, FindLinks: p.FindLinks, NoIndex: p.NoIndex}}
}

// Driver is d as the driver package has it.
func (d Deployment) Driver() driver.Deployment {
	return driver.Deployment{Kind: driver.DeploymentKind(d.Kind), Image: d.Image, Repo: d.Repo, Branch: d.Branch, Commit: d.Commit,
		Interpreter: d.Interpreter, Credentials: d.Credentials.driver(), Environment: d.Environment.driver()}
}

// ExitStatusOf is st on the wire.
func ExitStatusOf(st driver.ExitStatus) ExitStatus {
	return ExitStatus{Code: st.Code, Signal: st.Signal, OOMKilled: st.OOMKilled, PeakMemoryBytes: st.PeakMemoryBytes,
		LimitBytes: st.LimitBytes, Output: st.Output, Lost: st.Lost}
}

// Driver is st as the driver package has it.
func (st ExitStatus) Driver() driver.ExitStatus {
	return driver.ExitStatus{Code: st.Code, Signal: st.Signal, OOMKilled: st.OOMKilled, PeakMemoryBytes: st.PeakMemoryBytes,
		LimitBytes: st.LimitBytes, Output: st.Output, Lost: st.Lost}
}

// CapacityOf is c on the wire.
func CapacityOf(c sysres.Capacity) Capacity {
	out := Capacity{LogicalCPU: c.LogicalCPU, MemoryBytes: c.MemoryBytes, Flags: c.Flags, EphemeralStorageBytes: c.EphemeralStorageBytes}
	for _, g := range c.GPUs {
		out.GPUs = append(out.GPUs, GPU{Index: g.Index, UUID: g.UUID, Name: g.Name, MemoryBytes: g.MemoryBytes})
	}
	return out
}

// Sysres is c as the sysres package has it.
func (c Capacity) Sysres() sysres.Capacity {
	out := sysres.Capacity{LogicalCPU: c.LogicalCPU, MemoryBytes: c.MemoryBytes, Flags: c.Flags, EphemeralStorageBytes: c.EphemeralStorageBytes}
	for _, g := range c.GPUs {
		out.GPUs = append(out.GPUs, sysres.GPU{Index: g.Index, UUID: g.UUID, Name: g.Name, MemoryBytes: g.MemoryBytes})
	}
	return out
}

// JobOf is r on the wire.
func JobOf(r journal.Record) Job {
	j := Job{ID: r.ID, Kind: string(r.Kind), State: string(r.State), Host: r.Host, Command: r.Command, Detached: r.Detached,
		PID: r.PID, Proc: r.Proc, Submitted: r.Submitted, Started: r.Started, Finished: r.Finished,
		Total: r.Total, Done: r.Done, Failed: r.Failed, ExitCode: r.ExitCode, Error: r.Error, LogFile: r.LogFile,
		CancelRequested: r.CancelRequested, Spec: r.Spec, Machine: r.Machine, Resumed: r.Resumed, EarlierLogs: r.EarlierLogs, CostUSD: r.CostUSD}
	if f := r.Function; f != nil {
		j.Function = &Function{Name: f.Name, Arg: f.Arg, Result: f.Result, Codec: f.Codec}
	}
	for _, p := range r.Parts {
		j.Parts = append(j.Parts, Part{Machine: p.Machine, ID: p.ID, Weight: p.Weight})
	}
	return j
}

// Record is j as the journal keeps it.
func (j Job) Record() journal.Record {
	r := journal.Record{ID: j.ID, Kind: driver.JobKind(j.Kind), State: driver.JobState(j.State), Host: j.Host, Command: j.Command, Detached: j.Detached,
		PID: j.PID, Proc: j.Proc, Submitted: j.Submitted, Started: j.Started, Finished: j.Finished,
		Total: j.Total, Done: j.Done, Failed: j.Failed, ExitCode: j.ExitCode, Error: j.Error, LogFile: j.LogFile,
		CancelRequested: j.CancelRequested, Spec: j.Spec, Machine: j.Machine, Resumed: j.Resumed, EarlierLogs: j.EarlierLogs, CostUSD: j.CostUSD}
	if f := j.Function; f != nil {
		r.Function = &journal.Function{Name: f.Name, Arg: f.Arg, Result: f.Result, Codec: f.Codec}
	}
	for _, p := range j.Parts {
		r.Parts = append(r.Parts, journal.Part{Machine: p.Machine, ID: p.ID, Weight: p.Weight})
	}
	return r
}

// ResultsOf are rs on the wire.
func ResultsOf(rs []journal.Result) []Result {
	var out []Result
	for _, r := range rs {
		x := Result{Task: r.Task, Attempt: r.Attempt, Value: r.Value, Worker: r.Worker, Machine: r.Machine, Nanos: r.Nanos, Peak: r.Peak, Cost: r.Cost}
		if f := r.Err; f != nil {
			x.Err = &Failure{Kind: f.Kind, Type: f.Type, Message: f.Message, Stack: f.Stack, ExitCode: f.ExitCode,
				Signal: f.Signal, PeakMemoryBytes: f.PeakMemoryBytes, LimitBytes: f.LimitBytes, Canceled: f.Canceled}
		}
		out = append(out, x)
	}
	return out
}

// JournalResults are rs as the journal keeps them.
func JournalResults(rs []Result) []journal.Result {
	var out []journal.Result
	for _, r := range rs {
		x := journal.Result{Task: r.Task, Attempt: r.Attempt, Value: r.Value, Worker: r.Worker, Machine: r.Machine, Nanos: r.Nanos, Peak: r.Peak, Cost: r.Cost}
		if f := r.Err; f != nil {
			x.Err = &journal.Failure{Kind: f.Kind, Type: f.Type, Message: f.Message, Stack: f.Stack, ExitCode: f.ExitCode,
				Signal: f.Signal, PeakMemoryBytes: f.PeakMemoryBytes, LimitBytes: f.LimitBytes, Canceled: f.Canceled}
		}
		out = append(out, x)
	}
	return out
}
