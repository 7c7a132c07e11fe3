//go:build !race

package ssh_test

const millionTasks = 1_000_000
