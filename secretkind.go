package meadowrun

import (
	"context"
	"fmt"
	"sync"
)

// SecretResolver reads the username and password of a secret of a kind
// a host package registers (RegisterSecretKind): name and where are what
// NewSecret was given. Its errors must not contain the values.
type SecretResolver func(ctx context.Context, name, where string) (username, password string, err error)

var secretKinds sync.Map // kind → secretKind

type secretKind struct {
	resolve  SecretResolver
	describe func(name, where string) string
}

// RegisterSecretKind makes secrets of kind (NewSecret) readable by
// resolve and described by describe (which says where the secret is,
// never what it holds), for host packages whose secrets live in their
// cloud (package ec2's AwsSecret). It panics when kind is taken.
func RegisterSecretKind(kind string, resolve SecretResolver, describe func(name, where string) string) {
	if kind == "" || kind == "env" || kind == "file" {
		panic("meadowrun: RegisterSecretKind: reserved kind " + kind)
	}
	if _, dup := secretKinds.LoadOrStore(kind, secretKind{resolve, describe}); dup {
		panic("meadowrun: RegisterSecretKind: kind " + kind + " registered twice")
	}
}

// NewSecret returns a secret of a registered kind: the secret's name and
// where it is kept (a region, a vault), never its values.
func NewSecret(kind, name, where string) Secret {
	return Secret{kind: kind, a: name, b: where}
}

// registered resolves or describes a secret of a registered kind.
func (s Secret) registered(ctx context.Context, describe bool) (string, string, error) {
	v, ok := secretKinds.Load(s.kind)
	if !ok {
		return "", "", fmt.Errorf("%w: secrets of kind %q need their package imported (package ec2 for AwsSecret)", ErrInvalidOptions, s.kind)
	}
	k := v.(secretKind)
	if describe {
		return k.describe(s.a, s.b), "", nil
	}
	return k.resolve(ctx, s.a, s.b)
}
