package ec2_test

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsec2 "github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/internal/ec2host"
	"github.com/meadowrun-go/meadowrun/internal/ec2sim"
)

// portGroups returns moto's port security groups and their TCP rules
// ("8080-8081 from 10.0.0.0/16").
func portGroups(t *testing.T, e *awsec2.Client) map[string][]string {
	t.Helper()
	out, err := e.DescribeSecurityGroups(context.Background(), &awsec2.DescribeSecurityGroupsInput{Filters: []ec2types.Filter{
		{Name: aws.String("tag-key"), Values: []string{ec2host.TagPortsExpire}}}})
	if err != nil {
		t.Fatal(err)
	}
	gs := map[string][]string{}
	for _, g := range out.SecurityGroups {
		var rules []string
		for _, p := range g.IpPermissions {
			for _, r := range p.IpRanges {
				rules = append(rules, strings.Join([]string{itoa(p.FromPort) + "-" + itoa(p.ToPort), "from", aws.ToString(r.CidrIp)}, " "))
			}
		}
		gs[aws.ToString(g.GroupId)] = rules
	}
	return gs
}

func itoa(p *int32) string { return strconv.Itoa(int(aws.ToInt32(p))) }

// instanceGroups returns the security groups of an instance.
func instanceGroups(t *testing.T, e *awsec2.Client, id string) []string {
	t.Helper()
	out, err := e.DescribeInstances(context.Background(), &awsec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil || len(out.Reservations) == 0 {
		t.Fatalf("DescribeInstances %s: %v", id, err)
	}
	var gs []string
	for _, g := range out.Reservations[0].Instances[0].SecurityGroups {
		gs = append(gs, aws.ToString(g.GroupId))
	}
	slices.Sort(gs)
	return gs
}

// A job's ports are opened in a security group of its own, attached to
// its instance while it runs, and closed (detached and deleted) after it
// ends, on a cancelled job too.
func TestEC2PortsOpenForTheJobOnly(t *testing.T) {
	b := ec2sim.Open(t)
	o := options(b)
	o.PortsFrom = []string{"10.99.0.0/16"}
	h := newEC2(t, o)
	if got := portGroups(t, b.EC2); len(got) != 0 {
		t.Fatalf("port groups before the job: %v", got)
	}
	// A first job without ports boots the instance.
	if _, err := meadowrun.RunFunction(t.Context(), ec2Where.With(1), h, &meadowrun.Options{LogDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	var id string
	for i := range b.Sim.Running() {
		id = i
	}
	base := instanceGroups(t, b.EC2, id)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := meadowrun.RunCommand(ctx, []string{"sleep", "600"}, h, &meadowrun.CommandOptions{
			Options: meadowrun.Options{LogDir: t.TempDir(), Ports: []string{"8080", "9000-9002"}}})
		done <- err
	}()
	var during map[string][]string
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if during = portGroups(t, b.EC2); len(during) > 0 {
			break
		}
	}
	if len(during) != 1 {
		t.Fatalf("port groups while the job runs: %v, want one", during)
	}
	for g, rules := range during {
		slices.Sort(rules)
		if want := []string{"8080-8080 from 10.99.0.0/16", "9000-9002 from 10.99.0.0/16"}; !slices.Equal(rules, want) {
			t.Errorf("rules of %s: %q, want %q", g, rules, want)
		}
		var attached []string
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			if attached = instanceGroups(t, b.EC2, id); slices.Contains(attached, g) {
				break
			}
		}
		if !slices.Contains(attached, g) || len(attached) != len(base)+1 {
			t.Errorf("instance %s has groups %v, want %v and %s", id, attached, base, g)
		}
	}
	cancel()
	<-done
	h.Close() // waits for the ports to be closed
	if after := portGroups(t, b.EC2); len(after) != 0 {
		t.Fatalf("port groups after the job: %v", after)
	}
	if after := instanceGroups(t, b.EC2, id); !slices.Equal(after, base) {
		t.Fatalf("instance groups after the job: %v, want %v", after, base)
	}

	// A job that ends by itself, on a host that stays open.
	h2 := newEC2(t, o)
	if _, err := meadowrun.RunCommand(t.Context(), []string{"true"}, h2, &meadowrun.CommandOptions{
		Options: meadowrun.Options{LogDir: t.TempDir(), Ports: []string{"8080"}}}); err != nil {
		t.Fatal(err)
	}
	var left map[string][]string
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if left = portGroups(t, b.EC2); len(left) == 0 {
			break
		}
	}
	if len(left) != 0 {
		t.Fatalf("port groups after a job that ended: %v", left)
	}
}

// The port group of a client that died (its expiry no longer pushed
// forward) is removed by `meadowrun ec2 clean` once expired, not before.
func TestEC2PortsOfADeadClientExpire(t *testing.T) {
	_, cfg := motoEnv(t)
	e := awsec2.NewFromConfig(cfg)
	ctx := t.Context()
	sg, err := e.CreateSecurityGroup(ctx, &awsec2.CreateSecurityGroupInput{GroupName: aws.String("base"), Description: aws.String("the instance's own")})
	if err != nil {
		t.Fatal(err)
	}
	run, err := e.RunInstances(ctx, &awsec2.RunInstancesInput{ImageId: aws.String(firstImage(t, cfg)), MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
		InstanceType: ec2types.InstanceTypeT3Micro, SecurityGroupIds: []string{aws.ToString(sg.GroupId)}})
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(run.Instances[0].InstanceId)
	base := instanceGroups(t, e, id)
	// A live client's ports, and those of a client that died without
	// closing them: nothing renews their expiry.
	long, err := ec2host.OpenPorts(ctx, e, id, "meadowrun-ports-alive", []string{"7000"}, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dead, err := ec2host.OpenPorts(ctx, e, id, "meadowrun-ports-dead", []string{"8080"}, nil, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	dead.Abandon()
	gs := portGroups(t, e)
	if len(gs) != 2 || len(instanceGroups(t, e, id)) != len(base)+2 {
		t.Fatalf("port groups %v, instance groups %v", gs, instanceGroups(t, e, id))
	}
	// The VPC's range by default.
	if r := gs[long.ID]; len(r) != 1 || !strings.HasPrefix(r[0], "7000-7000 from ") {
		t.Errorf("rules %v", r)
	}
	time.Sleep(2 * time.Second) // past the dead client's expiry
	out := mustRun(t, "ec2", "clean")
	if !strings.Contains(out, "removed 1 resources") {
		t.Errorf("clean: %q", out)
	}
	gs = portGroups(t, e)
	if _, ok := gs[long.ID]; len(gs) != 1 || !ok {
		t.Fatalf("port groups after clean: %v, want only the live client's %s", gs, long.ID)
	}
	if err := long.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if gs := portGroups(t, e); len(gs) != 0 || !slices.Equal(instanceGroups(t, e, id), base) {
		t.Fatalf("after Close: port groups %v, instance groups %v, want %v", gs, instanceGroups(t, e, id), base)
	}
}
