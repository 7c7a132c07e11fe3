package ec2

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	awsec2 "github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	iamtypes "github.com/aws/aws-sdk-go-v2/service/iam/types"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	smtypes "github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"
	"github.com/aws/smithy-go"

	"github.com/meadowrun-go/meadowrun/internal/ec2alloc"
	"github.com/meadowrun-go/meadowrun/internal/ec2host"
)

// The resources `meadowrun ec2 install` creates (the reference's names).
const (
	// KeyPairName is the EC2 key pair instances are launched with.
	KeyPairName = "meadowrun_key_pair"
	// KeySecretName is the Secrets Manager secret that holds the key
	// pair's private key.
	KeySecretName = "meadowrun_private_key"
	// SecurityGroupName is the security group of the instances, in the
	// default VPC or the one given to install.
	SecurityGroupName = "meadowrun_ssh_security_group"
	// RoleName is the IAM role instances run under, InstanceProfileName
	// its instance profile (AllocEC2Instance.InstanceProfile).
	RoleName            = "meadowrun_ec2_role"
	InstanceProfileName = "meadowrun_ec2_role_instance_profile"
	// PolicyName is the role's inline policy: the allocation table, and
	// describing and terminating instances; SecretsPolicyName the one
	// grant-permission-to-secret extends.
	PolicyName        = "meadowrun_ec2_policy"
	SecretsPolicyName = "meadowrun_ec2_secrets_policy"
)

// ManageOptions say where the manage functions (Install, Uninstall,
// Config, Clean, GrantPermissionToSecret, GetSSHKey) act: a region, with
// credentials, and the allocation table's name.
type ManageOptions struct {
	// Region is the AWS region; "" means $AWS_REGION, else
	// $AWS_DEFAULT_REGION.
	Region string
	// AWSConfig, when not nil, is the AWS configuration; nil means the
	// environment's (as AllocEC2Instance.AWSConfig).
	AWSConfig *aws.Config
	// TableName is the allocation table; "" means
	// "meadowrun_ec2_alloc_table".
	TableName string
	// VPC is the VPC of the security group install creates; "" means
	// the region's default VPC.
	VPC string
	// SSHFrom are the address ranges (CIDR, such as 203.0.113.7/32)
	// install lets reach port 22 of the instances; none adds no rule
	// (add one, or use a security group of your own).
	SSHFrom []string
	// Log receives a line per resource created or removed; nil means
	// none.
	Log io.Writer
}

// Installed describes what Install made, or Config found.
type Installed struct {
	Region          string
	VPC             string
	SecurityGroup   string // its id
	KeyPair         string
	KeySecret       string
	Role            string
	InstanceProfile string
	Table           string
	// Created are the resources this call created ("key pair
	// meadowrun_key_pair", ...); empty when all were there.
	Created []string
}

// URL returns the ec2:// URL of hosts using the installed resources,
// with ami= to fill in.
func (in Installed) URL(ami string) string {
	q := url.Values{}
	q.Set("ami", ami)
	q.Set("sg", in.SecurityGroup)
	q.Set("profile", in.InstanceProfile)
	q.Set("key_name", in.KeyPair)
	q.Set("key_secret", in.KeySecret)
	if in.Table != ec2alloc.DefaultTableName {
		q.Set("table", in.Table)
	}
	return "ec2://" + in.Region + "?" + q.Encode()
}

type clients struct {
	region string
	ec2    *awsec2.Client
	iam    *iam.Client
	sm     *secretsmanager.Client
	db     *dynamodb.Client
	table  string
	log    io.Writer
}

func newClients(o ManageOptions) (*clients, error) {
	cfg, err := awsConfig(AllocEC2Instance{Region: o.Region, AWSConfig: o.AWSConfig})
	if err != nil {
		return nil, err
	}
	if cfg.Region == "" {
		return nil, errors.New("ec2: no region: give --region (Region), or set $AWS_REGION")
	}
	t := o.TableName
	if t == "" {
		t = ec2alloc.DefaultTableName
	}
	lg := o.Log
	if lg == nil {
		lg = io.Discard
	}
	return &clients{region: cfg.Region, ec2: awsec2.NewFromConfig(cfg), iam: iam.NewFromConfig(cfg), sm: secretsmanager.NewFromConfig(cfg),
		db: dynamodb.NewFromConfig(cfg), table: t, log: lg}, nil
}

