//go:build race

package main_test

// Under -race, the binary the tests run is built with the race detector
// too, so that the CLI and the library run checked in real processes.
func init() { buildFlags = append(buildFlags, "-race") }
