// Package agentproto is the agent protocol: the messages a client
// exchanges with meadowrun's agent (package agent) over connections to
// the agent's socket, and the names a transport needs to start an agent
// and find its socket. The protocol is specified in docs/agent-protocol.md;
// this package is its reference implementation.
//
// Every message is one line of JSON. A connection starts with a request
// line, whose "op" names its kind, and one response line; what follows
// depends on the kind: a Hello connection stays open as the session's
// control channel (Kill lines from the client, WorkerExit lines from the
// agent), a Put connection carries the bytes of one file before its
// response, a Start connection becomes the raw byte stream of one worker
// (docs/protocol.md).
//
// The message types are the protocol's own, with stable JSON names; they
// never embed the structs of other packages, so that changing those does
// not change the protocol by accident. convert.go converts between them
// and the driver's, journal's and sysres's types, at the edges.
package agentproto