func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// Install creates, in o's region, what hosts need and the reference's
// install step makes: the key pair (its private key kept in a Secrets
// Manager secret), the security group, the IAM role, its policy and
// instance profile, and the allocation table. Resources that exist are
// kept, so that running it again is harmless; a key pair without its
// secret (or the reverse) is made again, both.
func Install(ctx context.Context, o ManageOptions) (Installed, error) {
	c, err := newClients(o)
	if err != nil {
		return Installed{}, fmt.Errorf("meadowrun: %w", err)
	}
	in, err := c.install(ctx, o)
	if err != nil {
		return in, fmt.Errorf("meadowrun: ec2 install: %w", err)
	}
	return in, nil
}

func (c *clients) created(in *Installed, what string) {
	in.Created = append(in.Created, what)
	fmt.Fprintf(c.log, "meadowrun: ec2: created %s\n", what)
}

func (c *clients) install(ctx context.Context, o ManageOptions) (Installed, error) {
	in := Installed{Region: c.region, KeyPair: KeyPairName, KeySecret: KeySecretName, Role: RoleName, InstanceProfile: InstanceProfileName, Table: c.table}
	// The table.
	t := ec2alloc.NewTable(c.db, c.table)
	if _, err := c.db.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(c.table)}); err != nil {
		var nf *ddbtypes.ResourceNotFoundException
		if !errors.As(err, &nf) {
			return in, fmt.Errorf("reading table %s: %w", c.table, err)
		}
		if err := t.Create(ctx); err != nil {
			return in, err
		}
		c.created(&in, "DynamoDB table "+c.table)
	}
	// The key pair and its secret.
	if err := c.installKey(ctx, &in); err != nil {
		return in, err
	}
	// The security group.
	vpc := o.VPC
	if vpc == "" {
		out, err := c.ec2.DescribeVpcs(ctx, &awsec2.DescribeVpcsInput{Filters: []ec2types.Filter{{Name: aws.String("is-default"), Values: []string{"true"}}}})
		if err != nil {
			return in, fmt.Errorf("finding the default VPC: %w", err)
		}
		if len(out.Vpcs) == 0 {
			return in, fmt.Errorf("region %s has no default VPC: give the VPC of the instances (--vpc-id)", c.region)
		}
		vpc = aws.ToString(out.Vpcs[0].VpcId)
	}
	in.VPC = vpc
	sg, err := c.findGroup(ctx, vpc)
	if err != nil {
		return in, err
	}
	if sg == "" {
		out, err := c.ec2.CreateSecurityGroup(ctx, &awsec2.CreateSecurityGroupInput{GroupName: aws.String(SecurityGroupName), VpcId: aws.String(vpc),
			Description: aws.String("meadowrun instances: SSH from the clients"),
			TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeSecurityGroup,
				Tags: []ec2types.Tag{{Key: aws.String(ec2host.TagManaged), Value: aws.String("true")}}}}})
		if err != nil {
			return in, fmt.Errorf("creating security group %s in %s: %w", SecurityGroupName, vpc, err)
		}
		sg = aws.ToString(out.GroupId)
		c.created(&in, "security group "+SecurityGroupName+" ("+sg+")")
	}
	in.SecurityGroup = sg
	for _, cidr := range o.SSHFrom {
		_, err := c.ec2.AuthorizeSecurityGroupIngress(ctx, &awsec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(sg),
			IpPermissions: []ec2types.IpPermission{{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(22), ToPort: aws.Int32(22),
				IpRanges: []ec2types.IpRange{{CidrIp: aws.String(cidr), Description: aws.String("meadowrun ssh")}}}}})
		switch {
		case apiCode(err) == "InvalidPermission.Duplicate":
		case err != nil:
			return in, fmt.Errorf("letting %s reach port 22 of %s: %w", cidr, sg, err)
		default:
			c.created(&in, "rule: port 22 from "+cidr+" in "+sg)
		}
	}
	// The role, its policy and instance profile.
	if err := c.installRole(ctx, &in); err != nil {
		return in, err
	}
	return in, nil
}

func (c *clients) findGroup(ctx context.Context, vpc string) (string, error) {
	f := []ec2types.Filter{{Name: aws.String("group-name"), Values: []string{SecurityGroupName}}}
	if vpc != "" {
		f = append(f, ec2types.Filter{Name: aws.String("vpc-id"), Values: []string{vpc}})
	}
	out, err := c.ec2.DescribeSecurityGroups(ctx, &awsec2.DescribeSecurityGroupsInput{Filters: f})
	if err != nil {
		return "", fmt.Errorf("looking for security group %s: %w", SecurityGroupName, err)
	}
	if len(out.SecurityGroups) == 0 {
		return "", nil
	}
	return aws.ToString(out.SecurityGroups[0].GroupId), nil
}

