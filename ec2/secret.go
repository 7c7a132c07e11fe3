package ec2

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	smtypes "github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"

	"github.com/meadowrun-go/meadowrun"
)

// ErrSecretNotFound is wrapped when a Secrets Manager secret does not
// exist (or is scheduled for deletion).
var ErrSecretNotFound = errors.New("no such AWS secret")

// ErrSecretAccess is wrapped when the credentials may not read a
// secret.
var ErrSecretAccess = errors.New("AWS secret may not be read")

// ErrCredentialsRejected is wrapped when AWS does not accept the
// credentials themselves (an unknown or expired access key, a wrong
// secret key).
var ErrCredentialsRejected = errors.New("AWS credentials not accepted")

// AwsSecret is the reference's AwsSecret: a username and password kept in
// AWS Secrets Manager as the JSON object {"username": "...", "password":
// "..."}, for logging in to a container registry
// (meadowrun.ContainerImage's creds). The secret is read with the
// environment's credentials ($AWS_ACCESS_KEY_ID, ...), in $AWS_REGION,
// where the job is submitted, each time a job needs it; its values are
// never logged nor journaled (the journal holds the secret's name).
func AwsSecret(name string) meadowrun.Secret { return AwsSecretIn("", name) }

// AwsSecretIn is AwsSecret in the given region ("" means $AWS_REGION).
func AwsSecretIn(region, name string) meadowrun.Secret {
	return meadowrun.NewSecret("aws", name, region)
}

func init() {
	meadowrun.RegisterSecretKind("aws", resolveAwsSecret, func(name, region string) string {
		if region == "" {
			return "the AWS secret " + name
		}
		return "the AWS secret " + name + " in " + region
	})
}

func resolveAwsSecret(ctx context.Context, name, region string) (string, string, error) {
	cfg, err := awsConfig(AllocEC2Instance{Region: region})
	if err != nil {
		return "", "", fmt.Errorf("%w: reading the AWS secret %s: %w", meadowrun.ErrInvalidOptions, name, err)
	}
	v, err := getSecret(ctx, secretsmanager.NewFromConfig(cfg), name)
	if err != nil {
		return "", "", fmt.Errorf("%w: %w", meadowrun.ErrInvalidOptions, err)
	}
	var up struct {
		Username *string `json:"username"`
		Password *string `json:"password"`
	}
	if err := json.Unmarshal([]byte(v), &up); err != nil || up.Username == nil || up.Password == nil {
		// The value is not quoted: it is the secret.
		return "", "", fmt.Errorf("%w: the AWS secret %s is not a JSON object with \"username\" and \"password\" strings", meadowrun.ErrInvalidOptions, name)
	}
	return *up.Username, *up.Password, nil
}

// SecretsAPI is the part of the Secrets Manager client that reads
// secrets.
type SecretsAPI interface {
	GetSecretValue(context.Context, *secretsmanager.GetSecretValueInput, ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error)
}

// getSecret reads a secret's string value.
func getSecret(ctx context.Context, sm SecretsAPI, name string) (string, error) {
	out, err := sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(name)})
	if err != nil {
		var nf *smtypes.ResourceNotFoundException
		var inv *smtypes.InvalidRequestException
		switch {
		case errors.As(err, &nf):
			return "", fmt.Errorf("%w: %q (Secrets Manager): create it, or check its name and region", ErrSecretNotFound, name)
		case errors.As(err, &inv):
			return "", fmt.Errorf("%w: %q (Secrets Manager) is scheduled for deletion: restore it (aws secretsmanager restore-secret)", ErrSecretNotFound, name)
		}
		switch apiCode(err) {
		case "AccessDeniedException", "AccessDenied":
			return "", fmt.Errorf("%w: %q: the credentials lack secretsmanager:GetSecretValue on it (and kms:Decrypt on its key, when it is encrypted with a key of your own): "+
				"give their user or role an IAM policy that allows secretsmanager:GetSecretValue on the secret's ARN "+
				"(for the instances' role, `meadowrun ec2 grant-permission-to-secret %s`), or use credentials that may read it: %w", ErrSecretAccess, name, name, err)
		case "UnrecognizedClientException", "InvalidClientTokenId", "InvalidSignatureException", "SignatureDoesNotMatch", "ExpiredTokenException", "ExpiredToken":
			return "", fmt.Errorf("%w: reading the AWS secret %q: check $AWS_ACCESS_KEY_ID, $AWS_SECRET_ACCESS_KEY and $AWS_SESSION_TOKEN (or renew them): %w", ErrCredentialsRejected, name, err)
		}
		return "", fmt.Errorf("reading the AWS secret %q: %w", name, err)
	}
	if out.SecretString == nil {
		if out.SecretBinary != nil {
			return string(out.SecretBinary), nil
		}
		return "", fmt.Errorf("the AWS secret %q has no value", name)
	}
	return *out.SecretString, nil
}

// keyFromSecret reads the private key in secret name and writes it,
// readable by its owner only, to a file of this user's cache, whose path
// it returns.
func keyFromSecret(ctx context.Context, cfg aws.Config, name string) (string, error) {
	v, err := getSecret(ctx, secretsmanager.NewFromConfig(cfg), name)
	if err != nil {
		return "", fmt.Errorf("ec2: the private key of the key pair (key_secret): %w", err)
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	sum := sha256.Sum256([]byte(cfg.Region + "\x00" + aws.ToString(cfg.BaseEndpoint) + "\x00" + name))
	path := filepath.Join(dir, "meadowrun", "ec2", "keys", hex.EncodeToString(sum[:8])+".pem")
	if err := writePrivate(path, []byte(v)); err != nil {
		return "", fmt.Errorf("ec2: writing the private key of secret %s: %w", name, err)
	}
	return path, nil
}
