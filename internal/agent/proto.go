// Package agent is the remote side of meadowrun's SSH hosts: a process on
// each machine (the user's own binary, or the meadowrun CLI, started with
// EnvAgent set) that listens on a Unix socket in its cache directory,
// reports the machine's capacity, keeps content-addressed binaries and
// files, starts workers with the same enforcement as the local host, and
// relays each worker's protocol stream over one connection to the socket.
//
// The client reaches the socket through SSH stream-local forwarding, so no
// inbound port is opened and every connection of a client shares its one
// SSH connection. The socket's protocol is documented in docs/ssh.md: each
// connection starts with one JSON request line and one JSON response line;
// a "hello" connection then stays open as the session's control channel
// (requests from the client, events from the agent, one JSON object per
// line), a "start" connection becomes the raw byte stream of one worker, a
// "put" connection carries one file's bytes.
package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/journal"
	"github.com/meadowrun-go/meadowrun/internal/sysres"
)

// Version is the agent protocol version. Agents of different versions
// listen on different sockets, so they never meet a client of another.
const Version = 1

// EnvAgent, set to the cache directory, makes meadowrun.Main serve as the
// agent.
const EnvAgent = "MEADOWRUN_AGENT"

// EnvMachine passes the agent the machine id its client computed (see
// MachineID); without it the agent computes its own.
const EnvMachine = "MEADOWRUN_AGENT_MACHINE"

// EnvReadyFD names a descriptor on which the agent writes ReadyLine once
// it listens, then closes it: its starter learns at once whether it came
// up or died.
const EnvReadyFD = "MEADOWRUN_AGENT_READY_FD"

// ReadyLine is what the agent writes on EnvReadyFD.
const ReadyLine = "meadowrun-agent-ready"

// Layout of the agent's directory.
const (
	BinDir    = "bin"    // bin/<sha256>: executables
	FileDir   = "files"  // files/<sha256>: deployment files
	DeployDir = "deploy" // deploy/<sha256 of the file list>: working trees
)

// The caches above may be shared by several machines (a home directory on
// NFS); what belongs to one machine's agent (its socket, lock, pid file,
// log and journal) is named by the machine's id.

// SocketName is the socket, inside its directory, of the agent of machine
// running the binary whose sha256 is binary. Each program has its own
// agent, so an agent is never older than the client that reaches it.
func SocketName(dir, binary, machine string) string {
	return filepath.Join(dir, "agent-"+idOf(binary)+"-"+machine+".sock")
}

// LogName is the log, inside its directory, of the agents of machine.
func LogName(machine string) string { return "agent-" + machine + ".log" }

func idOf(binary string) string {
	if len(binary) > 16 {
		binary = binary[:16]
	}
	return fmt.Sprintf("v%d-%s", Version, binary)
}

// MachineIDWords are three printf arguments of a shell script that give
// what MachineID is made of: the contents of /etc/machine-id, the host
// name, and the inode of the network namespace (machines in containers or
// namespaces can share the first two).
const MachineIDWords = `"$(cat /etc/machine-id 2>/dev/null)" "$(uname -n)" "$(stat -L -c %i /proc/self/ns/net 2>/dev/null)"`

// MachineID is a short id of a machine from the values of MachineIDWords.
func MachineID(machineID, hostname, netns string) string {
	h := sha256.Sum256([]byte(strings.TrimSpace(machineID) + "\x00" + strings.TrimSpace(hostname) + "\x00" + strings.TrimSpace(netns)))
	return hex.EncodeToString(h[:4])
}

// SelfMachineID is MachineID of the machine this runs on.
func SelfMachineID() string {
	mid, _ := os.ReadFile("/etc/machine-id")
	host, _ := os.Hostname()
	netns := ""
	if st, err := os.Stat("/proc/self/ns/net"); err == nil {
		if s, ok := st.Sys().(*syscall.Stat_t); ok {
			netns = strconv.FormatUint(s.Ino, 10)
		}
	}
	return MachineID(string(mid), host, netns)
}