func (c *clients) installKey(ctx context.Context, in *Installed) error {
	kp, err := c.ec2.DescribeKeyPairs(ctx, &awsec2.DescribeKeyPairsInput{KeyNames: []string{KeyPairName}})
	haveKey := err == nil && len(kp.KeyPairs) > 0
	if err != nil && apiCode(err) != "InvalidKeyPair.NotFound" {
		return fmt.Errorf("looking for key pair %s: %w", KeyPairName, err)
	}
	haveSecret := false
	restore := false
	if d, err := c.sm.DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: aws.String(KeySecretName)}); err == nil {
		haveSecret = d.DeletedDate == nil
		restore = d.DeletedDate != nil
	} else if var404(err) {
		// none
	} else {
		return fmt.Errorf("looking for secret %s: %w", KeySecretName, err)
	}
	if haveKey && haveSecret {
		return nil
	}
	if haveKey {
		if _, err := c.ec2.DeleteKeyPair(ctx, &awsec2.DeleteKeyPairInput{KeyName: aws.String(KeyPairName)}); err != nil {
			return fmt.Errorf("replacing key pair %s, whose private key is lost: %w", KeyPairName, err)
		}
	}
	out, err := c.ec2.CreateKeyPair(ctx, &awsec2.CreateKeyPairInput{KeyName: aws.String(KeyPairName), KeyType: ec2types.KeyTypeRsa,
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeKeyPair,
			Tags: []ec2types.Tag{{Key: aws.String(ec2host.TagManaged), Value: aws.String("true")}}}}})
	if err != nil {
		return fmt.Errorf("creating key pair %s: %w", KeyPairName, err)
	}
	c.created(in, "key pair "+KeyPairName)
	material := aws.ToString(out.KeyMaterial)
	if restore {
		if _, err := c.sm.RestoreSecret(ctx, &secretsmanager.RestoreSecretInput{SecretId: aws.String(KeySecretName)}); err != nil {
			return fmt.Errorf("restoring secret %s, scheduled for deletion: %w", KeySecretName, err)
		}
	}
	if restore || haveSecret {
		if _, err := c.sm.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{SecretId: aws.String(KeySecretName), SecretString: aws.String(material)}); err != nil {
			return fmt.Errorf("storing the private key in secret %s: %w", KeySecretName, err)
		}
		c.created(in, "secret "+KeySecretName+" (new value)")
		return nil
	}
	if _, err := c.sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String(KeySecretName), SecretString: aws.String(material),
		Description: aws.String("the private key of EC2 key pair " + KeyPairName + " (meadowrun)"),
		Tags:        []smtypes.Tag{{Key: aws.String(ec2host.TagManaged), Value: aws.String("true")}}}); err != nil {
		return fmt.Errorf("storing the private key in secret %s: %w", KeySecretName, err)
	}
	c.created(in, "secret "+KeySecretName)
	return nil
}

func var404(err error) bool {
	var nf *smtypes.ResourceNotFoundException
	return errors.As(err, &nf)
}

func policyDoc(statements ...map[string]any) string {
	b, _ := json.Marshal(map[string]any{"Version": "2012-10-17", "Statement": statements})
	return string(b)
}

