package ec2host

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/meadowrun-go/meadowrun/driver"
)

// A job's ports are opened in a security group of its own, made for the
// worker and attached to its instance while it runs, then detached and
// deleted. The group carries an expiry (TagPortsExpire), pushed forward
// while the worker runs; a group whose expiry has passed belongs to a
// client that died, and is detached and deleted by the next sweep of any
// open host and by `meadowrun ec2 clean`.
const (
	// TagPortsExpire holds a port group's expiry (RFC 3339).
	TagPortsExpire = "meadowrun:ports-expire"
	// TagPortsInstance holds the instance a port group is attached to.
	TagPortsInstance = "meadowrun:ports-instance"
	// PortsTTL is how far ahead a running worker's port group expires;
	// it is renewed every PortsTTL/4.
	PortsTTL = 10 * time.Minute
)

// PortsAPI is the part of the EC2 client that opens and closes ports;
// *ec2.Client implements it.
type PortsAPI interface {
	ec2.DescribeInstancesAPIClient
	ec2.DescribeSecurityGroupsAPIClient
	ec2.DescribeVpcsAPIClient
	CreateSecurityGroup(context.Context, *ec2.CreateSecurityGroupInput, ...func(*ec2.Options)) (*ec2.CreateSecurityGroupOutput, error)
	DeleteSecurityGroup(context.Context, *ec2.DeleteSecurityGroupInput, ...func(*ec2.Options)) (*ec2.DeleteSecurityGroupOutput, error)
	AuthorizeSecurityGroupIngress(context.Context, *ec2.AuthorizeSecurityGroupIngressInput, ...func(*ec2.Options)) (*ec2.AuthorizeSecurityGroupIngressOutput, error)
	ModifyInstanceAttribute(context.Context, *ec2.ModifyInstanceAttributeInput, ...func(*ec2.Options)) (*ec2.ModifyInstanceAttributeOutput, error)
	CreateTags(context.Context, *ec2.CreateTagsInput, ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error)
}

// PortGroup is a security group opened for one worker.
type PortGroup struct {
	api      PortsAPI
	ID       string
	Instance string
	stop     chan struct{}
	once     sync.Once
	done     chan struct{}
}

// parsePorts reads "N" and "N-M".
func parsePorts(specs []string) ([][2]int32, error) {
	var out [][2]int32
	for _, s := range specs {
		a, b, rng := strings.Cut(s, "-")
		lo, err1 := strconv.Atoi(strings.TrimSpace(a))
		hi := lo
		var err2 error
		if rng {
			hi, err2 = strconv.Atoi(strings.TrimSpace(b))
		}
		if err1 != nil || err2 != nil || lo < 1 || hi > 65535 || lo > hi {
			return nil, fmt.Errorf("ec2 host: invalid port %q: want N or N-M, 1 to 65535", s)
		}
		out = append(out, [2]int32{int32(lo), int32(hi)})
	}
	return out, nil
}

