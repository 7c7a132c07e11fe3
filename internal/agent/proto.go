// Package agent is the remote side of meadowrun's hosts with agents (SSH
// machines today): a process on each machine (the user's own binary, or
// the meadowrun CLI, started with EnvAgent set) that listens on a Unix
// socket in its cache directory, reports the machine's capacity, keeps
// content-addressed binaries and files, starts workers with the same
// enforcement as the local host, and relays each worker's protocol stream
// over one connection to the socket.
//
// Clients reach the socket through a transport (SSH stream-local
// forwarding for SSH hosts), so no inbound port is opened. What is said on
// the socket is the agent protocol, package agentproto, specified in
// docs/agent-protocol.md; the client is package agentclient.
package agent

import "github.com/meadowrun-go/meadowrun/internal/agentproto"

// EnvAgent, set to the cache directory, makes meadowrun.Main serve as the
// agent.
const EnvAgent = agentproto.EnvAgent

// Version is the agent protocol version this agent speaks.
const Version = agentproto.Version

// idOf names the agents of a binary, as in their lock and pid files.
func idOf(binary string) string { return agentproto.AgentID(binary) }