func (c *clients) installRole(ctx context.Context, in *Installed) error {
	trust := policyDoc(map[string]any{"Effect": "Allow", "Principal": map[string]any{"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"})
	if _, err := c.iam.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String(RoleName)}); err != nil {
		var nf *iamtypes.NoSuchEntityException
		if !errors.As(err, &nf) {
			return fmt.Errorf("looking for IAM role %s: %w", RoleName, err)
		}
		if _, err := c.iam.CreateRole(ctx, &iam.CreateRoleInput{RoleName: aws.String(RoleName), AssumeRolePolicyDocument: aws.String(trust),
			Description: aws.String("meadowrun instances"), Tags: []iamtypes.Tag{{Key: aws.String(ec2host.TagManaged), Value: aws.String("true")}}}); err != nil {
			return fmt.Errorf("creating IAM role %s: %w", RoleName, err)
		}
		c.created(in, "IAM role "+RoleName)
	}
	table := "*"
	if d, err := c.db.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(c.table)}); err == nil && d.Table.TableArn != nil {
		table = aws.ToString(d.Table.TableArn)
	}
	pol := policyDoc(
		map[string]any{"Effect": "Allow", "Action": []string{"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:Scan"}, "Resource": table},
		map[string]any{"Effect": "Allow", "Action": []string{"ec2:DescribeInstances", "ec2:DescribeTags"}, "Resource": "*"},
		map[string]any{"Effect": "Allow", "Action": "ec2:TerminateInstances", "Resource": "*",
			"Condition": map[string]any{"StringEquals": map[string]any{"ec2:ResourceTag/" + ec2host.TagManaged: "true"}}})
	cur, err := c.iam.GetRolePolicy(ctx, &iam.GetRolePolicyInput{RoleName: aws.String(RoleName), PolicyName: aws.String(PolicyName)})
	if err != nil || !samePolicy(aws.ToString(cur.PolicyDocument), pol) {
		if _, err := c.iam.PutRolePolicy(ctx, &iam.PutRolePolicyInput{RoleName: aws.String(RoleName), PolicyName: aws.String(PolicyName), PolicyDocument: aws.String(pol)}); err != nil {
			return fmt.Errorf("setting the policy %s of IAM role %s: %w", PolicyName, RoleName, err)
		}
		c.created(in, "IAM policy "+PolicyName+" of role "+RoleName)
	}
	ip, err := c.iam.GetInstanceProfile(ctx, &iam.GetInstanceProfileInput{InstanceProfileName: aws.String(InstanceProfileName)})
	if err != nil {
		var nf *iamtypes.NoSuchEntityException
		if !errors.As(err, &nf) {
			return fmt.Errorf("looking for instance profile %s: %w", InstanceProfileName, err)
		}
		if _, err := c.iam.CreateInstanceProfile(ctx, &iam.CreateInstanceProfileInput{InstanceProfileName: aws.String(InstanceProfileName)}); err != nil {
			return fmt.Errorf("creating instance profile %s: %w", InstanceProfileName, err)
		}
		c.created(in, "IAM instance profile "+InstanceProfileName)
	}
	hasRole := false
	if err == nil {
		for _, r := range ip.InstanceProfile.Roles {
			hasRole = hasRole || aws.ToString(r.RoleName) == RoleName
		}
	}
	if !hasRole {
		if _, err := c.iam.AddRoleToInstanceProfile(ctx, &iam.AddRoleToInstanceProfileInput{InstanceProfileName: aws.String(InstanceProfileName), RoleName: aws.String(RoleName)}); err != nil {
			return fmt.Errorf("adding role %s to instance profile %s: %w", RoleName, InstanceProfileName, err)
		}
	}
	return nil
}

// samePolicy compares two policy documents, one perhaps URL-encoded (as
// IAM returns them).
func samePolicy(a, b string) bool {
	if u, err := url.QueryUnescape(a); err == nil {
		a = u
	}
	var x, y any
	if json.Unmarshal([]byte(a), &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return string(xa) == string(ya)
}

// Config finds the resources Install made in o's region; it fails,
// saying to run install, when one is missing.
func Config(ctx context.Context, o ManageOptions) (Installed, error) {
	c, err := newClients(o)
	if err != nil {
		return Installed{}, fmt.Errorf("meadowrun: %w", err)
	}
	in := Installed{Region: c.region, KeyPair: KeyPairName, KeySecret: KeySecretName, Role: RoleName, InstanceProfile: InstanceProfileName, Table: c.table}
	var missing []string
	if in.SecurityGroup, err = c.findGroup(ctx, o.VPC); err != nil {
		return in, fmt.Errorf("meadowrun: ec2 config: %w", err)
	}
	if in.SecurityGroup == "" {
		missing = append(missing, "security group "+SecurityGroupName)
	} else if out, err := c.ec2.DescribeSecurityGroups(ctx, &awsec2.DescribeSecurityGroupsInput{GroupIds: []string{in.SecurityGroup}}); err == nil && len(out.SecurityGroups) > 0 {
		in.VPC = aws.ToString(out.SecurityGroups[0].VpcId)
	}
	if _, err := c.ec2.DescribeKeyPairs(ctx, &awsec2.DescribeKeyPairsInput{KeyNames: []string{KeyPairName}}); err != nil {
		missing = append(missing, "key pair "+KeyPairName)
	}
	if d, err := c.sm.DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: aws.String(KeySecretName)}); err != nil || d.DeletedDate != nil {
		missing = append(missing, "secret "+KeySecretName)
	}
	if _, err := c.iam.GetInstanceProfile(ctx, &iam.GetInstanceProfileInput{InstanceProfileName: aws.String(InstanceProfileName)}); err != nil {
		missing = append(missing, "instance profile "+InstanceProfileName)
	}
	if _, err := c.db.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(c.table)}); err != nil {
		missing = append(missing, "table "+c.table)
	}
	if len(missing) > 0 {
		return in, fmt.Errorf("meadowrun: ec2 config: %w in %s: no %s: run `meadowrun ec2 install --region %s`", ErrNotInstalled, c.region, strings.Join(missing, ", no "), c.region)
	}
	return in, nil
}

