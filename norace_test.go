//go:build !race

package meadowrun_test

const millionTasks = 1_000_000