// Operations.
const (
	OpHello = "hello" // open a session; the connection becomes its control channel
	OpFit   = "fit"   // how many workers needing Resources fit when idle
	OpHave  = "have"  // which of SHAs are missing
	OpPut   = "put"   // store Size bytes following the request as SHA
	OpStart = "start" // start a worker; the connection becomes its stream
	OpKill  = "kill"  // (on the control channel) kill Worker

	// Durable jobs (see jobs.go). The agent keeps them in the journal of
	// its state directory (StateDir), so that they outlive the client.

	// OpSupervise journals Job (its record, with Host "local") and its
	// map arguments Args, then starts its supervisor on this machine: the
	// agent's own program, in a session of its own, with XDG_STATE_HOME
	// inside the agent's directory. It answers once the supervisor has
	// taken the job.
	OpSupervise = "supervise"
	// OpJob answers the record of job ID, whether its process was lost,
	// and, with Results, its results after sequence number After (0: all)
	// and the last sequence number returned.
	OpJob = "job"
	// OpCancel cancels job ID as CancelJob does, and answers once it has
	// stopped (at most about 15 s); a finished job is KindFinished.
	OpCancel = "cancel"
	// OpLog answers up to MaxLog bytes of job ID's log file from Offset,
	// with the job's record; fewer bytes mean the end of the file so far.
	OpLog = "log"
)

// MaxLog is the most log bytes one OpLog answers.
const MaxLog = 1 << 20

// File is one file of a deployment.
type File struct {
	Path string `json:"path"` // relative, slash-separated
	SHA  string `json:"sha"`
	Mode uint32 `json:"mode"`
}

// Request is the first line of every connection, and each line a client
// sends on the control channel.
type Request struct {
	Op        string             `json:"op"`
	Version   int                `json:"version,omitempty"`
	Session   string             `json:"session,omitempty"`
	Resources *driver.Resources  `json:"resources,omitempty"`
	Spec      *driver.WorkerSpec `json:"spec,omitempty"`
	Binary    string             `json:"binary,omitempty"`
	Files     []File             `json:"files,omitempty"`
	SHAs      []string           `json:"shas,omitempty"`
	SHA       string             `json:"sha,omitempty"`
	Size      int64              `json:"size,omitempty"`
	Mode      uint32             `json:"mode,omitempty"`
	Worker    string             `json:"worker,omitempty"`
	// Durable jobs: the job and its arguments (OpSupervise), its id,
	// the results or log wanted (OpJob, OpCancel, OpLog).
	Job     *journal.Record `json:"job,omitempty"`
	Args    [][]byte        `json:"args,omitempty"`
	ID      string          `json:"id,omitempty"`
	Results bool            `json:"results,omitempty"`
	After   uint64          `json:"after,omitempty"`
	Offset  int64           `json:"offset,omitempty"`
}

// Error kinds in Response.Kind, so the client can classify.
const (
	KindNoCapacity  = "no-capacity"
	KindNeverFits   = "never-fits"
	KindMissing     = "missing"
	KindDiskFull    = "disk-full"
	KindUnsupported = "unsupported"
	KindFailed      = "failed"
	// KindNotFound: the job is not in this machine's journal.
	KindNotFound = "not-found"
	// KindFinished: the job to cancel has already finished.
	KindFinished = "finished"
)

// Response answers a Request.
type Response struct {
	Error   string   `json:"error,omitempty"`
	Kind    string   `json:"kind,omitempty"`
	Info    *Info    `json:"info,omitempty"`
	Fit     int      `json:"fit,omitempty"`
	Missing []string `json:"missing,omitempty"`
	// Durable jobs: the job's record as this machine journals it, whether
	// the process running it died before it ended, its results after
	// Request.After up to sequence number Last, a piece of its log.
	Job     *journal.Record  `json:"job,omitempty"`
	Lost    bool             `json:"lost,omitempty"`
	Results []journal.Result `json:"results,omitempty"`
	Last    uint64           `json:"last,omitempty"`
	Log     []byte           `json:"log,omitempty"`
}

// Info describes the agent's machine, answered to hello.
type Info struct {
	Machine  string          `json:"machine"`
	OS       string          `json:"os"`
	Arch     string          `json:"arch"`
	PID      int             `json:"pid"`
	Capacity sysres.Capacity `json:"capacity"`
	Limiter  string          `json:"limiter"`
}

// Event is sent by the agent on the control channel.
type Event struct {
	// Worker ended with Exit, after its stream was closed.
	Worker string            `json:"worker"`
	Exit   driver.ExitStatus `json:"exit"`
}
