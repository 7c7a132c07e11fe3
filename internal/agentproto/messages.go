package agentproto

import (
	"encoding/json"
	"time"
)

// Operations: the "op" of a request line.
const (
	OpHello     = "hello"     // Hello: open a session; the connection becomes its control channel
	OpFit       = "fit"       // Fit: how many workers needing Resources fit when the machine is idle
	OpHave      = "have"      // Have: which of SHAs are missing
	OpPut       = "put"       // Put: store the Size bytes following the request
	OpStart     = "start"     // Start: start a worker; the connection becomes its stream
	OpKill      = "kill"      // Kill (on the control channel): kill a worker of the session
	OpSupervise = "supervise" // Supervise: journal a durable job and start its supervisor
	OpJob       = "job"       // JobQuery: a durable job's record and results
	OpCancel    = "cancel"    // CancelJob: cancel a durable job
	OpLog       = "log"       // JobLog: a piece of a durable job's log
)

// Request is a request line: one of *Hello, *Fit, *Have, *Put, *Start,
// *Kill, *Supervise, *JobQuery, *CancelJob or *JobLog (or their values).
type Request interface {
	// Op is the request's "op".
	Op() string
}

// Hello opens a session. Answered by HelloResponse; the connection then
// stays open as the session's control channel.
type Hello struct {
	// Version is the client's protocol version; it must equal the agent's.
	Version int `json:"version"`
	// Session is the client's id of the session, unique per connection.
	Session string `json:"session"`
}

// Fit asks how many workers needing Resources fit on the idle machine.
// Answered by FitResponse.
type Fit struct {
	Resources Resources `json:"resources"`
}

// Have asks which of the sha256 digests SHAs the agent lacks (neither in
// bin/ nor in files/). Answered by HaveResponse.
type Have struct {
	SHAs []string `json:"shas"`
}

// Put stores Size bytes, which follow the request line on the connection,
// under their sha256 SHA: in bin/ when Mode has an execute bit, in files/
// otherwise. Answered by Response once the bytes are checked and stored.
//
// With URL set no bytes follow: the agent downloads them with a GET of URL
// (with Header, "Name: value", when set), such as a presigned URL of an
// object store the client wrote them to, and checks size and digest as
// for bytes sent. A failed download is an error response; the client may
// then send the bytes.
type Put struct {
	SHA    string `json:"sha"`
	Size   int64  `json:"size"`
	Mode   uint32 `json:"mode"`
	URL    string `json:"url,omitempty"`
	Header string `json:"header,omitempty"`
}

// Start starts a worker of Session running the program Binary (a sha256
// the agent has, see Put) in the working tree of Files. Answered by
// Response; on success the connection becomes the worker's protocol
// stream, and the session's control channel reports its end (WorkerExit).
type Start struct {
	Session string     `json:"session"`
	Worker  WorkerSpec `json:"worker"`
	Binary  string     `json:"binary"`
	Files   []File     `json:"files,omitempty"`
	// Refs, when not nil, says that the worker's stream also carries the
	// frames of refs.go: large arguments and results travel through an
	// object store, the agent downloading and uploading them.
	Refs *StreamRefs `json:"refs,omitempty"`
}

// Kill, sent on a session's control channel, kills the session's worker
// of that name. It has no response: the worker's WorkerExit follows.
type Kill struct {
	Worker string `json:"worker"`
}

// Supervise journals Job (its record, with Host "local") and its map
// arguments Args in the agent's journal, then starts the job's supervisor
// on the machine in the working tree of Files (each file put first).
// Answered by Response once the supervisor has taken the job.
type Supervise struct {
	Job   Job      `json:"job"`
	Args  [][]byte `json:"args,omitempty"`
	Files []File   `json:"files,omitempty"`
}

// JobQuery asks for the record of durable job ID and, with Results, its
// results after sequence number After (0: all). Answered by JobResponse.
type JobQuery struct {
	ID      string `json:"id"`
	Results bool   `json:"results,omitempty"`
	After   uint64 `json:"after,omitempty"`
}

// CancelJob cancels durable job ID, and is answered (JobResponse) once it
// has stopped (at most about 15 s); a finished job is KindFinished.
type CancelJob struct {
	ID string `json:"id"`
}

