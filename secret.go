package meadowrun

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/meadowrun-go/meadowrun/driver"
)

// Secret names a username and password kept outside the program, for
// logging in to a container registry (the reference's
// username_password_secret). A Secret holds where the values are, never
// the values: they are read where the job is submitted, each time a job
// needs them, and are never logged or journaled. The zero value means no
// credentials.
//
// The local forms are SecretFromEnv and SecretFromFile; the cloud forms
// (AWS Secrets Manager, Azure Key Vault, Kubernetes Secrets) come with
// their hosts.
type Secret struct {
	kind string // "", "env", "file", or one of RegisterSecretKind
	a, b string // env: username and password variables; file: path; registered: name and where
}

// SecretFromEnv reads the username and the password from two environment
// variables of the process that submits the job.
func SecretFromEnv(usernameVar, passwordVar string) Secret {
	return Secret{kind: "env", a: usernameVar, b: passwordVar}
}

// SecretFromFile reads the username and the password from a JSON file
// {"username": "...", "password": "..."}, the layout of the reference's
// cloud secrets. Keep the file readable by its owner only.
func SecretFromFile(path string) Secret {
	return Secret{kind: "file", a: path}
}

// IsZero reports whether s names no credentials.
func (s Secret) IsZero() bool { return s.kind == "" }

// String says where the secret is, never what it holds.
func (s Secret) String() string {
	switch s.kind {
	case "env":
		return fmt.Sprintf("the environment variables %s and %s", s.a, s.b)
	case "file":
		return "the file " + s.a
	case "":
		return "no secret"
	}
	d, _, err := s.registered(context.Background(), true)
	if err != nil {
		return "a secret of kind " + s.kind + " named " + s.a
	}
	return d
}

// resolve reads the secret's values.
func (s Secret) resolve(ctx context.Context) (*driver.Credentials, error) {
	switch s.kind {
	case "":
		return nil, nil
	case "env":
		u, okU := os.LookupEnv(s.a)
		p, okP := os.LookupEnv(s.b)
		if !okU || !okP {
			return nil, fmt.Errorf("%w: the secret in %s: set both variables", ErrInvalidOptions, s)
		}
		return &driver.Credentials{Username: u, Password: p}, nil
	case "file":
		b, err := os.ReadFile(s.a)
		if err != nil {
			return nil, fmt.Errorf("%w: reading the secret in %s: %w", ErrInvalidOptions, s, err)
		}
		var v struct {
			Username *string `json:"username"`
			Password *string `json:"password"`
		}
		if err := json.Unmarshal(b, &v); err != nil || v.Username == nil || v.Password == nil {
			// The file's content is not quoted: it may be the secret.
			return nil, fmt.Errorf("%w: the secret in %s is not a JSON object with \"username\" and \"password\" strings", ErrInvalidOptions, s)
		}
		return &driver.Credentials{Username: *v.Username, Password: *v.Password}, nil
	}
	u, p, err := s.registered(ctx, false)
	if err != nil {
		return nil, err
	}
	return &driver.Credentials{Username: u, Password: p}, nil
}

// secretJSON is a secret's reference as journaled (never its values).
type secretJSON struct {
	Kind string `json:"kind"`
	A    string `json:"a,omitempty"`
	B    string `json:"b,omitempty"`
}

// MarshalJSON writes where the secret is, never what it holds.
func (s Secret) MarshalJSON() ([]byte, error) {
	if s.kind == "" {
		return []byte("null"), nil
	}
	return json.Marshal(secretJSON{Kind: s.kind, A: s.a, B: s.b})
}

// UnmarshalJSON reads what MarshalJSON wrote.
func (s *Secret) UnmarshalJSON(b []byte) error {
	if strings.TrimSpace(string(b)) == "null" {
		*s = Secret{}
		return nil
	}
	var v secretJSON
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*s = Secret{kind: v.Kind, a: v.A, b: v.B}
	return nil
}
