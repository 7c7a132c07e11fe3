package ec2_test

import (
	"bytes"
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	awsec2 "github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"golang.org/x/crypto/ssh"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/ec2"
	"github.com/meadowrun-go/meadowrun/internal/cli"
	"github.com/meadowrun-go/meadowrun/internal/ec2alloc"
	"github.com/meadowrun-go/meadowrun/internal/mototest"
)

// motoEnv starts moto and points the environment's credentials and
// endpoint at it, as a user's shell would.
func motoEnv(t *testing.T) (*mototest.Server, aws.Config) {
	t.Helper()
	m := mototest.Start(t)
	t.Setenv("AWS_ACCESS_KEY_ID", "testing")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "testing")
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_REGION", mototest.Region)
	t.Setenv("AWS_ENDPOINT_URL", m.Endpoint)
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	t.Setenv("HOME", t.TempDir())
	return m, m.Config()
}

// cliRun runs the real command line; it returns the output and the exit
// status.
func cliRun(t *testing.T, args ...string) (string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	rc := cli.Main(context.Background(), args, strings.NewReader(""), &out, &errb)
	t.Logf("$ meadowrun %s (exit %d)\n%s%s", strings.Join(args, " "), rc, out.String(), errb.String())
	return out.String() + errb.String(), rc
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, rc := cliRun(t, args...)
	if rc != 0 {
		t.Fatalf("meadowrun %s: exit %d", strings.Join(args, " "), rc)
	}
	return out
}