// OpenPorts makes a security group named name in the instance's VPC that
// lets from (CIDR ranges; none means the VPC's own range) reach ports
// (as "N" or "N-M", TCP), tagged to expire after ttl, and attaches it to
// the instance. Close undoes it; until then its expiry is renewed every
// ttl/4.
func OpenPorts(ctx context.Context, api PortsAPI, instance, name string, ports, from []string, ttl time.Duration) (*PortGroup, error) {
	rs, err := parsePorts(ports)
	if err != nil {
		return nil, err
	}
	out, err := api.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{instance}})
	if err != nil {
		return nil, fmt.Errorf("ec2 host: opening ports %s: reading instance %s: %w", strings.Join(ports, ","), instance, classify(err))
	}
	if len(out.Reservations) == 0 || len(out.Reservations[0].Instances) == 0 {
		return nil, fmt.Errorf("ec2 host: opening ports: instance %s not found", instance)
	}
	inst := out.Reservations[0].Instances[0]
	vpc := aws.ToString(inst.VpcId)
	var groups []string
	for _, g := range inst.SecurityGroups {
		groups = append(groups, aws.ToString(g.GroupId))
	}
	if len(from) == 0 {
		v, err := api.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{VpcIds: []string{vpc}})
		if err != nil || len(v.Vpcs) == 0 {
			return nil, fmt.Errorf("ec2 host: opening ports: reading VPC %s: %w", vpc, classify(err))
		}
		from = []string{aws.ToString(v.Vpcs[0].CidrBlock)}
	}
	g, err := api.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String(name), VpcId: aws.String(vpc),
		Description: aws.String("meadowrun: ports " + strings.Join(ports, ",") + " of one job"),
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeSecurityGroup, Tags: []types.Tag{
			{Key: aws.String(TagManaged), Value: aws.String("true")},
			{Key: aws.String(TagPortsInstance), Value: aws.String(instance)},
			{Key: aws.String(TagPortsExpire), Value: aws.String(time.Now().Add(ttl).UTC().Format(time.RFC3339))}}}}})
	if err != nil {
		return nil, fmt.Errorf("ec2 host: opening ports: creating security group %s: %w", name, classify(err))
	}
	pg := &PortGroup{api: api, ID: aws.ToString(g.GroupId), Instance: instance, stop: make(chan struct{}), done: make(chan struct{})}
	var perms []types.IpPermission
	for _, r := range rs {
		var ranges []types.IpRange
		for _, c := range from {
			ranges = append(ranges, types.IpRange{CidrIp: aws.String(c), Description: aws.String("meadowrun job")})
		}
		perms = append(perms, types.IpPermission{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(r[0]), ToPort: aws.Int32(r[1]), IpRanges: ranges})
	}
	if _, err := api.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(pg.ID), IpPermissions: perms}); err != nil {
		deleteGroup(context.WithoutCancel(ctx), api, pg.ID)
		return nil, fmt.Errorf("ec2 host: opening ports %s in %s: %w", strings.Join(ports, ","), pg.ID, classify(err))
	}
	if _, err := api.ModifyInstanceAttribute(ctx, &ec2.ModifyInstanceAttributeInput{InstanceId: aws.String(instance), Groups: append(groups, pg.ID)}); err != nil {
		deleteGroup(context.WithoutCancel(ctx), api, pg.ID)
		return nil, fmt.Errorf("ec2 host: attaching port group %s to %s: %w", pg.ID, instance, classify(err))
	}
	go pg.renew(ttl)
	return pg, nil
}

func (pg *PortGroup) renew(ttl time.Duration) {
	defer close(pg.done)
	for {
		select {
		case <-pg.stop:
			return
		case <-time.After(ttl / 4):
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		pg.api.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{pg.ID},
			Tags: []types.Tag{{Key: aws.String(TagPortsExpire), Value: aws.String(time.Now().Add(ttl).UTC().Format(time.RFC3339))}}})
		cancel()
	}
}

// Abandon stops renewing the group's expiry without closing it, as a
// client that dies does: a sweep removes the group once it has expired.
func (pg *PortGroup) Abandon() {
	pg.once.Do(func() { close(pg.stop) })
	<-pg.done
}

// Close detaches the group from its instance and deletes it.
func (pg *PortGroup) Close(ctx context.Context) error {
	pg.once.Do(func() { close(pg.stop) })
	<-pg.done
	return closeGroup(ctx, pg.api, pg.ID, pg.Instance)
}

// closeGroup detaches group from the instance it was opened for (when
// known) and from any other that has it, then deletes it.
func closeGroup(ctx context.Context, api PortsAPI, group, instance string) error {
	in := &ec2.DescribeInstancesInput{Filters: []types.Filter{{Name: aws.String("instance.group-id"), Values: []string{group}}}}
	if instance != "" {
		in = &ec2.DescribeInstancesInput{InstanceIds: []string{instance}}
	}
	out, err := api.DescribeInstances(ctx, in)
	if err != nil && code(err) != "InvalidInstanceID.NotFound" {
		return fmt.Errorf("ec2 host: closing ports: reading the instances of %s: %w", group, classify(err))
	}
	if out != nil {
		for _, r := range out.Reservations {
			for _, i := range r.Instances {
				if i.State != nil && i.State.Name == types.InstanceStateNameTerminated {
					continue
				}
				var keep []string
				has := false
				for _, g := range i.SecurityGroups {
					if aws.ToString(g.GroupId) == group {
						has = true
					} else {
						keep = append(keep, aws.ToString(g.GroupId))
					}
				}
				if !has || len(keep) == 0 {
					continue
				}
				if _, err := api.ModifyInstanceAttribute(ctx, &ec2.ModifyInstanceAttributeInput{InstanceId: i.InstanceId, Groups: keep}); err != nil &&
					code(err) != "InvalidInstanceID.NotFound" {
					return fmt.Errorf("ec2 host: closing ports: detaching %s from %s: %w", group, aws.ToString(i.InstanceId), classify(err))
				}
			}
		}
	}
	return deleteGroup(ctx, api, group)
}

