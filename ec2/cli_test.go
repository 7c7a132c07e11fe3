package ec2_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/meadowrun-go/meadowrun/ec2"
	"github.com/meadowrun-go/meadowrun/internal/cli"
	"github.com/meadowrun-go/meadowrun/internal/ec2sim"
)

// The command line on an ec2:// URL, with credentials and endpoints from
// the environment, as a user runs it (docs/ec2.md shows this output).
func TestEC2FromTheCommandLine(t *testing.T) {
	b := ec2sim.Open(t)
	t.Setenv("AWS_ACCESS_KEY_ID", "testing")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "testing")
	t.Setenv("AWS_ENDPOINT_URL", b.Moto.Endpoint)
	t.Setenv("AWS_ENDPOINT_URL_PRICING", deref(b.PricingConfig.BaseEndpoint))
	t.Setenv("XDG_STATE_HOME", t.TempDir())
	o := options(b)
	o.AWSConfig, o.PricingConfig = nil, nil
	o.Region = "us-east-1"
	o.BootTimeout = 0
	u := ec2.URL(o)
	run := func(stdin string, args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		if rc := cli.Main(context.Background(), args, strings.NewReader(stdin), &out, &errb); rc != 0 {
			t.Fatalf("meadowrun %s: exit %d\n%s%s", strings.Join(args, " "), rc, out.String(), errb.String())
		}
		t.Logf("$ meadowrun %s\n%s%s", strings.Join(args, " "), out.String(), errb.String())
		return out.String() + errb.String()
	}
	got := run("", "run", "--host", u, "--", "sh", "-c", `echo hello from $(echo $SSH_CONNECTION | cut -d" " -f3)`)
	running := b.Sim.Running()
	if len(running) != 1 {
		t.Fatalf("instances running: %v", running)
	}
	for _, ip := range running {
		if !strings.Contains(got, "hello from "+ip) {
			t.Fatalf("output %q: want the instance's address %s", got, ip)
		}
	}
	got = run("1\n2\n3\n4\n", "map", "-j", "4", "--host", u, "--", "sh", "-c", `echo item {} on $(echo $SSH_CONNECTION | cut -d" " -f3)`)
	if !strings.Contains(got, "4 succeeded") || !strings.Contains(got, ": cost $") {
		t.Fatalf("map output %q: want its summary and its cost", got)
	}
	got = run("", "hosts", "--host", u)
	for id := range b.Sim.Running() {
		if !strings.Contains(got, id+" t3.medium") {
			t.Fatalf("hosts output %q does not list instance %s", got, id)
		}
	}
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
