package ec2host

import (
	"context"
	"fmt"
	"io"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/meadowrun-go/meadowrun/internal/ec2alloc"
)

// deregisterGone removes from the table the records of instances that
// no longer run (they terminated themselves when idle, were reclaimed or
// terminated by hand), whatever is booked on them, and returns the
// others.
func deregisterGone(ctx context.Context, api EC2API, t *ec2alloc.Table, recs []ec2alloc.Record, log io.Writer) ([]ec2alloc.Record, error) {
	states := map[string]types.InstanceStateName{}
	for i := 0; i < len(recs); i += 200 {
		var ids []string
		for _, r := range recs[i:min(i+200, len(recs))] {
			ids = append(ids, r.InstanceID)
		}
		// A filter, not InstanceIds: an id EC2 has forgotten is no error.
		p := ec2.NewDescribeInstancesPaginator(api, &ec2.DescribeInstancesInput{Filters: []types.Filter{{Name: aws.String("instance-id"), Values: ids}}})
		for p.HasMorePages() {
			out, err := p.NextPage(ctx)
			if err != nil {
				return nil, fmt.Errorf("ec2 host: the table's instances: %w", classify(err))
			}
			for _, r := range out.Reservations {
				for _, i := range r.Instances {
					if i.State != nil {
						states[aws.ToString(i.InstanceId)] = i.State.Name
					}
				}
			}
		}
	}
	var left []ec2alloc.Record
	for _, r := range recs {
		st, ok := states[r.InstanceID]
		if st == types.InstanceStateNameRunning || st == types.InstanceStateNamePending {
			left = append(left, r)
			continue
		}
		if err := t.Deregister(ctx, r.InstanceID); err != nil {
			left = append(left, r)
			continue
		}
		if log != nil {
			what := string(st)
			if !ok {
				what = "unknown to EC2"
			}
			fmt.Fprintf(log, "meadowrun: ec2 host: deregistered %s, which is %s\n", r.InstanceID, what)
		}
	}
	return left, nil
}