// ErrNotInstalled is wrapped when a resource of Install is missing.
var ErrNotInstalled = errors.New("meadowrun is not installed")

// Removed lists what Uninstall or Clean removed.
type Removed struct {
	Instances []string // terminated
	Resources []string // "key pair meadowrun_key_pair", ...
}

// Uninstall removes from o's region everything Install made and what
// hosts left: it terminates the instances meadowrun launched (tagged
// meadowrun:managed) and waits for them to end, then deletes the port
// security groups, the security group, the key pair and its secret, the
// allocation table, the instance profile and the role with its
// policies, and this machine's catalog cache. What is already
// gone is skipped, so that running it again is harmless. IAM resources
// are global: uninstalling in one region removes them for the others.
func Uninstall(ctx context.Context, o ManageOptions) (Removed, error) {
	c, err := newClients(o)
	if err != nil {
		return Removed{}, fmt.Errorf("meadowrun: %w", err)
	}
	rm, err := c.uninstall(ctx, o)
	if err != nil {
		return rm, fmt.Errorf("meadowrun: ec2 uninstall: %w", err)
	}
	return rm, nil
}

func (c *clients) removed(rm *Removed, what string) {
	rm.Resources = append(rm.Resources, what)
	fmt.Fprintf(c.log, "meadowrun: ec2: removed %s\n", what)
}

// managedInstances returns the instances tagged meadowrun:managed that
// have not ended.
func (c *clients) managedInstances(ctx context.Context) ([]string, error) {
	var ids []string
	p := awsec2.NewDescribeInstancesPaginator(c.ec2, &awsec2.DescribeInstancesInput{Filters: []ec2types.Filter{
		{Name: aws.String("tag-key"), Values: []string{ec2host.TagManaged}},
		{Name: aws.String("instance-state-name"), Values: []string{"pending", "running", "stopping", "stopped", "shutting-down"}}}})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("listing meadowrun's instances: %w", err)
		}
		for _, r := range out.Reservations {
			for _, i := range r.Instances {
				ids = append(ids, aws.ToString(i.InstanceId))
			}
		}
	}
	return ids, nil
}

// terminate terminates ids and waits, up to two minutes, until none
// runs.
func (c *clients) terminate(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	if _, err := c.ec2.TerminateInstances(ctx, &awsec2.TerminateInstancesInput{InstanceIds: ids}); err != nil {
		return fmt.Errorf("terminating %s: %w", strings.Join(ids, ", "), err)
	}
	for _, id := range ids {
		fmt.Fprintf(c.log, "meadowrun: ec2: terminating %s\n", id)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		out, err := c.ec2.DescribeInstances(ctx, &awsec2.DescribeInstancesInput{InstanceIds: ids})
		if err != nil {
			return fmt.Errorf("waiting for %s to end: %w", strings.Join(ids, ", "), err)
		}
		left := 0
		for _, r := range out.Reservations {
			for _, i := range r.Instances {
				if i.State != nil && i.State.Name != ec2types.InstanceStateNameTerminated {
					left++
				}
			}
		}
		if left == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of the instances %s have not ended after 2 minutes: run uninstall again", left, strings.Join(ids, ", "))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func (c *clients) uninstall(ctx context.Context, o ManageOptions) (Removed, error) {
	var rm Removed
	ids, err := c.managedInstances(ctx)
	if err != nil {
		return rm, err
	}
	if err := c.terminate(ctx, ids); err != nil {
		return rm, err
	}
	rm.Instances = ids
	var errs []error
	// Port groups, then the SSH group (in any VPC).
	groups, err := c.portGroups(ctx)
	if err != nil {
		errs = append(errs, err)
	}
	for _, g := range groups {
		if err := c.deleteGroup(ctx, g.id); err != nil {
			errs = append(errs, err)
		} else {
			c.removed(&rm, "security group "+g.name+" ("+g.id+")")
		}
	}
	out, err := c.ec2.DescribeSecurityGroups(ctx, &awsec2.DescribeSecurityGroupsInput{Filters: []ec2types.Filter{{Name: aws.String("group-name"), Values: []string{SecurityGroupName}}}})
	if err != nil {
		errs = append(errs, fmt.Errorf("looking for security group %s: %w", SecurityGroupName, err))
	} else {
		for _, g := range out.SecurityGroups {
			if err := c.deleteGroup(ctx, aws.ToString(g.GroupId)); err != nil {
				errs = append(errs, err)
			} else {
				c.removed(&rm, "security group "+SecurityGroupName+" ("+aws.ToString(g.GroupId)+")")
			}
		}
	}
	// The key pair and its secret.
	if kp, err := c.ec2.DescribeKeyPairs(ctx, &awsec2.DescribeKeyPairsInput{KeyNames: []string{KeyPairName}}); err == nil && len(kp.KeyPairs) > 0 {
		if _, err := c.ec2.DeleteKeyPair(ctx, &awsec2.DeleteKeyPairInput{KeyName: aws.String(KeyPairName)}); err != nil {
			errs = append(errs, fmt.Errorf("deleting key pair %s: %w", KeyPairName, err))
		} else {
			c.removed(&rm, "key pair "+KeyPairName)
		}
	}
	if _, err := c.sm.DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: aws.String(KeySecretName)}); err == nil {
		if _, err := c.sm.DeleteSecret(ctx, &secretsmanager.DeleteSecretInput{SecretId: aws.String(KeySecretName), ForceDeleteWithoutRecovery: aws.Bool(true)}); err != nil {
			errs = append(errs, fmt.Errorf("deleting secret %s: %w", KeySecretName, err))
		} else {
			c.removed(&rm, "secret "+KeySecretName)
		}
	}
	// The table.
	if _, err := c.db.DeleteTable(ctx, &dynamodb.DeleteTableInput{TableName: aws.String(c.table)}); err == nil {
		c.removed(&rm, "DynamoDB table "+c.table)
	} else if !isTableMissing(err) {
		errs = append(errs, fmt.Errorf("deleting table %s: %w", c.table, err))
	}
	// IAM.
	if err := c.uninstallRole(ctx, &rm); err != nil {
		errs = append(errs, err)
	}
	// This machine's catalog cache (named by a hash of region and
	// endpoints: every region's goes; it is only a cache), and what it
	// keeps for new clients on warm instances (warm-*.json), whose
	// resources are gone.
	if d := cacheDir(""); d != "" {
		matches, _ := filepath.Glob(filepath.Join(d, "catalog-*.json"))
		warm, _ := filepath.Glob(filepath.Join(d, "warm-*.json"))
		for _, m := range append(matches, warm...) {
			os.Remove(m)
		}
	}
	return rm, errors.Join(errs...)
}

