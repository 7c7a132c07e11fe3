package ec2_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/ec2"
	"github.com/meadowrun-go/meadowrun/hosttest"
	"github.com/meadowrun-go/meadowrun/internal/localhost"
)

// loginHost stands for a container engine's registry login, which this
// test cannot run (no engine in the moto test environment): it records
// the credentials a worker spec carries and runs the worker on this
// machine without the container.
type loginHost struct {
	driver.Host
	mu    sync.Mutex
	creds []*driver.Credentials
}

func (h *loginHost) Capabilities() driver.Capabilities {
	c := h.Host.Capabilities()
	c.Deployments = append(c.Deployments, driver.DeployContainer)
	return c
}

func (h *loginHost) Start(ctx context.Context, spec driver.WorkerSpec) (driver.Worker, error) {
	h.mu.Lock()
	h.creds = append(h.creds, spec.Deployment.Credentials)
	h.mu.Unlock()
	spec.Deployment = driver.Deployment{}
	return h.Host.Start(ctx, spec)
}

// An AwsSecret's values are read from Secrets Manager when the job is
// submitted and reach the host, and appear nowhere in the job's output,
// logs, journal or errors.
func TestAwsSecretForARegistry(t *testing.T) {
	_, cfg := motoEnv(t)
	state := t.TempDir()
	t.Setenv("XDG_STATE_HOME", state)
	const user, password = "registry-user-4e1f", "pa55-word-93c7d2"
	sm := secretsmanager.NewFromConfig(cfg)
	if _, err := sm.CreateSecret(t.Context(), &secretsmanager.CreateSecretInput{Name: aws.String("reg"),
		SecretString: aws.String(`{"username":"` + user + `","password":"` + password + `"}`)}); err != nil {
		t.Fatal(err)
	}
	if _, err := sm.CreateSecret(t.Context(), &secretsmanager.CreateSecretInput{Name: aws.String("not-json"), SecretString: aws.String(password)}); err != nil {
		t.Fatal(err)
	}
	lh, err := localhost.New(t.Context(), localhost.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rec := &loginHost{Host: lh}
	h := meadowrun.NewHost(rec, meadowrun.HostOptions{})
	defer h.Close()

	logs := t.TempDir()
	out := &hosttest.SyncBuffer{}
	o := meadowrun.Options{Deployment: meadowrun.ContainerImage("registry.example/app", "v1", ec2.AwsSecret("reg"), nil), LogDir: logs, Output: out}
	res, err := meadowrun.RunCommand(t.Context(), []string{"sh", "-c", "echo ran"}, h, &meadowrun.CommandOptions{Options: o})
	if err != nil || res.ReturnCode != 0 {
		t.Fatalf("job: %+v, %v", res, err)
	}
	rec.mu.Lock()
	got := rec.creds
	rec.mu.Unlock()
	if len(got) == 0 || got[0] == nil || got[0].Username != user || got[0].Password != password {
		t.Fatalf("the host got credentials %v, want the secret's", got)
	}
	if s := ec2.AwsSecret("reg").String(); s != "the AWS secret reg" || strings.Contains(s, password) {
		t.Errorf("String() = %q", s)
	}
	if strings.Contains(out.String(), password) {
		t.Errorf("the output shows the password")
	}
	files := 0
	for _, dir := range []string{state, logs} {
		filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
			if err != nil || e.IsDir() {
				return nil
			}
			files++
			b, _ := os.ReadFile(p)
			if strings.Contains(string(b), password) || strings.Contains(string(b), user) {
				t.Errorf("%s holds the secret's values", p)
			}
			return nil
		})
	}
	if files == 0 {
		t.Errorf("the job left no log to check")
	}
	// Journaled (detached jobs), a secret is where it is kept.
	// its name, never its values, and reads back as the same secret.
	b, err := json.Marshal(ec2.AwsSecret("reg"))
	var back meadowrun.Secret
	if err != nil || strings.Contains(string(b), password) || json.Unmarshal(b, &back) != nil || back != ec2.AwsSecret("reg") {
		t.Errorf("the secret as journaled: %s (%v), read back as %v", b, err, back)
	}

	// A secret that does not exist, and one that is not a username and
	// password: clear errors, without the value.
	for _, c := range []struct {
		name string
		want error
		text string
	}{
		{"no-such-secret", ec2.ErrSecretNotFound, `"no-such-secret"`},
		{"not-json", meadowrun.ErrInvalidOptions, `"username" and "password"`},
	} {
		o.Deployment = meadowrun.ContainerImage("registry.example/app", "v1", ec2.AwsSecret(c.name), nil)
		_, err := meadowrun.RunCommand(t.Context(), []string{"true"}, h, &meadowrun.CommandOptions{Options: o})
		if !errors.Is(err, c.want) || !errors.Is(err, meadowrun.ErrInvalidOptions) || !strings.Contains(err.Error(), c.text) {
			t.Errorf("secret %s: error = %v, want %v mentioning %s", c.name, err, c.want, c.text)
		}
		if err != nil && strings.Contains(err.Error(), password) {
			t.Errorf("secret %s: the error shows the value", c.name)
		}
	}
}

