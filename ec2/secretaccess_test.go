package ec2_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/ec2"
	"github.com/meadowrun-go/meadowrun/internal/localhost"
)

// A secret the credentials may not read is ErrSecretAccess, naming the
// secret, the permission and what to do; credentials allowed to read it
// get its values. moto enforces IAM here (mototest.EnforceIAM): requests
// are signed with the keys of IAM users it holds and their identity
// policies are evaluated, by action only (moto authorizes Secrets
// Manager requests against the resource "*", and does not evaluate
// resource policies), so the users' policies name "*".
func TestAwsSecretAccessDenied(t *testing.T) {
	m, cfg := motoEnv(t)
	ctx := t.Context()
	const password = "iam-pa55-7c1b"
	sm := secretsmanager.NewFromConfig(cfg)
	if _, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String("reg"),
		SecretString: aws.String(`{"username":"u-iam","password":"` + password + `"}`)}); err != nil {
		t.Fatal(err)
	}
	ic := iam.NewFromConfig(cfg)
	user := func(name, policy string) (string, string) {
		t.Helper()
		if _, err := ic.CreateUser(ctx, &iam.CreateUserInput{UserName: aws.String(name)}); err != nil {
			t.Fatal(err)
		}
		if _, err := ic.PutUserPolicy(ctx, &iam.PutUserPolicyInput{UserName: aws.String(name), PolicyName: aws.String("p"), PolicyDocument: aws.String(policy)}); err != nil {
			t.Fatal(err)
		}
		k, err := ic.CreateAccessKey(ctx, &iam.CreateAccessKeyInput{UserName: aws.String(name)})
		if err != nil {
			t.Fatal(err)
		}
		return aws.ToString(k.AccessKey.AccessKeyId), aws.ToString(k.AccessKey.SecretAccessKey)
	}
	doc := func(stmts ...string) string {
		return `{"Version":"2012-10-17","Statement":[` + strings.Join(stmts, ",") + `]}`
	}
	lacking := [2]string{}
	lacking[0], lacking[1] = user("lacks-get", doc(`{"Effect":"Allow","Action":["secretsmanager:DescribeSecret","secretsmanager:ListSecrets"],"Resource":"*"}`))
	denied := [2]string{}
	denied[0], denied[1] = user("denied-get", doc(`{"Effect":"Allow","Action":"secretsmanager:*","Resource":"*"}`,
		`{"Effect":"Deny","Action":"secretsmanager:GetSecretValue","Resource":"*"}`))
	allowed := [2]string{}
	allowed[0], allowed[1] = user("reader", doc(`{"Effect":"Allow","Action":["secretsmanager:GetSecretValue","secretsmanager:DescribeSecret"],"Resource":"*"}`))
	if err := m.EnforceIAM(ctx, 0); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_ENDPOINT_URL", m.AWSErrors(t))

	lh, err := localhost.New(ctx, localhost.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rec := &loginHost{Host: lh}
	h := meadowrun.NewHost(rec, meadowrun.HostOptions{})
	defer h.Close()
	o := meadowrun.Options{Deployment: meadowrun.ContainerImage("registry.example/app", "v1", ec2.AwsSecret("reg"), nil), LogDir: t.TempDir()}
	as := func(key [2]string) error {
		t.Setenv("AWS_ACCESS_KEY_ID", key[0])
		t.Setenv("AWS_SECRET_ACCESS_KEY", key[1])
		_, err := meadowrun.RunCommand(ctx, []string{"true"}, h, &meadowrun.CommandOptions{Options: o})
		return err
	}
	for name, key := range map[string][2]string{"lacks-get": lacking, "denied-get": denied} {
		err := as(key)
		t.Logf("%s: %v", name, err)
		if !errors.Is(err, ec2.ErrSecretAccess) || !errors.Is(err, meadowrun.ErrInvalidOptions) {
			t.Errorf("user %s: error = %v, want ErrSecretAccess", name, err)
			continue
		}
		for _, want := range []string{`"reg"`, "secretsmanager:GetSecretValue", "meadowrun ec2 grant-permission-to-secret reg", name} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("user %s: error %q does not say %q", name, err, want)
			}
		}
		if strings.Contains(err.Error(), password) {
			t.Errorf("user %s: the error shows the value", name)
		}
	}
	// The key pair's private key read from a secret (key_secret=): the
	// same error from NewHost.
	t.Setenv("AWS_ACCESS_KEY_ID", lacking[0])
	t.Setenv("AWS_SECRET_ACCESS_KEY", lacking[1])
	if _, err := ec2.NewHost(ctx, ec2.AllocEC2Instance{Region: "us-east-1", AMI: "ami-1", KeyName: "k", KeySecret: "reg"}); !errors.Is(err, ec2.ErrSecretAccess) || !strings.Contains(err.Error(), "grant-permission-to-secret reg") {
		t.Errorf("NewHost with key_secret the user may not read: %v, want ErrSecretAccess", err)
	}
	if err := as(allowed); err != nil {
		t.Fatalf("user reader: %v", err)
	}
	rec.mu.Lock()
	got := rec.creds
	rec.mu.Unlock()
	if len(got) != 1 || got[0] == nil || got[0].Password != password {
		t.Fatalf("the host got credentials %v, want the secret's once", got)
	}
	// Keys moto does not know are not a permission problem.
	err = as([2]string{"testing", "testing"})
	t.Logf("unknown key: %v", err)
	if !errors.Is(err, ec2.ErrCredentialsRejected) || errors.Is(err, ec2.ErrSecretAccess) || !strings.Contains(err.Error(), "$AWS_ACCESS_KEY_ID") {
		t.Errorf("unknown access key: error = %v, want a credentials error", err)
	}
}
