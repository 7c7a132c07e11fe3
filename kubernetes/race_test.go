//go:build race

package kubernetes_test

// The race detector slows everything tenfold, and every task crosses the
// API server twice: the huge-map test runs fewer tasks under it.
const millionTasks = 10_000