func (c *clients) uninstallRole(ctx context.Context, rm *Removed) error {
	var nf *iamtypes.NoSuchEntityException
	if _, err := c.iam.RemoveRoleFromInstanceProfile(ctx, &iam.RemoveRoleFromInstanceProfileInput{InstanceProfileName: aws.String(InstanceProfileName),
		RoleName: aws.String(RoleName)}); err != nil && !errors.As(err, &nf) {
		return fmt.Errorf("removing role %s from instance profile %s: %w", RoleName, InstanceProfileName, err)
	}
	if _, err := c.iam.DeleteInstanceProfile(ctx, &iam.DeleteInstanceProfileInput{InstanceProfileName: aws.String(InstanceProfileName)}); err == nil {
		c.removed(rm, "IAM instance profile "+InstanceProfileName)
	} else if !errors.As(err, &nf) {
		return fmt.Errorf("deleting instance profile %s: %w", InstanceProfileName, err)
	}
	pols, err := c.iam.ListRolePolicies(ctx, &iam.ListRolePoliciesInput{RoleName: aws.String(RoleName)})
	if errors.As(err, &nf) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listing the policies of IAM role %s: %w", RoleName, err)
	}
	for _, p := range pols.PolicyNames {
		if _, err := c.iam.DeleteRolePolicy(ctx, &iam.DeleteRolePolicyInput{RoleName: aws.String(RoleName), PolicyName: aws.String(p)}); err != nil && !errors.As(err, &nf) {
			return fmt.Errorf("deleting policy %s of IAM role %s: %w", p, RoleName, err)
		}
		c.removed(rm, "IAM policy "+p+" of role "+RoleName)
	}
	if _, err := c.iam.DeleteRole(ctx, &iam.DeleteRoleInput{RoleName: aws.String(RoleName)}); err == nil {
		c.removed(rm, "IAM role "+RoleName)
	} else if !errors.As(err, &nf) {
		return fmt.Errorf("deleting IAM role %s (it may be in use by instances of another region, or have policies attached by hand): %w", RoleName, err)
	}
	return nil
}

