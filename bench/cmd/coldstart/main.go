// Command coldstart is meadowrun-go's P3 contestant: a fresh process that
// starts the local host, runs one function and exits. It prints READY on
// stdout as soon as the first result has arrived; the harness
// (bench/cmd/bench) times exec -> READY (cold_start_ms) and exec -> exit
// (cold_exit_ms).
package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/meadowrun-go/meadowrun"
)

var inc = meadowrun.Register("coldstart.Inc", func(ctx context.Context, x int) (int, error) {
	return x + 1, nil
})

func main() {
	meadowrun.Main()
	v, err := meadowrun.RunFunction(context.Background(), inc.With(1), meadowrun.Local(), &meadowrun.Options{Output: io.Discard})
	if err != nil || v != 2 {
		fmt.Fprintf(os.Stderr, "coldstart: got %d, %v\n", v, err)
		os.Exit(1)
	}
	os.Stdout.WriteString("READY\n")
}
