// Package coord is the coordinator: it turns a job (encoded arguments, a
// function or command, resources) into tasks dispatched to workers, and
// returns one final Outcome per task. It keeps the task table, the lanes
// of memory retries, the crash blame from the protocol's Started frames,
// retries, cancellation, the pool of warm workers of a host (Pool, with
// the worker protocol stream and registry check of each connection) and
// the job's prefixed output (Logs).
//
// The package is the same for every host and knows nothing of the user's
// API: no generics, no options, no public error types. The root package
// validates a call, builds a Spec, starts it with Start and turns each
// Outcome (payload, or a Failure classified by Kind) into its typed
// result and *TaskError. coord depends only on package driver,
// internal/wire and the standard library; a test keeps it that way.
package coord
