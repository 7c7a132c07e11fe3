// Package durable is meadowrun's durable-job layer: jobs that outlive the
// process that submitted them, journaled (internal/journal) and run by
// supervisor processes, on this machine or on the machines of a host that
// keeps jobs (a driver.JobKeeper).
//
// It holds the journal-backed keeper of this machine (Keeper: journaling a
// job and its arguments, starting its supervisor, cancel, lost jobs), the
// one handle of a job whatever its keeper (Job: following results and
// logs, inspecting, cancelling; a job of a host's machines keeps a copy of
// its record in this side's journal, a map over several machines is split
// into parts, see planParts), and the recorder that journals a running
// job's outcomes.
//
// It sits below the user's API (package meadowrun) and above the journal,
// the coordinator and the drivers. Running a job's spec needs the API's
// machinery (options, hosts, the coordinator); the API provides it:
// Jobs.OpenKeeper reopens a host from its URL, and the supervisor
// process's runner is the API's. The package never imports the root
// package nor a transport: it reaches other machines only through
// driver.JobKeeper (a test checks).
package durable
