package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/meadowrun-go/meadowrun/ec2"
)

// newEC2Cmd is `meadowrun ec2`: the reference's manage commands, for the
// resources EC2 hosts use in a region.
func newEC2Cmd(s *streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ec2",
		Short: "Install, inspect and remove what EC2 hosts use in an AWS region",
		Long: `The resources EC2 hosts use in a region: a key pair (its private key in the
Secrets Manager secret meadowrun_private_key), the security group
meadowrun_ssh_security_group, the IAM role meadowrun_ec2_role with its
policies and instance profile meadowrun_ec2_role_instance_profile, and the
DynamoDB allocation table. Credentials come from the environment
($AWS_ACCESS_KEY_ID, $AWS_SECRET_ACCESS_KEY, $AWS_SESSION_TOKEN,
$AWS_ENDPOINT_URL); the region from --region, else $AWS_REGION.`,
	}
	var o ec2.ManageOptions
	cmd.PersistentFlags().StringVar(&o.Region, "region", "", "AWS region (default $AWS_REGION)")
	cmd.PersistentFlags().StringVar(&o.TableName, "table", "", "allocation table (default meadowrun_ec2_alloc_table)")
	logTo := func() { o.Log = s.err }

	install := &cobra.Command{
		Use:   "install [--vpc-id VPC] [--allow-ssh-from CIDR]...",
		Short: "Create the key pair, security group, IAM role and allocation table (again: harmless)",
		Example: `  meadowrun ec2 install --region us-east-2 --allow-ssh-from 203.0.113.7/32
  meadowrun ec2 get-ssh-key`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			in, err := ec2.Install(cmd.Context(), o)
			if err != nil {
				return err
			}
			if len(in.Created) == 0 {
				fmt.Fprintf(s.out, "everything was installed in %s already\n", in.Region)
			}
			printInstalled(s, in)
			return nil
		},
	}
	install.Flags().StringVar(&o.VPC, "vpc-id", "", "VPC of the security group (default the region's default VPC)")
	install.Flags().StringSliceVar(&o.SSHFrom, "allow-ssh-from", nil, "address range (CIDR) allowed to reach port 22 of the instances (repeatable)")

	uninstall := &cobra.Command{
		Use:   "uninstall",
		Short: "Terminate meadowrun's instances and delete every resource install created",
		Long: `uninstall terminates the instances meadowrun launched (their work fails) and
waits for them, then deletes the jobs' port security groups, the security
group, the key pair and its secret, the allocation table, the instance
profile, the role and its policies, and this machine's catalog cache. IAM resources are global: other regions lose them too.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			logTo()
			rm, err := ec2.Uninstall(cmd.Context(), o)
			fmt.Fprintf(s.out, "terminated %d instances, removed %d resources\n", len(rm.Instances), len(rm.Resources))
			return err
		},
	}

	var co ec2.CleanOptions
	clean := &cobra.Command{
		Use:   "clean [--idle DURATION | --active] [--cache]",
		Short: "Terminate idle instances (or all, --active), close expired job ports",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			logTo()
			co.ManageOptions = o
			rm, err := ec2.Clean(cmd.Context(), co)
			fmt.Fprintf(s.out, "terminated %d instances", len(rm.Instances))
			if len(rm.Instances) > 0 {
				fmt.Fprintf(s.out, " (%s)", strings.Join(rm.Instances, ", "))
			}
			fmt.Fprintf(s.out, ", removed %d resources\n", len(rm.Resources))
			return err
		},
	}
	clean.Flags().DurationVar(&co.Idle, "idle", 5*time.Minute, "terminate instances with no worker for this long")
	clean.Flags().BoolVar(&co.Active, "active", false, "terminate every instance, busy or not (their work fails)")
	clean.Flags().BoolVar(&co.Cache, "cache", false, "also remove this machine's catalog cache (instance types and prices)")

	var ami string
	config := &cobra.Command{
		Use:   "config [--ami AMI]",
		Short: "Show the installed resources and the ec2:// URL that uses them",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			in, err := ec2.Config(cmd.Context(), o)
			if err != nil {
				return err
			}
			printInstalled(s, in)
			secrets, err := ec2.GrantedSecrets(cmd.Context(), o)
			if err != nil {
				return err
			}
			for _, a := range secrets {
				fmt.Fprintf(s.out, "instances may read secret %s\n", a)
			}
			fmt.Fprintf(s.out, "host URL: %s\n", in.URL(ami))
			return nil
		},
	}
	config.Flags().StringVar(&ami, "ami", "AMI", "image to put in the URL")

	grant := &cobra.Command{
		Use:     "grant-permission-to-secret SECRET",
		Short:   "Let the instances' role read a Secrets Manager secret",
		Example: `  meadowrun ec2 grant-permission-to-secret my_registry_login`,
		Args:    exactArgs(1, "the secret's name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			logTo()
			if err := ec2.GrantPermissionToSecret(cmd.Context(), o, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(s.out, "role %s may read secret %s\n", ec2.RoleName, args[0])
			return nil
		},
	}

	var output string
	getKey := &cobra.Command{
		Use:   "get-ssh-key [--output PATH]",
		Short: "Write the key pair's private key to a file (mode 600)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := ec2.GetSSHKey(cmd.Context(), o, output)
			if err != nil {
				return err
			}
			fmt.Fprintf(s.out, "wrote the private key of key pair %s to %s\n", ec2.KeyPairName, p)
			return nil
		},
	}
	getKey.Flags().StringVar(&output, "output", "", "file to write (default ~/.ssh/meadowrun_id_rsa.EC2)")

	cmd.AddCommand(install, uninstall, clean, config, grant, getKey)
	return cmd
}

func printInstalled(s *streams, in ec2.Installed) {
	for _, c := range in.Created {
		fmt.Fprintf(s.out, "created %s\n", c)
	}
	fmt.Fprintf(s.out, "region %s: security group %s (%s) in %s, key pair %s (private key in secret %s), instance profile %s (role %s), table %s\n",
		in.Region, ec2.SecurityGroupName, in.SecurityGroup, in.VPC, in.KeyPair, in.KeySecret, in.InstanceProfile, in.Role, in.Table)
}
