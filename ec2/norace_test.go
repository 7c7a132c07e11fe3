//go:build !race

package ec2_test

const millionTasks = 1_000_000