// JobLog asks for up to MaxLog bytes of durable job ID's log from Offset.
// Answered by JobResponse; fewer bytes mean the end of the log so far.
type JobLog struct {
	ID     string `json:"id"`
	Offset int64  `json:"offset,omitempty"`
}

// MaxLog is the most log bytes one JobLog answers.
const MaxLog = 1 << 20

// Op implements Request.
func (Hello) Op() string { return OpHello }

// Op implements Request.
func (Fit) Op() string { return OpFit }

// Op implements Request.
func (Have) Op() string { return OpHave }

// Op implements Request.
func (Put) Op() string { return OpPut }

// Op implements Request.
func (Start) Op() string { return OpStart }

// Op implements Request.
func (Kill) Op() string { return OpKill }

// Op implements Request.
func (Supervise) Op() string { return OpSupervise }

// Op implements Request.
func (JobQuery) Op() string { return OpJob }

// Op implements Request.
func (CancelJob) Op() string { return OpCancel }

// Op implements Request.
func (JobLog) Op() string { return OpLog }

// JobRequest is a request about one durable job: JobQuery, CancelJob or
// JobLog.
type JobRequest interface {
	Request
	// ForJob returns the request about job id.
	ForJob(id string) JobRequest
}

// ForJob implements JobRequest.
func (r JobQuery) ForJob(id string) JobRequest { r.ID = id; return r }

// ForJob implements JobRequest.
func (r CancelJob) ForJob(id string) JobRequest { r.ID = id; return r }

// ForJob implements JobRequest.
func (r JobLog) ForJob(id string) JobRequest { r.ID = id; return r }

// Error kinds in Response.Kind, so that the client can classify.
const (
	KindNoCapacity  = "no-capacity" // the request fits, but not now
	KindNeverFits   = "never-fits"  // the request can never fit this machine
	KindMissing     = "missing"     // a program or file is not there
	KindDiskFull    = "disk-full"   // no space left
	KindUnsupported = "unsupported" // this agent cannot do it
	KindFailed      = "failed"      // anything else
	KindNotFound    = "not-found"   // the job is not in this machine's journal
	KindFinished    = "finished"    // the job to cancel has already finished
	KindStopping    = "stopping"    // the agent is exiting (idle): start another
	// Container deployments: the first two are the same on every
	// machine, the others the machine's own.
	KindImageNotFound = "image-not-found" // the registry has no such image
	KindRegistryAuth  = "registry-auth"   // the registry refused the credentials
	KindSidecarExited = "sidecar-exited"  // a sidecar stopped as it started
	KindPortInUse     = "port-in-use"     // a port of the job is taken on the machine
	KindNoEngine      = "no-engine"       // the machine has no container engine
	KindEnvironment   = "environment"     // a Python environment cannot be built from its specification
)

// Response is the response line of every request; the responses that
// carry more embed it. A non-empty Error means the request failed.
type Response struct {
	Error string `json:"error,omitempty"`
	Kind  string `json:"kind,omitempty"`
}

// Failed reports whether the response is an error.
func (r Response) Failed() bool { return r.Error != "" }

// Status is the Response that r is or embeds, for code that handles
// every response alike.
func (r Response) Status() Response { return r }

// HelloResponse answers Hello with the machine the agent runs on.
type HelloResponse struct {
	Response
	Machine *Machine `json:"machine,omitempty"`
}

// FitResponse answers Fit.
type FitResponse struct {
	Response
	Fit int `json:"fit,omitempty"`
}

// HaveResponse answers Have with the digests the agent lacks.
type HaveResponse struct {
	Response
	Missing []string `json:"missing,omitempty"`
}

// JobResponse answers JobQuery, CancelJob and JobLog: the job's record as
// this machine journals it, whether the process running it died before it
// ended (Lost), its results after JobQuery.After up to sequence number
// Last, a piece of its log.
type JobResponse struct {
	Response
	Job     *Job     `json:"job,omitempty"`
	Lost    bool     `json:"lost,omitempty"`
	Results []Result `json:"results,omitempty"`
	Last    uint64   `json:"last,omitempty"`
	Log     []byte   `json:"log,omitempty"`
}

// WorkerExit is sent by the agent on a session's control channel when a
// worker of the session ended, after its stream was closed.
type WorkerExit struct {
	Worker string     `json:"worker"`
	Exit   ExitStatus `json:"exit"`
}

