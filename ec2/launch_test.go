package ec2_test

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	awsec2 "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/ec2"
	"github.com/meadowrun-go/meadowrun/hosttest"
	"github.com/meadowrun-go/meadowrun/internal/ec2alloc"
	"github.com/meadowrun-go/meadowrun/internal/ec2sim"
)

// instancesIn returns moto's instances by state.
func instancesIn(t *testing.T, b *ec2sim.Bench) map[types.InstanceStateName][]types.Instance {
	t.Helper()
	out, err := b.EC2.DescribeInstances(t.Context(), &awsec2.DescribeInstancesInput{})
	if err != nil {
		t.Fatal(err)
	}
	m := map[types.InstanceStateName][]types.Instance{}
	for _, r := range out.Reservations {
		for _, i := range r.Instances {
			m[i.State.Name] = append(m[i.State.Name], i)
		}
	}
	return m
}

// runInstancesLog records the RunInstances requests a faulty proxy sees
// and fails those fail picks.
type runInstancesLog struct {
	mu    sync.Mutex
	calls []url.Values
}

func (l *runInstancesLog) faults(fail func(form url.Values) *ec2sim.Fault) func(string, url.Values) *ec2sim.Fault {
	return func(action string, form url.Values) *ec2sim.Fault {
		if action != "RunInstances" {
			return nil
		}
		l.mu.Lock()
		l.calls = append(l.calls, form)
		l.mu.Unlock()
		return fail(form)
	}
}

