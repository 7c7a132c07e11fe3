// Package shm is memory shared between a host and its worker processes on
// the same machine: a memfd that both map. Its one use today is the result
// log (docs/protocol.md, "Result log"), in which a worker keeps the results
// it holds so that they survive its sudden death without a write per task.
// The layout is wire's (wire.ParseResultLog); this package only creates,
// maps and writes it.
package shm
