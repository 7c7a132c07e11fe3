//go:build race

package ec2_test

// The race detector slows everything tenfold: the huge-map test runs
// fewer tasks under it.
const millionTasks = 100_000