func TestEC2FailsOverToTheNextSubnetWhenAZoneHasNoCapacity(t *testing.T) {
	b := ec2sim.Open(t)
	log := &runInstancesLog{}
	cfg := b.Faulty(t, log.faults(func(form url.Values) *ec2sim.Fault {
		if form.Get("SubnetId") == b.Subnet {
			return &ec2sim.Fault{Code: "InsufficientInstanceCapacity", Message: "We currently do not have sufficient t3.medium capacity in the Availability Zone you requested (us-east-1a)."}
		}
		return nil
	}))
	o := options(b)
	o.AWSConfig = &cfg
	o.Subnets = []string{b.Subnet, b.Subnet2}
	out := &hosttest.SyncBuffer{}
	o.Log = out
	h := newEC2(t, o)
	if _, err := meadowrun.RunFunction(t.Context(), ec2Where.With(1), h, &meadowrun.Options{LogDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	running := instancesIn(t, b)[types.InstanceStateNameRunning]
	if len(running) != 1 || aws.ToString(running[0].SubnetId) != b.Subnet2 {
		t.Fatalf("running instances %v, want one in the second subnet %s", running, b.Subnet2)
	}
	if len(log.calls) != 2 || log.calls[0].Get("SubnetId") != b.Subnet || log.calls[1].Get("SubnetId") != b.Subnet2 {
		t.Fatalf("RunInstances calls %v: want the first subnet, then the second", log.calls)
	}
	if !strings.Contains(out.String(), "InsufficientInstanceCapacity") {
		t.Errorf("the host's log does not tell of the failed attempt:\n%s", out)
	}
}

func TestEC2QuotaErrorsEndInAClearMessage(t *testing.T) {
	b := ec2sim.Open(t)
	log := &runInstancesLog{}
	cfg := b.Faulty(t, log.faults(func(url.Values) *ec2sim.Fault {
		return &ec2sim.Fault{Code: "VcpuLimitExceeded", Message: "You have requested more vCPU capacity than your current vCPU limit of 0 allows."}
	}))
	o := options(b)
	o.AWSConfig = &cfg
	o.Subnets = []string{b.Subnet, b.Subnet2}
	h := newEC2(t, o)
	_, err := meadowrun.RunFunction(t.Context(), ec2Where.With(1), h, &meadowrun.Options{LogDir: t.TempDir()})
	if !errors.Is(err, ec2.ErrLaunch) {
		t.Fatalf("error %v, want ErrLaunch", err)
	}
	t.Logf("%v", err)
	// Spot and on demand, in each zone.
	if len(log.calls) != 4 {
		t.Errorf("%d RunInstances calls, want 4 (2 markets × 2 zones)", len(log.calls))
	}
	for _, want := range []string{"VcpuLimitExceeded", "quota", "us-east-1a", "us-east-1b", b.Subnet2, "spot", "on-demand"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not mention %q", want)
		}
	}
	if n := len(instancesIn(t, b)[types.InstanceStateNameRunning]); n != 0 {
		t.Errorf("%d instances running after a failed launch", n)
	}
}

// Another process (another host on the same table) reuses the instance,
// verifying its host key from the instance's tag, and a host that is open
// terminates an instance idle for its IdleTimeout.
func TestEC2InstancesAreReusedByOtherClientsAndTerminatedWhenIdle(t *testing.T) {
	b := ec2sim.Open(t)
	o := options(b)
	o.IdleTimeout = time.Hour
	h1 := newEC2(t, o)
	first, err := meadowrun.RunFunction(t.Context(), ec2Where.With(1), h1, &meadowrun.Options{LogDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	h1.Close()
	h2 := newEC2(t, o)
	second, err := meadowrun.RunFunction(t.Context(), ec2Where.With(2), h2, &meadowrun.Options{LogDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(b.Sim.Booted()); n != 1 || strings.Fields(first)[2] != strings.Fields(second)[2] {
		t.Fatalf("%d instances booted, calls served at %q and %q: want the instance reused", n, first, second)
	}

	// h2's warm worker holds its booking: the instance is not idle.
	o.IdleTimeout = 300 * time.Millisecond
	if ids, err := ec2.TerminateIdle(t.Context(), o); err != nil || len(ids) != 0 {
		t.Fatalf("TerminateIdle with a worker booked: %v, %v; want nothing terminated", ids, err)
	}
	h2.Close()
	// An open host sweeps every IdleTimeout/2.
	out := &hosttest.SyncBuffer{}
	o.Log = out
	newEC2(t, o)
	deadline := time.Now().Add(20 * time.Second)
	for len(instancesIn(t, b)[types.InstanceStateNameTerminated]) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the idle instance was not terminated; host log:\n%s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for len(b.Sim.Running()) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the terminated instance's machine still runs")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The line is written once TerminateInstances has returned.
	for !strings.Contains(out.String(), "idle for") {
		if time.Now().After(deadline) {
			t.Fatalf("the host's log does not tell of the termination:\n%s", out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestEC2BadInputIsAClearError(t *testing.T) {
	b := ec2sim.Open(t)
	for _, c := range []struct {
		name    string
		edit    func(*ec2.AllocEC2Instance)
		mention []string
	}{
		{"an unknown region", func(o *ec2.AllocEC2Instance) { o.Region = "mars-north-1" }, []string{"unknown region", "mars-north-1"}},
		{"an AMI that does not exist", func(o *ec2.AllocEC2Instance) { o.AMI = "ami-00000000000000000" }, []string{"AMI ami-00000000000000000 does not exist"}},
		{"a subnet that does not exist", func(o *ec2.AllocEC2Instance) { o.Subnets = []string{b.Subnet, "subnet-00000000000000000"} }, []string{"subnet subnet-00000000000000000 does not exist"}},
		{"a security group that does not exist", func(o *ec2.AllocEC2Instance) { o.SecurityGroups = []string{"sg-00000000000000000"} }, []string{"security groups sg-00000000000000000"}},
		{"a key pair that does not exist", func(o *ec2.AllocEC2Instance) { o.KeyName = "nobody" }, []string{"key pair nobody does not exist"}},
		{"no AMI", func(o *ec2.AllocEC2Instance) { o.AMI = "" }, []string{"no AMI"}},
		{"an instance type the region does not offer", func(o *ec2.AllocEC2Instance) { o.InstanceTypes = []string{"t3.enormous"} }, []string{"t3.enormous is not offered"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := options(b)
			c.edit(&o)
			h, err := ec2.NewHost(t.Context(), o)
			if err == nil {
				// The instance types are checked once work runs.
				t.Cleanup(func() { h.Close() })
				_, err = meadowrun.RunFunction(t.Context(), ec2Where.With(1), h, &meadowrun.Options{LogDir: t.TempDir()})
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, m := range c.mention {
				if !strings.Contains(err.Error(), m) {
					t.Fatalf("error %q does not mention %q", err, m)
				}
			}
			t.Logf("%v", err)
		})
	}
	t.Run("no credentials", func(t *testing.T) {
		t.Setenv("AWS_ACCESS_KEY_ID", "")
		t.Setenv("AWS_SECRET_ACCESS_KEY", "")
		o := options(b)
		o.AWSConfig = nil
		_, err := ec2.NewHost(t.Context(), o)
		if !errors.Is(err, ec2.ErrNoCredentials) || !strings.Contains(err.Error(), "AWS_ACCESS_KEY_ID") {
			t.Fatalf("error %v, want ErrNoCredentials naming the variables", err)
		}
	})
	t.Run("resources no instance type has", func(t *testing.T) {
		o := options(b)
		o.InstanceTypes = nil
		h := newEC2(t, o)
		_, err := meadowrun.RunFunction(t.Context(), ec2Where.With(1), h, &meadowrun.Options{LogDir: t.TempDir(),
			Resources: &meadowrun.Resources{LogicalCPU: 4, MemoryGB: 100000}})
		if !errors.Is(err, meadowrun.ErrNeverFits) || !strings.Contains(err.Error(), "no type has enough") {
			t.Fatalf("error %v, want ErrNeverFits saying no type is large enough", err)
		}
		t.Logf("%v", err)
	})
	if n := len(b.Sim.Booted()); n != 0 {
		t.Errorf("%d instances booted for bad input", n)
	}
}

// The ec2:// URL opens the same host, with credentials and endpoint from
// the environment.
func TestEC2URL(t *testing.T) {
	o := ec2.AllocEC2Instance{Region: "us-east-2", AMI: "ami-1", Subnets: []string{"subnet-a", "subnet-b"}, SecurityGroups: []string{"sg-1"},
		InstanceProfile: "p", KeyName: "k", KeyFile: "/keys/k.pem", User: "admin", PrivateAddress: true, InstanceTypes: []string{"m6i.large"},
		MaxInstances: 3, IdleTimeout: 2 * time.Minute, BootTimeout: time.Minute, TableName: "tbl", CacheDir: "/cache",
		OnDemandAfterInterruption: true, NoIdleShutdown: true}
	u := ec2.URL(o)
	back, err := ec2.ParseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	if ec2.URL(back) != u {
		t.Fatalf("%s came back as %s", u, ec2.URL(back))
	}
	if !back.OnDemandAfterInterruption || !back.NoIdleShutdown {
		t.Fatalf("%s lost on_demand_after_interruption or no_idle_shutdown: %+v", u, back)
	}
	if !strings.HasPrefix(u, "ec2://us-east-2?") || !strings.Contains(u, "subnet=subnet-a&subnet=subnet-b") {
		t.Fatalf("URL %s", u)
	}
	for _, bad := range []string{"ec2://us-east-1?colour=red", "ec2://us-east-1?max_instances=0", "ec2://us-east-1?idle=soon", "ec2://u@us-east-1/path", "ec2://us-east-1?no_idle_shutdown=maybe"} {
		if _, err := ec2.ParseURL(bad); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}

	t.Run("opens a host through meadowrun.OpenHost", func(t *testing.T) {
		b := ec2sim.Open(t)
		t.Setenv("AWS_ACCESS_KEY_ID", "testing")
		t.Setenv("AWS_SECRET_ACCESS_KEY", "testing")
		t.Setenv("AWS_ENDPOINT_URL", b.Moto.Endpoint)
		o := options(b)
		o.AWSConfig, o.PricingConfig = nil, nil
		o.Region = "us-east-1"
		h, err := meadowrun.OpenHost(context.Background(), ec2.URL(o))
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		if u, ok := meadowrun.HostURL(h); !ok || !strings.HasPrefix(u, "ec2://us-east-1?") {
			t.Fatalf("HostURL = %q, %v", u, ok)
		}
		drv, err := h.Driver(t.Context())
		if err != nil || !strings.Contains(drv.Name(), "us-east-1") {
			t.Fatalf("driver %v, %v", drv, err)
		}
	})
}

// An instance launched that never answers over SSH fails the call after
// BootTimeout, and is deregistered and terminated: it is not booked again.
func TestEC2AnInstanceThatNeverAnswersIsTerminated(t *testing.T) {
	b := ec2sim.Open(t)
	b.Sim.Pause()
	o := options(b)
	o.BootTimeout = 3 * time.Second
	h := newEC2(t, o)
	start := time.Now()
	_, err := meadowrun.RunFunction(t.Context(), ec2Where.With(1), h, &meadowrun.Options{LogDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "not reachable over SSH within 3s") {
		t.Fatalf("error %v, want one saying the instance did not answer within BootTimeout", err)
	}
	t.Logf("after %v: %v", time.Since(start), err)
	if n := len(instancesIn(t, b)[types.InstanceStateNameTerminated]); n != 1 {
		t.Fatalf("%d instances terminated, want the one launched", n)
	}
	recs, err := ec2alloc.NewTable(dynamodb.NewFromConfig(b.Config), "").List(t.Context())
	if err != nil || len(recs) != 0 {
		t.Fatalf("allocation table %v, %v: want it empty", recs, err)
	}
}