// The key pair's private key read from its secret (key_secret=) logs in
// to the instances: NewHost fails clearly when the secret is missing.
func TestKeySecretNotFound(t *testing.T) {
	_, _ = motoEnv(t)
	_, err := ec2.NewHost(t.Context(), ec2.AllocEC2Instance{Region: "us-east-1", AMI: "ami-1", KeyName: "k", KeySecret: "missing-key"})
	if !errors.Is(err, ec2.ErrSecretNotFound) || !strings.Contains(err.Error(), "missing-key") {
		t.Fatalf("error = %v, want ErrSecretNotFound naming the secret", err)
	}
}

// The command line's --registry-aws-secret names an AwsSecret: one that
// does not exist fails the job up front, saying so.
func TestAwsSecretFromTheCommandLine(t *testing.T) {
	_, _ = motoEnv(t)
	t.Setenv("XDG_STATE_HOME", t.TempDir())
	out, rc := cliRun(t, "run", "--host", "local", "--image", "registry.example/app:v1", "--registry-aws-secret", "no-such-secret", "--", "true")
	if rc == 0 || !strings.Contains(out, "no such AWS secret") || !strings.Contains(out, "no-such-secret") {
		t.Fatalf("exit %d, output %q: want the missing secret named", rc, out)
	}
	out, rc = cliRun(t, "run", "--host", "local", "--registry-aws-secret", "s", "--", "true")
	if rc == 0 || !strings.Contains(out, "--registry-aws-secret goes with --image") {
		t.Fatalf("without --image: exit %d, output %q", rc, out)
	}
}

// A detached job is journaled with where its AwsSecret is; its
// supervisor reads the secret (here for a container on a machine
// without an engine: the job fails after that), and neither the journal
// nor the logs hold the values.
func TestAwsSecretDetachedJobJournal(t *testing.T) {
	_, cfg := motoEnv(t)
	state := t.TempDir()
	t.Setenv("XDG_STATE_HOME", state)
	t.Setenv("DOCKER_HOST", "unix://"+filepath.Join(t.TempDir(), "no-docker.sock"))
	const password = "detached-pa55-1d9e"
	if _, err := secretsmanager.NewFromConfig(cfg).CreateSecret(t.Context(), &secretsmanager.CreateSecretInput{Name: aws.String("reg"),
		SecretString: aws.String(`{"username":"u-detached","password":"` + password + `"}`)}); err != nil {
		t.Fatal(err)
	}
	o := meadowrun.Options{Deployment: meadowrun.ContainerImage("registry.example/app", "v1", ec2.AwsSecret("reg"), nil), LogDir: t.TempDir()}
	j, err := meadowrun.SubmitCommand(t.Context(), []string{"true"}, meadowrun.Local(), &meadowrun.CommandOptions{Options: o}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = j.Wait(t.Context())
	if err == nil || !strings.Contains(err.Error(), "no container engine") {
		t.Fatalf("detached job: %v, want it to read the secret and then find no container engine", err)
	}
	// The secret is read before the engine is asked for: a missing one
	// is what such a job reports.
	o2 := o
	o2.Deployment = meadowrun.ContainerImage("registry.example/app", "v1", ec2.AwsSecret("no-such-secret"), nil)
	j2, err := meadowrun.SubmitCommand(t.Context(), []string{"true"}, meadowrun.Local(), &meadowrun.CommandOptions{Options: o2}, nil)
	if err == nil {
		_, err = j2.Wait(t.Context())
	}
	if err == nil || !strings.Contains(err.Error(), "no such AWS secret") {
		t.Fatalf("detached job with a missing secret: %v, want the missing secret named", err)
	}
	named := false
	for _, dir := range []string{state, o.LogDir} {
		filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
			if err != nil || e.IsDir() {
				return nil
			}
			b, _ := os.ReadFile(p)
			if strings.Contains(string(b), password) || strings.Contains(string(b), "u-detached") {
				t.Errorf("%s holds the secret's values", p)
			}
			named = named || strings.Contains(string(b), `"reg"`)
			return nil
		})
	}
	if !named {
		t.Errorf("no file of the journal names the secret")
	}
}
