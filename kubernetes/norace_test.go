//go:build !race

package kubernetes_test

const millionTasks = 100_000
