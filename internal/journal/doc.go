// Package journal is the durable record of meadowrun jobs: one embedded
// bbolt database file per state directory, shared by every process of the
// user (submitters, supervisors, the CLI).
//
// The file is opened for each transaction and closed right after, so that
// no process holds it between transactions; concurrent processes queue on
// a file lock (readers share it) instead of failing. bbolt commits by
// copy-on-write and a final meta page write, so a process killed at any
// moment, even with SIGKILL in the middle of a commit, leaves the previous
// state intact. A new file is built under a temporary name and linked into
// place, so a kill during creation never leaves a half-initialised file.
//
// Layout: a top-level bucket "jobs" holds one bucket per job id, which
// holds "rec" (the job's Record as JSON), a bucket "args" (argument index →
// encoded argument, for jobs that a supervisor process runs) and a bucket
// "res" (completion sequence number → Result as JSON).
package journal
