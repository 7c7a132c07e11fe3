//go:build race

package ssh_test

// The race detector slows everything tenfold: the huge-map test runs
// fewer tasks under it.
const millionTasks = 100_000
