package ec2

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	awsec2 "github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/meadowrun-go/meadowrun/internal/ec2alloc"
	"github.com/meadowrun-go/meadowrun/internal/ec2host"
)

// TerminateIdle terminates the instances of o's allocation table (in o's
// region, with o's credentials) that have had no worker booked for
// o.IdleTimeout (0 means 5 minutes), and returns their ids. Each is
// removed from the table before it is terminated, atomically with the
// check that it is idle, so that a worker another client books meanwhile
// keeps it. Open hosts do this by themselves every IdleTimeout/2 (at most
// every minute); this is for a program or a cron job to run when no host
// is open. Only the region, credentials, table and idle timeout of o are
// used.
func TerminateIdle(ctx context.Context, o AllocEC2Instance) ([]string, error) {
	cfg, err := awsConfig(o)
	if err != nil {
		return nil, fmt.Errorf("meadowrun: %w", err)
	}
	idle := o.IdleTimeout
	if idle <= 0 {
		idle = 5 * time.Minute
	}
	t := ec2alloc.NewTable(dynamodb.NewFromConfig(cfg), o.TableName)
	ids, err := ec2host.TerminateIdle(ctx, awsec2.NewFromConfig(cfg), t, idle, o.Log)
	if err != nil {
		return ids, fmt.Errorf("meadowrun: %w", err)
	}
	return ids, nil
}
