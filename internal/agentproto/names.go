package agentproto

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Version is the agent protocol version. It is part of the agent's socket
// name (SocketName), so agents of different versions listen on different
// sockets and never meet a client of another; Hello carries it too, and an
// agent refuses a Hello of another version.
const Version = 2

// EnvAgent, set to the cache directory, makes meadowrun.Main serve as the
// agent.
const EnvAgent = "MEADOWRUN_AGENT"

// EnvMachine passes the agent the machine id its client computed (see
// MachineID); without it the agent computes its own.
const EnvMachine = "MEADOWRUN_AGENT_MACHINE"

// EnvContainerMounts passes the agent the bind mounts of every worker
// container it starts, comma-separated "HOST_PATH:CONTAINER_PATH[:ro]".
const EnvContainerMounts = "MEADOWRUN_AGENT_CONTAINER_MOUNTS"

// EnvReadyFD names a descriptor on which the agent writes ReadyLine once
// it listens, then closes it: its starter learns at once whether it came
// up or died.
const EnvReadyFD = "MEADOWRUN_AGENT_READY_FD"

// EnvIdleExit passes the agent how long it stays without sessions or
// workers before it exits (a time.Duration; "0s" or a negative one:
// never); without it the agent's default applies.
const EnvIdleExit = "MEADOWRUN_AGENT_IDLE_EXIT"

// EnvMilliCPUs, when set, is the agent's CPU capacity in thousandths of a
// CPU, in place of what it detects: a Kubernetes pod's CPU request, which
// is no limit (no cgroup quota) that the agent could see.
const EnvMilliCPUs = "MEADOWRUN_AGENT_MILLICPUS"

// EnvDial, set to an agent's socket, makes meadowrun.Main connect its
// standard input and output to that socket instead of serving: the stream
// to the agent for transports that can only run a command on the machine
// (Kubernetes exec).
const EnvDial = "MEADOWRUN_AGENT_DIAL"

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
	return filepath.Join(dir, AgentName(binary, machine)+".sock")
}

// AgentName is the stem of the names of the socket, lock and pid file of
// the agent of machine running the binary whose sha256 is binary.
func AgentName(binary, machine string) string {
	return "agent-" + AgentID(binary) + "-" + machine
}

// AgentID names the agents of the binary whose sha256 is binary, of this
// protocol version, on any machine.
func AgentID(binary string) string {
	if len(binary) > 16 {
		binary = binary[:16]
	}
	return fmt.Sprintf("v%d-%s", Version, binary)
}

// LogName is the log, inside its directory, of the agents of machine.
func LogName(machine string) string { return "agent-" + machine + ".log" }

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
