package ec2_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/smithy-go/middleware"
	"golang.org/x/crypto/ssh"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/ec2"
	"github.com/meadowrun-go/meadowrun/internal/ec2sim"
)

// awsCalls records the AWS operations a host's clients make.
type awsCalls struct {
	mu  sync.Mutex
	ops []string
}

func (c *awsCalls) option(s *middleware.Stack) error {
	return s.Initialize.Add(middleware.InitializeMiddlewareFunc("record", func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
		out, md, err := next.HandleInitialize(ctx, in)
		c.mu.Lock()
		c.ops = append(c.ops, awsmiddleware.GetServiceID(ctx)+"."+awsmiddleware.GetOperationName(ctx))
		c.mu.Unlock()
		return out, md, err
	}), middleware.After)
}

func (c *awsCalls) list() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.ops)
}

// recorded returns o with its AWS calls recorded in c.
func recorded(o ec2.AllocEC2Instance, c *awsCalls) ec2.AllocEC2Instance {
	cfg := o.AWSConfig.Copy()
	cfg.APIOptions = append(slices.Clone(cfg.APIOptions), c.option)
	o.AWSConfig = &cfg
	return o
}

// instanceOf returns the address SSH_CONNECTION names as the server's.
func instanceOf(t *testing.T, sshConnection string) string {
	t.Helper()
	f := strings.Fields(sshConnection)
	if len(f) < 3 {
		t.Fatalf("SSH_CONNECTION %q", sshConnection)
	}
	return f[2]
}

// The calls a new client must not need on an instance a client with the
// same settings used before: New's checks (the table's creation
// included) and the read of the instance's host key from its tag.
var notOnWarm = []string{"EC2.DescribeRegions", "EC2.DescribeImages", "EC2.DescribeSubnets", "EC2.DescribeKeyPairs", "EC2.DescribeInstances", "DynamoDB.CreateTable"}

func TestEC2NewClientOnAWarmInstanceSkipsTheChecksAndTheHostKeyRead(t *testing.T) {
	b := ec2sim.Open(t)
	o := options(b)
	o.CacheDir = t.TempDir()
	var cold awsCalls
	h := newEC2(t, recorded(o, &cold))
	got, err := meadowrun.RunFunction(t.Context(), ec2Where.With(1), h, &meadowrun.Options{LogDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ip := instanceOf(t, got)
	h.Close()
	for _, op := range notOnWarm {
		if !slices.Contains(cold.list(), op) {
			t.Fatalf("the first client made no %s call (calls: %v): the recording misses calls", op, cold.list())
		}
	}

	// A new client with the same settings and cache directory, as the
	// next run of the program would be.
	for i := range 2 {
		var warm awsCalls
		h := newEC2(t, recorded(o, &warm))
		got, err := meadowrun.RunFunction(t.Context(), ec2Where.With(2), h, &meadowrun.Options{LogDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		h.Close()
		if got := instanceOf(t, got); got != ip {
			t.Fatalf("client %d served at %s, want the warm instance %s", i+2, got, ip)
		}
		for _, op := range warm.list() {
			if slices.Contains(notOnWarm, op) {
				t.Fatalf("client %d on the warm instance called %s (calls: %v)", i+2, op, warm.list())
			}
		}
		if !slices.Contains(warm.list(), "DynamoDB.Scan") || !slices.Contains(warm.list(), "DynamoDB.UpdateItem") {
			t.Fatalf("client %d did not book in the table (calls: %v)", i+2, warm.list())
		}
		t.Logf("client %d's AWS calls: %v", i+2, warm.list())
	}
	if n := len(b.Sim.Booted()); n != 1 {
		t.Fatalf("%d instances booted, want the first reused", n)
	}
}

// A cache directory whose instance has another host key than the one it
// names (a stale or tampered file) costs the early login only: the
// booking's instance is reached with the key of its tag, and the file is
// set right.
func TestEC2WarmCacheWithAWrongHostKeyFallsBackToTheTag(t *testing.T) {
	b := ec2sim.Open(t)
	o := options(b)
	o.CacheDir = t.TempDir()
	h := newEC2(t, o)
	got, err := meadowrun.RunFunction(t.Context(), ec2Where.With(1), h, &meadowrun.Options{LogDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ip := instanceOf(t, got)
	h.Close()
	files, _ := filepath.Glob(filepath.Join(o.CacheDir, "warm-*.json"))
	if len(files) != 1 {
		t.Fatalf("cache directory: %v, want one warm-*.json", files)
	}
	state := map[string]any{}
	raw, err := os.ReadFile(files[0])
	if err == nil {
		err = json.Unmarshal(raw, &state)
	}
	if err != nil {
		t.Fatal(err)
	}
	right, _ := state["host_key"].(string)
	if state["address"] != ip || !strings.HasPrefix(right, "ssh-") {
		t.Fatalf("warm state %s: want the instance at %s and its host key", raw, ip)
	}
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	other, _ := ssh.NewPublicKey(pub)
	state["host_key"] = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(other)))
	raw, _ = json.Marshal(state)
	if err := os.WriteFile(files[0], raw, 0o600); err != nil {
		t.Fatal(err)
	}

	h = newEC2(t, o)
	got, err = meadowrun.RunFunction(t.Context(), ec2Where.With(2), h, &meadowrun.Options{LogDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	h.Close()
	if got := instanceOf(t, got); got != ip {
		t.Fatalf("served at %s, want the warm instance %s", got, ip)
	}
	raw, _ = os.ReadFile(files[0])
	state = map[string]any{}
	json.Unmarshal(raw, &state)
	if state["host_key"] != right {
		t.Fatalf("warm state after the second client: %s, want the instance's own host key %s", raw, right)
	}
}
