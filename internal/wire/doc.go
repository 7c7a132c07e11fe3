// Package wire implements version 1 of the meadowrun worker protocol: the
// framed, language-neutral byte format spoken between a coordinator (or an
// agent) and a worker process. docs/protocol.md is its specification; this
// package is the reference implementation.
//
// A stream is a sequence of frames. Each frame is a 4-byte big-endian length
// n, then n bytes: one message type byte followed by the message body. Hot
// messages (tasks, results, logs) have compact binary bodies built from
// unsigned LEB128 varints and length-prefixed byte strings; rare messages
// (hello) carry JSON so that any language can produce them with its standard
// library.
//
// Decoded byte slices alias the frame they came from; a frame is never reused
// by the Reader, so callers may keep them.
package wire
