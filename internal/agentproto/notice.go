package agentproto

// Notice is sent by the agent on every session's control channel when
// the machine is told it is going away (a spot interruption notice of the
// EC2 instance metadata), and again to each session opened after it. It
// carries no "worker": a client of an older version reads it as a
// WorkerExit of no worker and passes it over.
type Notice struct {
	// Notice is the kind: NoticeSpotInterruption.
	Notice string `json:"notice"`
	// Action is what will happen ("terminate", "stop", "hibernate").
	Action string `json:"action,omitempty"`
	// Time is when, as the metadata says it (RFC 3339).
	Time string `json:"time,omitempty"`
}

// NoticeSpotInterruption is the Notice of a spot interruption.
const NoticeSpotInterruption = "spot-interruption"

// EnvIMDS, set to the address of the instance metadata service
// ("http://169.254.169.254"), makes the agent poll it (IMDSv2, a token
// first) for spot interruption notices, and send a Notice when one comes.
const EnvIMDS = "MEADOWRUN_AGENT_IMDS"

// EnvIMDSPoll is how often the agent polls EnvIMDS (a time.Duration);
// without it, every 5 seconds.
const EnvIMDSPoll = "MEADOWRUN_AGENT_IMDS_POLL"

// EnvIdleShutdown makes the agent shut its machine down once it has had
// no session and no worker for this long (a time.Duration): an EC2
// instance launched with shutdown behaviour terminate then terminates
// itself when no client uses it, even when none is left to do it.
const EnvIdleShutdown = "MEADOWRUN_AGENT_IDLE_SHUTDOWN"

// EnvShutdownCommand is the command (run by sh -c) the agent shuts its
// machine down with (EnvIdleShutdown); without it "shutdown -h now", with
// "sudo -n" first when the agent is not root.
const EnvShutdownCommand = "MEADOWRUN_AGENT_SHUTDOWN_COMMAND"
