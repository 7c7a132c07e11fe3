package cli

import (
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/meadowrun-go/meadowrun/internal/agent"
)

// newAgentCmd is the remote side of SSH hosts. Clients start it
// themselves (the program they upload, with MEADOWRUN_AGENT set); the
// command runs one in the foreground, for a person looking into a machine.
func newAgentCmd(s *streams) *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "agent [--dir DIR]",
		Short: "Serve as the agent of this machine for SSH hosts (started by clients on their own)",
		Long: `agent serves this machine to meadowrun clients that reach it over SSH: it
listens on a Unix socket in DIR (no network port), keeps the programs and
files clients upload there by content, reports the machine's CPUs, memory
and GPUs, and starts workers with their memory limits enforced. Clients
upload their own program and start it as the agent when none is running, so
this command is only needed to run one by hand; it exits after 30 idle
minutes, or on SIGTERM.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if dir == "" {
				base := os.Getenv("XDG_CACHE_HOME")
				if base == "" {
					home, err := os.UserHomeDir()
					if err != nil {
						return err
					}
					base = filepath.Join(home, ".cache")
				}
				dir = filepath.Join(base, "meadowrun")
			}
			if code := agent.Run(dir); code != 0 {
				return &exitError{code: exitInternal}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "the agent's directory (default ${XDG_CACHE_HOME:-~/.cache}/meadowrun)")
	return cmd
}