// deleteGroup deletes a security group, retrying for a minute while
// instances that are ending still hold it.
func (c *clients) deleteGroup(ctx context.Context, id string) error {
	deadline := time.Now().Add(time.Minute)
	for {
		_, err := c.ec2.DeleteSecurityGroup(ctx, &awsec2.DeleteSecurityGroupInput{GroupId: aws.String(id)})
		switch code := apiCode(err); {
		case err == nil || code == "InvalidGroup.NotFound":
			return nil
		case code != "DependencyViolation" || time.Now().After(deadline):
			return fmt.Errorf("deleting security group %s: %w", id, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

// GrantPermissionToSecret lets the instances' role (RoleName) read the
// Secrets Manager secret name, for jobs that read it on the instance.
// The secret must exist; granting it again is harmless.
func GrantPermissionToSecret(ctx context.Context, o ManageOptions, name string) error {
	c, err := newClients(o)
	if err != nil {
		return fmt.Errorf("meadowrun: %w", err)
	}
	d, err := c.sm.DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: aws.String(name)})
	if err != nil {
		if var404(err) {
			return fmt.Errorf("meadowrun: ec2 grant-permission-to-secret: %w: %q in %s: create it first (aws secretsmanager create-secret --name %s ...)", ErrSecretNotFound, name, c.region, name)
		}
		return fmt.Errorf("meadowrun: ec2 grant-permission-to-secret: reading secret %q: %w", name, err)
	}
	arn := aws.ToString(d.ARN)
	if _, err := c.iam.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String(RoleName)}); err != nil {
		return fmt.Errorf("meadowrun: ec2 grant-permission-to-secret: %w: no IAM role %s: run `meadowrun ec2 install` first", ErrNotInstalled, RoleName)
	}
	var arns []string
	if cur, err := c.iam.GetRolePolicy(ctx, &iam.GetRolePolicyInput{RoleName: aws.String(RoleName), PolicyName: aws.String(SecretsPolicyName)}); err == nil {
		arns = secretARNs(aws.ToString(cur.PolicyDocument))
	}
	if slices.Contains(arns, arn) {
		return nil
	}
	arns = append(arns, arn)
	sort.Strings(arns)
	pol := policyDoc(map[string]any{"Effect": "Allow", "Action": []string{"secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"}, "Resource": arns})
	if _, err := c.iam.PutRolePolicy(ctx, &iam.PutRolePolicyInput{RoleName: aws.String(RoleName), PolicyName: aws.String(SecretsPolicyName), PolicyDocument: aws.String(pol)}); err != nil {
		return fmt.Errorf("meadowrun: ec2 grant-permission-to-secret: setting policy %s of role %s: %w", SecretsPolicyName, RoleName, err)
	}
	fmt.Fprintf(c.log, "meadowrun: ec2: role %s may read secret %s\n", RoleName, arn)
	return nil
}

// secretARNs reads the resources of the secrets policy.
func secretARNs(doc string) []string {
	if u, err := url.QueryUnescape(doc); err == nil {
		doc = u
	}
	var p struct {
		Statement []struct {
			Resource any
		}
	}
	if json.Unmarshal([]byte(doc), &p) != nil {
		return nil
	}
	var out []string
	for _, s := range p.Statement {
		switch r := s.Resource.(type) {
		case string:
			out = append(out, r)
		case []any:
			for _, x := range r {
				if s, ok := x.(string); ok {
					out = append(out, s)
				}
			}
		}
	}
	return out
}

// GrantedSecrets returns the ARNs of the secrets the instances' role may
// read (those given to GrantPermissionToSecret).
func GrantedSecrets(ctx context.Context, o ManageOptions) ([]string, error) {
	c, err := newClients(o)
	if err != nil {
		return nil, fmt.Errorf("meadowrun: %w", err)
	}
	cur, err := c.iam.GetRolePolicy(ctx, &iam.GetRolePolicyInput{RoleName: aws.String(RoleName), PolicyName: aws.String(SecretsPolicyName)})
	var nf *iamtypes.NoSuchEntityException
	if errors.As(err, &nf) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("meadowrun: reading policy %s of role %s: %w", SecretsPolicyName, RoleName, err)
	}
	return secretARNs(aws.ToString(cur.PolicyDocument)), nil
}

// DefaultSSHKeyPath is where GetSSHKey writes by default:
// ~/.ssh/meadowrun_id_rsa.EC2, the reference's.
func DefaultSSHKeyPath() string {
	home, err := os.UserHomeDir()
	if err != nil {
		return "meadowrun_id_rsa.EC2"
	}
	return filepath.Join(home, ".ssh", "meadowrun_id_rsa.EC2")
}