// resources lists what moto holds that install could create or remove:
// key pairs, security groups, IAM roles and instance profiles with their
// policies, secrets, tables and instances not terminated.
func resources(t *testing.T, cfg aws.Config) []string {
	t.Helper()
	ctx := t.Context()
	var out []string
	e := awsec2.NewFromConfig(cfg)
	kp, err := e.DescribeKeyPairs(ctx, &awsec2.DescribeKeyPairsInput{})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range kp.KeyPairs {
		out = append(out, "key pair "+aws.ToString(k.KeyName))
	}
	sg, err := e.DescribeSecurityGroups(ctx, &awsec2.DescribeSecurityGroupsInput{})
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range sg.SecurityGroups {
		out = append(out, "security group "+aws.ToString(g.GroupName)+" "+aws.ToString(g.GroupId))
	}
	is, err := e.DescribeInstances(ctx, &awsec2.DescribeInstancesInput{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range is.Reservations {
		for _, i := range r.Instances {
			if i.State.Name != ec2types.InstanceStateNameTerminated {
				out = append(out, "instance "+aws.ToString(i.InstanceId))
			}
		}
	}
	im := iam.NewFromConfig(cfg)
	roles, err := im.ListRoles(ctx, &iam.ListRolesInput{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range roles.Roles {
		out = append(out, "role "+aws.ToString(r.RoleName))
		ps, err := im.ListRolePolicies(ctx, &iam.ListRolePoliciesInput{RoleName: r.RoleName})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ps.PolicyNames {
			out = append(out, "role policy "+aws.ToString(r.RoleName)+"/"+p)
		}
	}
	ips, err := im.ListInstanceProfiles(ctx, &iam.ListInstanceProfilesInput{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ips.InstanceProfiles {
		out = append(out, "instance profile "+aws.ToString(p.InstanceProfileName))
	}
	sec, err := secretsmanager.NewFromConfig(cfg).ListSecrets(ctx, &secretsmanager.ListSecretsInput{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sec.SecretList {
		out = append(out, "secret "+aws.ToString(s.Name))
	}
	ts, err := dynamodb.NewFromConfig(cfg).ListTables(ctx, &dynamodb.ListTablesInput{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range ts.TableNames {
		out = append(out, "table "+n)
	}
	slices.Sort(out)
	return out
}

// install creates exactly the documented resources, a second install
// changes nothing, config and get-ssh-key read them, and uninstall
// (twice) leaves what was there before, terminating meadowrun's
// instances.
func TestInstallUninstall(t *testing.T) {
	_, cfg := motoEnv(t)
	ctx := t.Context()
	before := resources(t, cfg)

	out := mustRun(t, "ec2", "install", "--allow-ssh-from", "10.1.2.3/32")
	after := resources(t, cfg)
	var added []string
	for _, r := range after {
		if !slices.Contains(before, r) {
			added = append(added, r)
		}
	}
	var sgID string
	for _, r := range added {
		if strings.HasPrefix(r, "security group meadowrun_ssh_security_group ") {
			sgID = strings.Fields(r)[3]
		}
	}
	want := []string{"instance profile meadowrun_ec2_role_instance_profile", "key pair meadowrun_key_pair", "role meadowrun_ec2_role",
		"role policy meadowrun_ec2_role/meadowrun_ec2_policy", "secret meadowrun_private_key", "security group meadowrun_ssh_security_group " + sgID,
		"table meadowrun_ec2_alloc_table"}
	if !slices.Equal(added, want) {
		t.Fatalf("install added\n%q\nwant\n%q", added, want)
	}
	for _, w := range []string{"created key pair meadowrun_key_pair", "created IAM role meadowrun_ec2_role", "rule: port 22 from 10.1.2.3/32"} {
		if !strings.Contains(out, w) {
			t.Errorf("install output lacks %q", w)
		}
	}
	g, err := awsec2.NewFromConfig(cfg).DescribeSecurityGroups(ctx, &awsec2.DescribeSecurityGroupsInput{GroupIds: []string{sgID}})
	if err != nil || len(g.SecurityGroups) != 1 {
		t.Fatalf("DescribeSecurityGroups %s: %v", sgID, err)
	}
	ssh22 := false
	for _, p := range g.SecurityGroups[0].IpPermissions {
		for _, r := range p.IpRanges {
			ssh22 = ssh22 || aws.ToInt32(p.FromPort) == 22 && aws.ToString(r.CidrIp) == "10.1.2.3/32"
		}
	}
	if !ssh22 {
		t.Errorf("security group %s does not open port 22 to 10.1.2.3/32: %+v", sgID, g.SecurityGroups[0].IpPermissions)
	}

	out = mustRun(t, "ec2", "install", "--allow-ssh-from", "10.1.2.3/32")
	if !strings.Contains(out, "installed in us-east-1 already") {
		t.Errorf("second install: %q", out)
	}
	if again := resources(t, cfg); !slices.Equal(again, after) {
		t.Fatalf("a second install changed the resources:\n%q\nthen\n%q", after, again)
	}

	out = mustRun(t, "ec2", "config", "--ami", "ami-123")
	if !strings.Contains(out, "sg="+sgID) || !strings.Contains(out, "key_secret=meadowrun_private_key") || !strings.Contains(out, "profile=meadowrun_ec2_role_instance_profile") {
		t.Errorf("config output %q lacks the URL of the installed resources", out)
	}

	keyFile := t.TempDir() + "/k/id"
	mustRun(t, "ec2", "get-ssh-key", "--output", keyFile)
	st, err := os.Stat(keyFile)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v", err, st.Mode())
	}
	b, _ := os.ReadFile(keyFile)
	if _, err := ssh.ParsePrivateKey(b); err != nil {
		t.Errorf("get-ssh-key wrote no private key: %v", err)
	}

	// A managed instance, as a host launches it: uninstall terminates it.
	run, err := awsec2.NewFromConfig(cfg).RunInstances(ctx, &awsec2.RunInstancesInput{ImageId: aws.String(firstImage(t, cfg)), MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
		InstanceType: ec2types.InstanceTypeT3Micro, SecurityGroupIds: []string{sgID}, KeyName: aws.String(ec2.KeyPairName),
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeInstance, Tags: []ec2types.Tag{{Key: aws.String("meadowrun:managed"), Value: aws.String("true")}}}}})
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(run.Instances[0].InstanceId)

	catalog := os.Getenv("XDG_CACHE_HOME") + "/meadowrun/ec2/catalog-0123.json"
	os.MkdirAll(os.Getenv("XDG_CACHE_HOME")+"/meadowrun/ec2", 0o700)
	if err := os.WriteFile(catalog, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	out = mustRun(t, "ec2", "uninstall")
	if _, err := os.Stat(catalog); !os.IsNotExist(err) {
		t.Errorf("uninstall left the catalog cache: %v", err)
	}
	if !strings.Contains(out, "terminated 1 instances") {
		t.Errorf("uninstall output %q", out)
	}
	if final := resources(t, cfg); !slices.Equal(final, before) {
		t.Fatalf("after uninstall:\n%q\nwant what was there before install:\n%q", final, before)
	}
	if st, err := awsec2.NewFromConfig(cfg).DescribeInstances(ctx, &awsec2.DescribeInstancesInput{InstanceIds: []string{id}}); err != nil ||
		st.Reservations[0].Instances[0].State.Name != ec2types.InstanceStateNameTerminated {
		t.Errorf("instance %s after uninstall: %v", id, err)
	}
	out = mustRun(t, "ec2", "uninstall")
	if !strings.Contains(out, "terminated 0 instances, removed 0 resources") {
		t.Errorf("second uninstall: %q", out)
	}
	// Not installed: config and get-ssh-key say so and what to run.
	out, rc := cliRun(t, "ec2", "config")
	if rc == 0 || !strings.Contains(out, "meadowrun ec2 install") {
		t.Errorf("config when not installed: exit %d, %q", rc, out)
	}
	out, rc = cliRun(t, "ec2", "get-ssh-key", "--output", keyFile)
	if rc == 0 || !strings.Contains(out, "meadowrun ec2 install") {
		t.Errorf("get-ssh-key when not installed: exit %d, %q", rc, out)
	}
}

// grant-permission-to-secret adds the secret to the role's policy, once;
// a secret that does not exist is a clear error.
func TestGrantPermissionToSecret(t *testing.T) {
	_, cfg := motoEnv(t)
	ctx := t.Context()
	out, rc := cliRun(t, "ec2", "grant-permission-to-secret", "reg")
	if rc == 0 || !strings.Contains(out, "no such AWS secret") {
		t.Errorf("granting a secret that does not exist: exit %d, %q", rc, out)
	}
	sm := secretsmanager.NewFromConfig(cfg)
	s, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String("reg"), SecretString: aws.String(`{"username":"u","password":"p"}`)})
	if err != nil {
		t.Fatal(err)
	}
	out, rc = cliRun(t, "ec2", "grant-permission-to-secret", "reg")
	if rc == 0 || !strings.Contains(out, "meadowrun ec2 install") {
		t.Errorf("granting before install: exit %d, %q", rc, out)
	}
	mustRun(t, "ec2", "install")
	mustRun(t, "ec2", "grant-permission-to-secret", "reg")
	mustRun(t, "ec2", "grant-permission-to-secret", "reg")
	got, err := ec2.GrantedSecrets(ctx, ec2.ManageOptions{})
	if err != nil || !slices.Equal(got, []string{aws.ToString(s.ARN)}) {
		t.Fatalf("granted secrets %q, %v; want [%s]", got, err, aws.ToString(s.ARN))
	}
	out = mustRun(t, "ec2", "config")
	if !strings.Contains(out, "instances may read secret "+aws.ToString(s.ARN)) {
		t.Errorf("config output %q does not list the granted secret", out)
	}
	mustRun(t, "ec2", "uninstall")
}

func firstImage(t *testing.T, cfg aws.Config) string {
	imgs, err := awsec2.NewFromConfig(cfg).DescribeImages(t.Context(), &awsec2.DescribeImagesInput{Filters: []ec2types.Filter{{Name: aws.String("architecture"), Values: []string{"x86_64"}}}})
	if err != nil || len(imgs.Images) == 0 {
		t.Fatalf("no image: %v", err)
	}
	return aws.ToString(imgs.Images[0].ImageId)
}

// clean terminates the table's idle instances (not busy ones), all of
// them with --active, and removes the catalog cache with --cache.
func TestCleanThroughTheCLI(t *testing.T) {
	_, cfg := motoEnv(t)
	ctx := t.Context()
	e := awsec2.NewFromConfig(cfg)
	tab := ec2alloc.NewTable(dynamodb.NewFromConfig(cfg), "")
	if err := tab.Create(ctx); err != nil {
		t.Fatal(err)
	}
	run := func() string {
		out, err := e.RunInstances(ctx, &awsec2.RunInstancesInput{ImageId: aws.String(firstImage(t, cfg)), MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
			InstanceType:      ec2types.InstanceTypeT3Micro,
			TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeInstance, Tags: []ec2types.Tag{{Key: aws.String("meadowrun:managed"), Value: aws.String("true")}}}}})
		if err != nil {
			t.Fatal(err)
		}
		return aws.ToString(out.Instances[0].InstanceId)
	}
	typ := &ec2alloc.InstanceType{Name: "t3.micro", VCPU: 2, MemoryBytes: 1 << 30, Architectures: []string{"x86_64"}}
	offer := ec2alloc.Offer{Type: typ, Market: ec2alloc.OnDemand, Zone: "us-east-1a", Price: 0.01}
	per, _ := ec2alloc.WorkerCapacity(driver.Resources{LogicalCPU: 1}, 0)
	idle, busy := run(), run()
	if err := tab.Register(ctx, ec2alloc.NewRecord(idle, "10.0.0.1", "k", offer), nil, per); err != nil {
		t.Fatal(err)
	}
	if err := tab.Register(ctx, ec2alloc.NewRecord(busy, "10.0.0.2", "k", offer), []string{"w"}, per); err != nil {
		t.Fatal(err)
	}
	cache := os.Getenv("XDG_CACHE_HOME") + "/meadowrun/ec2"
	if err := os.MkdirAll(cache, 0o700); err != nil {
		t.Fatal(err)
	}
	if out := mustRun(t, "ec2", "clean", "--idle", "1h"); !strings.Contains(out, "terminated 0 instances") {
		t.Errorf("clean --idle 1h: %q", out)
	}
	time.Sleep(20 * time.Millisecond) // idle for longer than --idle 10ms
	if out := mustRun(t, "ec2", "clean", "--idle", "10ms"); !strings.Contains(out, "terminated 1 instances ("+idle+")") {
		t.Errorf("clean --idle 10ms: %q, want %s terminated, not the busy %s", out, idle, busy)
	}
	if out := mustRun(t, "ec2", "clean", "--active", "--cache"); !strings.Contains(out, "terminated 1 instances ("+busy+")") || !strings.Contains(out, "removed 1 resources") {
		t.Errorf("clean --active --cache: %q", out)
	}
	if _, err := os.Stat(cache); !os.IsNotExist(err) {
		t.Errorf("the catalog cache is still there: %v", err)
	}
	if recs, err := tab.List(ctx); err != nil || len(recs) != 0 {
		t.Errorf("table after clean --active: %v, %v", recs, err)
	}
	for _, r := range resources(t, cfg) {
		if strings.HasPrefix(r, "instance ") {
			t.Errorf("%s still runs", r)
		}
	}
}