// Machine describes the agent's machine, answered to Hello.
type Machine struct {
	Name     string   `json:"name"` // its host name
	OS       string   `json:"os"`   // GOOS
	Arch     string   `json:"arch"` // GOARCH
	PID      int      `json:"pid"`  // the agent's process id
	Capacity Capacity `json:"capacity"`
	// Limiter is how memory is enforced: "cgroup2", "cgroup1" or
	// "watchdog".
	Limiter string `json:"limiter"`
	// Python is the version of the python3 in the agent's PATH
	// ("3.11.2"), "" when there is none.
	Python string `json:"python,omitempty"`
	// Containers names the machine's container engine ("docker
	// 20.10.24"), "" when none answers the agent.
	Containers string `json:"containers,omitempty"`
}

// Capacity is what the machine has for workers: CPUs and memory after
// cgroup limits, GPUs, feature flags, free disk.
type Capacity struct {
	LogicalCPU            float64  `json:"logical_cpu"`
	MemoryBytes           int64    `json:"memory_bytes"`
	GPUs                  []GPU    `json:"gpus,omitempty"`
	Flags                 []string `json:"flags,omitempty"`
	EphemeralStorageBytes int64    `json:"ephemeral_storage_bytes"`
}

// GPU is one GPU of the machine.
type GPU struct {
	Index       int    `json:"index"`
	UUID        string `json:"uuid"`
	Name        string `json:"name"`
	MemoryBytes int64  `json:"memory_bytes,omitempty"`
}

// Resources are what one worker needs.
type Resources struct {
	LogicalCPU      float64  `json:"logical_cpu"`
	MemoryBytes     int64    `json:"memory_bytes,omitempty"`
	GPUs            float64  `json:"gpus,omitempty"`
	GPUMemoryBytes  int64    `json:"gpu_memory_bytes,omitempty"`
	Flags           []string `json:"flags,omitempty"`
	EphemeralBytes  int64    `json:"ephemeral_bytes,omitempty"`
	MaxEvictionRate float64  `json:"max_eviction_rate,omitempty"`
}

// WorkerSpec is the worker to start: its name (unique in the session),
// resources and environment, and, for workers other than the Go program's,
// the runtime that serves the worker protocol and the deployment it runs
// with.
type WorkerSpec struct {
	Name      string            `json:"name"`
	Resources Resources         `json:"resources"`
	Env       map[string]string `json:"env,omitempty"`
	// Runtime is the worker's runtime, "go" or "python"; "" means "go".
	Runtime string `json:"runtime,omitempty"`
	// Deployment says where the worker's code and environment come from;
	// the zero value is the client's own program (mirror_local).
	Deployment Deployment `json:"deployment,omitzero"`
	// Ports are opened on the machine while the worker runs ("N",
	// "N-M"); Sidecars are containers started with it (container
	// deployments).
	Ports    []string    `json:"ports,omitempty"`
	Sidecars []Container `json:"sidecars,omitempty"`
}

// Container is a sidecar container.
type Container struct {
	Name        string            `json:"name,omitempty"`
	Image       string            `json:"image"`
	Env         map[string]string `json:"env,omitempty"`
	Args        []string          `json:"args,omitempty"`
	Credentials *Credentials      `json:"credentials,omitempty"`
}

// Credentials log in to a container registry. The agent uses them for
// the pull and never logs or journals them; they travel only inside the
// SSH connection.
type Credentials struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// Deployment is a worker's deployment: its kind and the fields of that
// kind. Agents honour the kinds "interpreter" and "container".
type Deployment struct {
	// Kind is "mirror_local", "container", "git" or "interpreter"; ""
	// means "mirror_local".
	Kind string `json:"kind,omitempty"`
	// Image is a container image (kind "container").
	Image string `json:"image,omitempty"`
	// Repo, Branch and Commit name a git repository's code (kind "git").
	Repo   string `json:"repo,omitempty"`
	Branch string `json:"branch,omitempty"`
	Commit string `json:"commit,omitempty"`
	// Interpreter is the interpreter's path on the machine, "" for
	// python3 from the agent's PATH (kind "interpreter"), or in the image
	// (kind "container" with runtime "python").
	Interpreter string `json:"interpreter,omitempty"`
	// Credentials log in to Image's registry (kind "container").
	Credentials *Credentials `json:"credentials,omitempty"`
	// Environment is the Python environment the agent builds (or finds
	// built) on its machine (kind "environment").
	Environment *Environment `json:"environment,omitempty"`
}

