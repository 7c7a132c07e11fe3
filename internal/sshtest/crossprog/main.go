// Command crossprog is a meadowrun program that the SSH tests build and
// run: it calls a function on one machine given on the command line, so
// that a machine of another architecture makes the SSH host cross-compile
// this program from its source.
//
//	crossprog USER@HOST:PORT KEY KNOWN_HOSTS
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/ssh"
)

var double = meadowrun.Register("crossprog.Double", func(ctx context.Context, x int) (int, error) { return 2 * x, nil })

func main() {
	meadowrun.Main()
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: crossprog USER@HOST:PORT KEY KNOWN_HOSTS")
		os.Exit(2)
	}
	h, err := ssh.NewHost([]string{os.Args[1]}, ssh.Options{IdentityFiles: []string{os.Args[2]},
		KnownHostsFiles: []string{os.Args[3]}, NoAgent: true, ConfigFile: "none", ConnectTimeout: 5 * time.Second})
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	v, err := meadowrun.RunFunction(context.Background(), double.With(21), h, nil)
	// Closing removes the cross-compiled program; os.Exit would skip a
	// deferred Close.
	h.Close()
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	fmt.Println(v)
}