// GetSSHKey writes the private key of the key pair Install made (read
// from its secret) to path ("" means DefaultSSHKeyPath()), readable by
// its owner only, and returns the path. It logs in to the instances as
// their user (ubuntu on Ubuntu's images).
func GetSSHKey(ctx context.Context, o ManageOptions, path string) (string, error) {
	c, err := newClients(o)
	if err != nil {
		return "", fmt.Errorf("meadowrun: %w", err)
	}
	if path == "" {
		path = DefaultSSHKeyPath()
	}
	v, err := getSecret(ctx, c.sm, KeySecretName)
	if errors.Is(err, ErrSecretNotFound) {
		return "", fmt.Errorf("meadowrun: ec2 get-ssh-key: %w: run `meadowrun ec2 install --region %s` first", err, c.region)
	}
	if err != nil {
		return "", fmt.Errorf("meadowrun: ec2 get-ssh-key: %w", err)
	}
	if err := writePrivate(path, []byte(v)); err != nil {
		return "", fmt.Errorf("meadowrun: ec2 get-ssh-key: %w", err)
	}
	return path, nil
}

// writePrivate writes b to path, mode 0600, through a temporary file.
func writePrivate(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".meadowrun-key-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// CleanOptions configure Clean.
type CleanOptions struct {
	ManageOptions
	// Idle is how long an instance must have had no worker to be
	// terminated; 0 means 5 minutes.
	Idle time.Duration
	// Active terminates every instance of the table and every instance
	// meadowrun launched, busy or not: their work fails.
	Active bool
	// Cache removes the local catalog cache (instance types and prices).
	Cache bool
}

// Clean terminates the idle instances of the allocation table (all of
// meadowrun's instances with Active), deletes the port security groups
// whose expiry has passed, and with Cache removes the local catalog
// cache.
func Clean(ctx context.Context, o CleanOptions) (Removed, error) {
	c, err := newClients(o.ManageOptions)
	if err != nil {
		return Removed{}, fmt.Errorf("meadowrun: %w", err)
	}
	var rm Removed
	var errs []error
	t := ec2alloc.NewTable(c.db, c.table)
	if o.Active {
		recs, err := t.List(ctx)
		if err != nil && !isTableMissing(err) {
			return rm, fmt.Errorf("meadowrun: ec2 clean: %w", err)
		}
		for _, r := range recs {
			if err := t.Deregister(ctx, r.InstanceID); err != nil && !errors.Is(err, ec2alloc.ErrNotRegistered) {
				errs = append(errs, err)
			}
		}
		ids, err := c.managedInstances(ctx)
		if err != nil {
			return rm, fmt.Errorf("meadowrun: ec2 clean: %w", err)
		}
		for _, r := range recs {
			if !slices.Contains(ids, r.InstanceID) {
				ids = append(ids, r.InstanceID)
			}
		}
		if len(ids) > 0 {
			if _, err := c.ec2.TerminateInstances(ctx, &awsec2.TerminateInstancesInput{InstanceIds: ids}); err != nil {
				errs = append(errs, fmt.Errorf("terminating %s: %w", strings.Join(ids, ", "), err))
			} else {
				rm.Instances = ids
				for _, id := range ids {
					fmt.Fprintf(c.log, "meadowrun: ec2: terminated %s\n", id)
				}
			}
		}
	} else {
		idle := o.Idle
		if idle <= 0 {
			idle = 5 * time.Minute
		}
		ids, err := ec2host.TerminateIdle(ctx, c.ec2, t, idle, o.Log)
		rm.Instances = ids
		if err != nil && !isTableMissing(err) {
			errs = append(errs, err)
		}
	}
	groups, err := ec2host.SweepPortGroups(ctx, c.ec2, time.Now(), o.Log)
	for _, g := range groups {
		rm.Resources = append(rm.Resources, "security group "+g)
	}
	if err != nil {
		errs = append(errs, err)
	}
	if o.Cache {
		if d := cacheDir(""); d != "" {
			if err := os.RemoveAll(d); err != nil {
				errs = append(errs, err)
			} else {
				rm.Resources = append(rm.Resources, "catalog cache "+d)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return rm, fmt.Errorf("meadowrun: ec2 clean: %w", err)
	}
	return rm, nil
}

func isTableMissing(err error) bool {
	var nf *ddbtypes.ResourceNotFoundException
	return errors.As(err, &nf)
}

type group struct{ id, name string }

// portGroups lists the port security groups hosts made.
func (c *clients) portGroups(ctx context.Context) ([]group, error) {
	out, err := c.ec2.DescribeSecurityGroups(ctx, &awsec2.DescribeSecurityGroupsInput{Filters: []ec2types.Filter{
		{Name: aws.String("tag-key"), Values: []string{ec2host.TagPortsExpire}}}})
	if err != nil {
		return nil, fmt.Errorf("listing meadowrun's port security groups: %w", err)
	}
	var gs []group
	for _, g := range out.SecurityGroups {
		gs = append(gs, group{aws.ToString(g.GroupId), aws.ToString(g.GroupName)})
	}
	return gs, nil
}
