package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/meadowrun-go/meadowrun/kubernetes"
)

// newK8sCmd is `meadowrun k8s`: managing what meadowrun leaves in a
// Kubernetes cluster.
func newK8sCmd(s *streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "k8s",
		Short: "Manage what meadowrun creates in a Kubernetes cluster",
	}
	var o kubernetes.Options
	clean := &cobra.Command{
		Use:   "clean [--kubeconfig FILE] [--context NAME] [--namespace NS]",
		Short: "Remove every Job and pod meadowrun created in a namespace",
		Long: `clean removes the Jobs and pods labelled meadowrun.dev/managed=true in the
namespace (the context's by default): idle reusable pods, and work still
running there, which fails.`,
		Example: `  meadowrun k8s clean --namespace batch`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Log = s.err
			res, err := kubernetes.Clean(cmd.Context(), o)
			if err != nil {
				return err
			}
			fmt.Fprintf(s.out, "namespace %s: removed %d Jobs and %d pods\n", res.Namespace, len(res.Jobs), len(res.Pods))
			return nil
		},
	}
	clean.Flags().StringVar(&o.KubeConfig, "kubeconfig", "", "kubeconfig file (default $KUBECONFIG, else ~/.kube/config)")
	clean.Flags().StringVar(&o.Context, "context", "", "kubeconfig context (default the current one)")
	clean.Flags().StringVar(&o.Namespace, "namespace", "", "namespace (default the context's, else default)")
	cmd.AddCommand(clean)
	return cmd
}