// Environment is a Python environment's specification: see
// driver.Environment, whose fields and JSON names it has.
type Environment struct {
	Manager string     `json:"manager"`
	Spec    string     `json:"spec"`
	Format  string     `json:"format,omitempty"`
	Python  string     `json:"python,omitempty"`
	Pip     PipOptions `json:"pip,omitzero"`
}

// PipOptions are pip's package index options.
type PipOptions struct {
	IndexURL       string   `json:"index_url,omitempty"`
	ExtraIndexURLs []string `json:"extra_index_urls,omitempty"`
	FindLinks      []string `json:"find_links,omitempty"`
	NoIndex        bool     `json:"no_index,omitempty"`
}

// ExitStatus is how a worker ended.
type ExitStatus struct {
	Code            int    `json:"code"`
	Signal          string `json:"signal,omitempty"`
	OOMKilled       bool   `json:"oom_killed,omitempty"`
	PeakMemoryBytes int64  `json:"peak_memory_bytes,omitempty"`
	LimitBytes      int64  `json:"limit_bytes,omitempty"`
	Output          []byte `json:"output,omitempty"` // unforwarded output
	Lost            bool   `json:"lost,omitempty"`
}

// File is one file of a deployment.
type File struct {
	Path string `json:"path"` // relative, slash-separated
	SHA  string `json:"sha"`
	Mode uint32 `json:"mode"`
}

// Job is a durable job's record, as a machine's journal keeps it.
type Job struct {
	ID              string          `json:"id"`
	Kind            string          `json:"kind"`
	State           string          `json:"state"`
	Host            string          `json:"host,omitempty"`
	Command         []string        `json:"command,omitempty"`
	Function        *Function       `json:"function,omitempty"`
	Detached        bool            `json:"detached,omitempty"`
	PID             int             `json:"pid,omitempty"`
	Proc            string          `json:"proc,omitempty"`
	Submitted       time.Time       `json:"submitted"`
	Started         time.Time       `json:"started,omitzero"`
	Finished        time.Time       `json:"finished,omitzero"`
	Total           int             `json:"total"`
	Done            int             `json:"done"`
	Failed          int             `json:"failed"`
	ExitCode        *int            `json:"exit_code,omitempty"`
	Error           string          `json:"error,omitempty"`
	LogFile         string          `json:"log_file,omitempty"`
	Resumed         int             `json:"resumed,omitempty"`
	EarlierLogs     []string        `json:"earlier_logs,omitempty"`
	CancelRequested bool            `json:"cancel_requested,omitempty"`
	Spec            json.RawMessage `json:"spec,omitempty"`
	Machine         string          `json:"machine,omitempty"`
	Parts           []Part          `json:"parts,omitempty"`
	CostUSD         float64         `json:"cost_usd,omitempty"`
}

// Function is the registered function a job runs.
type Function struct {
	Name   string `json:"name"`
	Arg    string `json:"arg"`
	Result string `json:"result"`
	Codec  string `json:"codec"`
}

// Part is one machine's share of a map split across machines.
type Part struct {
	Machine string `json:"machine"`
	ID      string `json:"id"`
	Weight  int    `json:"weight"`
}

// Result is the final outcome of one task of a durable job.
type Result struct {
	Task    int      `json:"task"`
	Attempt int      `json:"attempt,omitempty"`
	Value   []byte   `json:"value,omitempty"`
	Err     *Failure `json:"err,omitempty"`
	Worker  string   `json:"worker,omitempty"`
	Machine string   `json:"machine,omitempty"`
	Nanos   int64    `json:"nanos,omitempty"`
	Peak    int64    `json:"peak,omitempty"`
	Cost    float64  `json:"cost,omitempty"` // USD, the task's share
}

// Failure describes a failed task of a durable job.
type Failure struct {
	Kind            string `json:"kind,omitempty"`
	Type            string `json:"type,omitempty"`
	Message         string `json:"message"`
	Stack           string `json:"stack,omitempty"`
	ExitCode        int    `json:"exit_code,omitempty"`
	Signal          string `json:"signal,omitempty"`
	PeakMemoryBytes int64  `json:"peak_memory_bytes,omitempty"`
	LimitBytes      int64  `json:"limit_bytes,omitempty"`
	Canceled        bool   `json:"canceled,omitempty"`
}
