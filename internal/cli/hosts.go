package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/meadowrun-go/meadowrun"
)

// newHostsCmd describes the machines of a host.
func newHostsCmd(s *streams) *cobra.Command {
	var w workFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "hosts [--host URL]...",
		Short: "Check that a host's machines can be used, and show what they offer",
		Long: `hosts connects to every machine of the host (starting meadowrun's agent on SSH
machines, as a first job would) and prints, for each, its platform, CPUs,
memory, GPUs, free disk, how memory limits are enforced there and the
version of its python3 (SSH machines), or why it cannot be used. It exits with 1 when some machine cannot be used.`,
		Example: `  meadowrun hosts
  meadowrun hosts --host ssh://me@gpu-box --host ssh://me@10.0.0.7:2222
  meadowrun hosts --host 'ssh://?hosts=machines.txt' --json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := w.check(cmd); err != nil {
				return err
			}
			ctx := cmd.Context()
			h, err := w.openHost(ctx)
			if err != nil {
				return err
			}
			defer h.Close()
			ms, err := meadowrun.DescribeHost(ctx, h)
			if err != nil {
				return err
			}
			bad := 0
			for _, m := range ms {
				if m.Err != nil {
					bad++
				}
			}
			if asJSON {
				type machineJSON struct {
					meadowrun.MachineInfo
					Err string `json:"error,omitempty"`
				}
				out := make([]machineJSON, len(ms))
				for i, m := range ms {
					out[i].MachineInfo = m
					if m.Err != nil {
						out[i].Err = m.Err.Error()
					}
				}
				enc := json.NewEncoder(s.out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(out); err != nil {
					return err
				}
			} else {
				printMachines(s, ms)
			}
			if bad > 0 {
				return &exitError{code: exitFailed, err: fmt.Errorf("%d of %d machines cannot be used", bad, len(ms))}
			}
			return nil
		},
	}
	def := os.Getenv("MEADOWRUN_HOST")
	if def == "" {
		def = "local"
	}
	cmd.Flags().StringArrayVar(&w.hosts, "host", []string{def}, "the host to check, as a URL (schemes: "+strings.Join(meadowrun.HostSchemes(), ", ")+"); repeat --host ssh://... for several machines")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print machine-readable JSON on stdout")
	return cmd
}

func printMachines(s *streams, ms []meadowrun.MachineInfo) {
	tw := tabwriter.NewWriter(s.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MACHINE\tPLATFORM\tCPUS\tMEMORY\tGPUS\tFREE DISK\tMEMORY LIMITS\tPYTHON\tCONTAINERS\tIN USE HERE")
	var problems []string
	for _, m := range ms {
		if m.Err != nil {
			fmt.Fprintf(tw, "%s\tcannot be used (below)\t\t\t\t\t\t\t\t\n", m.Name)
			problems = append(problems, m.Err.Error()) // errors name their machine
			continue
		}
		gpus := "-"
		if len(m.GPUs) > 0 {
			gpus = fmt.Sprintf("%d (%s)", len(m.GPUs), strings.Join(m.GPUs, "; "))
		}
		inUse := "-"
		if m.BookedCPU > 0 || m.BookedMemoryGB > 0 {
			inUse = fmt.Sprintf("%g CPUs, %s", m.BookedCPU, gb(m.BookedMemoryGB))
		}
		python := m.Python
		if python == "" {
			python = "-" // none, or not known (this machine)
		}
		ctrs := m.Containers
		if ctrs == "" {
			ctrs = "-" // no engine answers
		}
		fmt.Fprintf(tw, "%s\t%s\t%g\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, m.Platform, m.LogicalCPU, gb(m.MemoryGB), gpus,
			gb(m.FreeDiskGB), m.MemoryEnforcement, python, ctrs, inUse)
	}
	tw.Flush()
	for _, m := range ms {
		if m.Err == nil && len(m.Labels) > 0 {
			var kv []string
			for _, k := range slices.Sorted(maps.Keys(m.Labels)) {
				kv = append(kv, k+"="+m.Labels[k])
			}
			fmt.Fprintf(s.out, "%s labels: %s\n", m.Name, strings.Join(kv, ", "))
		}
	}
	for _, p := range problems {
		printError(s.err, errors.New(p))
	}
}
