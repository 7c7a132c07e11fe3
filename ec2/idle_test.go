package ec2_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	awsec2 "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/ec2"
	"github.com/meadowrun-go/meadowrun/internal/ec2alloc"
	"github.com/meadowrun-go/meadowrun/internal/ec2sim"
)

// clientEnv makes the test binary a client of the ec2:// URL it holds
// that runs ec2Block, which leaves a file in its argument's directory and
// blocks, until it is killed.
const clientEnv = "MEADOWRUN_TEST_EC2_CLIENT"

var ec2Block = meadowrun.Register("ec2.Block", func(ctx context.Context, dir string) (int, error) {
	if err := os.WriteFile(filepath.Join(dir, "started"), nil, 0o644); err != nil {
		return 0, err
	}
	<-ctx.Done()
	return 0, ctx.Err()
})

func init() {
	u := os.Getenv(clientEnv)
	if u == "" || os.Getenv("MEADOWRUN_WORKER") != "" {
		return
	}
	meadowrun.Main()
	ctx := context.Background()
	h, err := meadowrun.OpenHost(ctx, u)
	if err == nil {
		_, err = meadowrun.RunFunction(ctx, ec2Block.With(os.Getenv(clientEnv+"_DIR")), h, nil)
	}
	fmt.Fprintln(os.Stderr, "ec2 client:", err)
	os.Exit(1)
}

// A client killed while its worker runs leaves its booking in the table;
// with no client connected, the agent on the instance shuts it down once
// idle for IdleTimeout, the instance (shutdown behaviour terminate)
// terminates, and the next sweep (TerminateIdle) removes it from the
// table.
func TestEC2AnInstanceWithNoClientTerminatesItself(t *testing.T) {
	b := ec2sim.Open(t)
	t.Setenv("AWS_ACCESS_KEY_ID", "testing")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "testing")
	t.Setenv("AWS_ENDPOINT_URL", b.Moto.Endpoint)
	t.Setenv("AWS_ENDPOINT_URL_PRICING", deref(b.PricingConfig.BaseEndpoint))
	o := options(b)
	o.AWSConfig, o.PricingConfig = nil, nil
	o.Region = "us-east-1"
	o.IdleTimeout = 3 * time.Second
	dir := t.TempDir()
	os.Chmod(dir, 0o777)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), clientEnv+"="+ec2.URL(o), clientEnv+"_DIR="+dir)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(3 * time.Minute) // a bound on waiting, not a measurement
	for {
		if _, err := os.Stat(filepath.Join(dir, "started")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the client's worker never started")
		}
		time.Sleep(100 * time.Millisecond)
	}
	running := b.Sim.Running()
	if len(running) != 1 {
		t.Fatalf("instances running: %v", running)
	}
	var id string
	for i := range running {
		id = i
	}
	cmd.Process.Kill()
	cmd.Wait()
	tbl := ec2alloc.NewTable(dynamodb.NewFromConfig(b.Config), "")
	rec, err := tbl.Get(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("client killed; %s has %d workers booked, leases %v", id, len(rec.Workers), rec.Leases)
	if len(rec.Workers) != 1 {
		t.Fatalf("the dead client's bookings on %s: %v, want its worker's", id, rec.Workers)
	}
	for w := range rec.Workers {
		if _, ok := rec.Leases[ec2alloc.HolderOf(w)]; !ok {
			t.Errorf("worker %s booked with no lease (leases %v)", w, rec.Leases)
		}
	}
	for {
		if _, ok := b.Sim.Running()[id]; !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still runs with no client", id)
		}
		time.Sleep(200 * time.Millisecond)
	}
	out, err := b.EC2.DescribeInstances(t.Context(), &awsec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		t.Fatal(err)
	}
	if st := out.Reservations[0].Instances[0].State.Name; st != types.InstanceStateNameTerminated {
		t.Fatalf("%s is %s, want terminated", id, st)
	}
	var log bytesLog
	o.Log = &log
	if _, err := ec2.TerminateIdle(t.Context(), o); err != nil {
		t.Fatal(err)
	}
	if _, err := tbl.Get(t.Context(), id); err == nil {
		t.Fatalf("%s, terminated, is still in the allocation table", id)
	}
	t.Logf("sweep: %s; reason: %s", log.String(), aws.ToString(out.Reservations[0].Instances[0].StateTransitionReason))
}

type bytesLog struct{ b []byte }

func (l *bytesLog) Write(p []byte) (int, error) { l.b = append(l.b, p...); return len(p), nil }
func (l *bytesLog) String() string              { return string(l.b) }
