package ec2_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/ec2"
	"github.com/meadowrun-go/meadowrun/hosttest"
	"github.com/meadowrun-go/meadowrun/internal/ec2sim"
)

var ec2Where = meadowrun.Register("ec2.Where", func(ctx context.Context, x int) (string, error) {
	return os.Getenv("SSH_CONNECTION"), nil
})

// testType is the type the tests launch: 2 vCPUs, as many as the test
// machine has, whose CPUs every simulated instance reports.
const testType = "t3.medium"

// options are those of a host on bench b: its image, subnet, security
// group and key pair, private addresses (the simulated machines), the
// Pricing API fake, and quick polling.
func options(b *ec2sim.Bench) ec2.AllocEC2Instance {
	cfg, pcfg := b.Config, b.PricingConfig
	return ec2.AllocEC2Instance{AMI: b.AMI, Subnets: []string{b.Subnet}, SecurityGroups: []string{b.Group},
		KeyName: b.KeyName, KeyFile: b.KeyFile, User: "root", PrivateAddress: true, InstanceTypes: []string{testType},
		MaxInstances: 2, BootTimeout: time.Minute, AWSConfig: &cfg, PricingConfig: &pcfg, CacheDir: b.Dir}
}

func newEC2(t *testing.T, o ec2.AllocEC2Instance) *meadowrun.Host {
	t.Helper()
	if o.Log == nil {
		o.Log = &hosttest.SyncBuffer{}
		if testing.Verbose() {
			o.Log = os.Stderr
		}
	}
	h, err := ec2.NewHost(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func TestEC2LaunchesAnInstanceAndRunsAFunctionThere(t *testing.T) {
	b := ec2sim.Open(t)
	h := newEC2(t, options(b))
	start := time.Now()
	got, err := meadowrun.RunFunction(t.Context(), ec2Where.With(1), h, &meadowrun.Options{LogDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cold call (launch, boot, upload, agent, worker): %v", time.Since(start))
	running := b.Sim.Running()
	if len(running) != 1 {
		t.Fatalf("instances running: %v, want one", running)
	}
	for _, ip := range running {
		if f := strings.Fields(got); len(f) < 3 || f[2] != ip {
			t.Fatalf("SSH_CONNECTION %q: want the call served at the instance's address %s", got, ip)
		}
	}
	start = time.Now()
	if _, err := meadowrun.RunFunction(t.Context(), ec2Where.With(2), h, &meadowrun.Options{LogDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	t.Logf("warm call: %v", time.Since(start))
	if n := len(b.Sim.Booted()); n != 1 {
		t.Fatalf("%d instances booted, want the first reused", n)
	}
}

// The conformance suite on instances launched on demand: at most two,
// of two workers each.
func TestEC2Conformance(t *testing.T) {
	b := ec2sim.Open(t)
	hosttest.Run(t, hosttest.Config{
		NewHost:      func(t *testing.T) *meadowrun.Host { return newEC2(t, options(b)) },
		MillionTasks: millionTasks / 10,
	})
	t.Logf("instances booted: %v", b.Sim.Booted())
}
