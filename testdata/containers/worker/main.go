// Command worker is a static meadowrun program for the container tests:
// built with CGO_ENABLED=0, it runs as the worker in an image that holds
// nothing but one other program (FROM scratch).
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/meadowrun-go/meadowrun"
)

var _ = meadowrun.Register("double", func(ctx context.Context, x int) (int, error) {
	fmt.Println("doubling", x)
	return 2 * x, nil
})

// hostname shows where the function ran: a container's host name is its
// ID.
var _ = meadowrun.Register("hostname", func(ctx context.Context, _ int) (string, error) {
	return os.Hostname()
})

func main() {
	meadowrun.Main()
	fmt.Fprintln(os.Stderr, "this program serves meadowrun workers only")
	os.Exit(2)
}
