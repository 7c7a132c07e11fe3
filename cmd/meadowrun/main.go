// Command meadowrun runs commands and maps of commands on this machine or
// remote workers, and lists, follows, attaches to and cancels the jobs it
// journals. See docs/cli.md.
package main

import (
	"context"
	"os"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/internal/cli"
	// Register the ec2://, inprocess://, ssh:// and k8s:// host schemes.
	_ "github.com/meadowrun-go/meadowrun/ec2"
	_ "github.com/meadowrun-go/meadowrun/inprocess"
	_ "github.com/meadowrun-go/meadowrun/kubernetes"
	_ "github.com/meadowrun-go/meadowrun/ssh"
)

func main() {
	// Workers and supervisors are this binary re-executed: Main serves
	// them and never returns there.
	meadowrun.Main()
	os.Exit(cli.Main(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