func deleteGroup(ctx context.Context, api PortsAPI, group string) error {
	for try := 0; ; try++ {
		_, err := api.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: aws.String(group)})
		switch c := code(err); {
		case err == nil || c == "InvalidGroup.NotFound":
			return nil
		case c != "DependencyViolation" || try >= 10:
			return fmt.Errorf("ec2 host: closing ports: deleting security group %s: %w", group, classify(err))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// SweepPortGroups detaches and deletes the port groups whose expiry is
// before now (those of clients that died), and returns their ids.
func SweepPortGroups(ctx context.Context, api PortsAPI, now time.Time, log io.Writer) ([]string, error) {
	out, err := api.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []types.Filter{
		{Name: aws.String("tag-key"), Values: []string{TagPortsExpire}}}})
	if err != nil {
		return nil, fmt.Errorf("ec2 host: listing port groups: %w", classify(err))
	}
	var done []string
	var errs []error
	for _, g := range out.SecurityGroups {
		exp, inst := time.Time{}, ""
		for _, t := range g.Tags {
			switch aws.ToString(t.Key) {
			case TagPortsExpire:
				exp, _ = time.Parse(time.RFC3339, aws.ToString(t.Value))
			case TagPortsInstance:
				inst = aws.ToString(t.Value)
			}
		}
		if !exp.IsZero() && exp.After(now) {
			continue
		}
		id := aws.ToString(g.GroupId)
		if err := closeGroup(ctx, api, id, inst); err != nil {
			errs = append(errs, err)
			continue
		}
		if log != nil {
			fmt.Fprintf(log, "meadowrun: ec2 host: closed ports of a job that ended without closing them (security group %s, expired %s)\n", id, exp.Format(time.RFC3339))
		}
		done = append(done, id)
	}
	return done, errors.Join(errs...)
}

// openPorts opens spec's ports for worker wid on instance id, when it
// has any: nil and no error when not.
func (h *Host) openPorts(ctx context.Context, id, wid string, ports []string) (*PortGroup, error) {
	if len(ports) == 0 {
		return nil, nil
	}
	api, ok := h.opts.EC2.(PortsAPI)
	if !ok {
		return nil, fmt.Errorf("ec2 host: ports are %w by this EC2 client", driver.ErrUnsupported)
	}
	return OpenPorts(ctx, api, id, "meadowrun-ports-"+wid, ports, h.opts.PortsFrom, PortsTTL)
}

// closePortsAfter closes pg once w has ended.
func (h *Host) closePortsAfter(w driver.Worker, pg *PortGroup) {
	if pg == nil {
		return
	}
	h.releases.Add(1)
	go func() {
		defer h.releases.Done()
		<-w.Done()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := pg.Close(ctx); err != nil {
			fmt.Fprintf(h.opts.Log, "meadowrun: %v (it expires by itself: `meadowrun ec2 clean` or the next sweep removes it)\n", err)
		}
	}()
}

// portSweepLoop removes expired port groups every PortsTTL/2 while the
// host is open.
func (h *Host) portSweepLoop() {
	api, ok := h.opts.EC2.(PortsAPI)
	if !ok {
		return
	}
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		SweepPortGroups(ctx, api, time.Now(), h.opts.Log)
		cancel()
		select {
		case <-h.stopSweep:
			return
		case <-time.After(PortsTTL / 2):
		}
	}
}
