package agentclient

import (
	"context"
	"io"
	"time"
)

// Transport reaches one machine: it is all a kind of host has to provide
// to run work through meadowrun's agent (docs/agent-protocol.md, "What a
// transport provides"). Open is called to connect the machine the first
// time it is used and again each time it is reconnected after it was
// lost; a Transport is used by one goroutine at a time.
type Transport interface {
	// Open connects to the machine (for SSH: TCP, jump hosts, login, host
	// key). ctx bounds connecting; the Link outlives it. Errors should
	// wrap driver.ErrUnreachable, ErrAuth, ErrHostKey or ErrPlatform, which
	// decide how soon the machine is tried again.
	Open(ctx context.Context) (Link, error)
}

// Link is one connection to a machine, from Transport.Open.
type Link interface {
	// Bootstrap makes sure the agent runs on the machine: it finds the
	// machine's platform, takes the program for it from programs
	// (Programs.For), and, when no agent of that program answers, puts the
	// program on the machine if it lacks it (by its sha256, under
	// agentproto.BinDir), starts it as the agent (agentproto.EnvAgent and
	// friends) and waits until it listens. It returns the program the
	// agent runs; Dial then reaches that agent. Errors name the machine.
	Bootstrap(ctx context.Context, programs *Programs) (*Program, error)
	// Dial opens a new byte stream to the agent's socket. Each stream is
	// one connection of the agent protocol; closing it ends it.
	Dial(ctx context.Context) (io.ReadWriteCloser, error)
	// KeepAlive makes one round trip over the link and fails once the
	// link is broken. The client calls it every MachineConfig.KeepAlive and
	// gives the machine up when it fails, or does not return within
	// KeepAliveMisses intervals.
	KeepAlive() error
	// Close breaks the link, and with it every stream dialled on it.
	Close() error
}

// MachineConfig is one machine of a Host.
type MachineConfig struct {
	// Name names the machine in messages and in driver.Worker.Machine;
	// unique in the host.
	Name string
	// Transport reaches it.
	Transport Transport
	// ConnectTimeout bounds connecting; a background reconnect gets twice
	// as long (it bootstraps too). 0 means 10 s.
	ConnectTimeout time.Duration
	// KeepAlive is the interval of keepalives; 0 means 1 s.
	KeepAlive time.Duration
	// KeepAliveMisses is how many intervals a keepalive may take before
	// the machine is lost; 0 means 3.
	KeepAliveMisses int
}
