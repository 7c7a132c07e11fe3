package ec2host

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/ec2alloc"
)

// capacityCodes are the RunInstances error codes that say this type,
// market or zone cannot be had now, or not under the account's quotas:
// another subnet, zone or type may still be launched.
var capacityCodes = []string{
	"InsufficientInstanceCapacity", "InsufficientHostCapacity", "InsufficientReservedInstanceCapacity",
	"InstanceLimitExceeded", "VcpuLimitExceeded", "MaxSpotInstanceCountExceeded", "SpotMaxPriceTooLow",
	"InsufficientFreeAddressesInSubnet", "InsufficientCapacityOnHost", "Unsupported",
}

// quotaCodes are the capacity codes that a quota increase cures.
var quotaCodes = []string{"InstanceLimitExceeded", "VcpuLimitExceeded", "MaxSpotInstanceCountExceeded"}

// code returns the AWS error code of err, "" when it has none.
func code(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// classify adds what to do to the AWS errors a user can fix.
func classify(err error) error {
	switch c := code(err); {
	case c == "AuthFailure" || c == "UnrecognizedClientException" || c == "InvalidClientTokenId" || c == "SignatureDoesNotMatch":
		return fmt.Errorf("AWS refused the credentials (check $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY, or the profile): %w", err)
	case c == "UnauthorizedOperation" || c == "AccessDenied" || c == "AccessDeniedException":
		return fmt.Errorf("the credentials may not do this (docs/ec2.md lists the permissions needed): %w", err)
	}
	return err
}

// attempt is one RunInstances that was refused.
type attempt struct {
	offer  ec2alloc.Offer
	subnet string
	err    error
}

func (a attempt) String() string {
	where := a.offer.Zone
	if a.subnet != "" {
		where += " (" + a.subnet + ")"
	}
	if where == "" {
		where = "the default subnet"
	}
	return fmt.Sprintf("%s %s in %s: %s", a.offer.Type.Name, a.offer.Market, where, code(a.err))
}

// launch launches the cheapest instance that holds a worker of r, with
// the worker wid booked on it, failing over to the next subnet, zone and
// type while AWS refuses for want of capacity or quota, and returns its
// id and address once it runs.
func (h *Host) launch(ctx context.Context, r driver.Resources, wid string) (id, addr string, err error) {
	if err := h.checkDisk(r); err != nil {
		return "", "", err
	}
	c, err := h.loadCatalog(ctx)
	if err != nil {
		return "", "", err
	}
	h.mu.Lock()
	n := 0
	for _, i := range h.instances {
		if i.spot.notice == nil { // an interrupted one is going
			n++
		}
	}
	h.mu.Unlock()
	if n >= h.opts.MaxInstances {
		return "", "", fmt.Errorf("ec2 host: %w: this host uses %d instances already (MaxInstances)", driver.ErrNoCapacity, n)
	}
	type offerKey struct {
		typ, zone string
		market    ec2alloc.Market
	}
	failed := map[offerKey]bool{}
	var tried []attempt
	req := h.request(r)
	req.Skip = func(o ec2alloc.Offer) bool { return failed[offerKey{o.Type.Name, o.Zone, o.Market}] }
	for {
		ch, err := ec2alloc.Choose(c, req)
		if err != nil {
			if len(tried) == 0 {
				return "", "", fmt.Errorf("ec2 host: a worker of %s %w: %w", r, driver.ErrNeverFits, err)
			}
			return "", "", h.launchError(r, tried)
		}
		o := ch.Instances[0].Offer
		subnets := h.subnetsIn(o.Zone)
		for _, s := range subnets {
			start := time.Now()
			vol, disk := h.rootVolume(o.Type, r)
			id, err := h.runInstance(ctx, o, s, vol)
			if err == nil {
				return h.registerRunning(ctx, id, o, r, wid, start, disk)
			}
			if !slices.Contains(capacityCodes, code(err)) {
				return "", "", fmt.Errorf("ec2 host: launching a %s instance: %w", o.Type.Name, classify(err))
			}
			tried = append(tried, attempt{o, s, err})
			fmt.Fprintf(h.opts.Log, "meadowrun: ec2 host: %s; trying the next\n", tried[len(tried)-1])
		}
		failed[offerKey{o.Type.Name, o.Zone, o.Market}] = true
	}
}

// subnetsIn returns the subnets of the host in zone, in their order; one
// "" (the default subnet of the zone) when the host names none.
func (h *Host) subnetsIn(zone string) []string {
	if len(h.opts.Subnets) == 0 {
		return []string{""}
	}
	var out []string
	for _, s := range h.opts.Subnets {
		if h.subnet[s] == zone || zone == "" {
			out = append(out, s)
		}
	}
	return out
}

func (h *Host) launchError(r driver.Resources, tried []attempt) error {
	var lines []string
	quota := false
	for _, a := range tried {
		lines = append(lines, a.String())
		quota = quota || slices.Contains(quotaCodes, code(a.err))
	}
	advice := "add subnets in other zones (Subnets), allow other instance types (InstanceTypes) or a higher MaxEvictionRate for spot, or try again later"
	if quota {
		advice = "ask AWS for a higher quota (Service Quotas, \"Running On-Demand ... instances\" or \"All ... Spot Instance Requests\"), or " + advice
	}
	return fmt.Errorf("ec2 host: %w for a worker of %s in %s: tried %s; %s: %w", ErrLaunch, r, h.opts.Region, strings.Join(lines, "; "), advice, tried[len(tried)-1].err)
}

// runInstance calls RunInstances for one instance of offer o in subnet s
// ("" for the zone's default subnet), with the root volume vol (nil for
// the image's).
func (h *Host) runInstance(ctx context.Context, o ec2alloc.Offer, s string, vol *types.BlockDeviceMapping) (string, error) {
	key, err := newHostKey()
	if err != nil {
		return "", err
	}
	in := &ec2.RunInstancesInput{
		ImageId: aws.String(h.opts.AMI), InstanceType: types.InstanceType(o.Type.Name),
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1), KeyName: aws.String(h.opts.KeyName),
		UserData: aws.String(base64.StdEncoding.EncodeToString([]byte(userData(key)))),
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeInstance, Tags: []types.Tag{
			{Key: aws.String("Name"), Value: aws.String("meadowrun-worker")},
			{Key: aws.String(TagManaged), Value: aws.String("true")},
			{Key: aws.String(TagHostKey), Value: aws.String(key.public)},
			{Key: aws.String(TagLaunchKey), Value: aws.String(h.key)},
		}}},
		InstanceInitiatedShutdownBehavior: types.ShutdownBehaviorTerminate,
	}
	if vol != nil {
		in.BlockDeviceMappings = []types.BlockDeviceMapping{*vol}
	}
	if len(h.opts.SecurityGroups) > 0 {
		in.SecurityGroupIds = h.opts.SecurityGroups
	}
	if s != "" {
		in.SubnetId = aws.String(s)
	} else if o.Zone != "" {
		in.Placement = &types.Placement{AvailabilityZone: aws.String(o.Zone)}
	}
	if h.opts.InstanceProfile != "" {
		in.IamInstanceProfile = &types.IamInstanceProfileSpecification{Name: aws.String(h.opts.InstanceProfile)}
	}
	if o.Market == ec2alloc.Spot {
		in.InstanceMarketOptions = &types.InstanceMarketOptionsRequest{MarketType: types.MarketTypeSpot,
			SpotOptions: &types.SpotMarketOptions{SpotInstanceType: types.SpotInstanceTypeOneTime,
				InstanceInterruptionBehavior: types.InstanceInterruptionBehaviorTerminate}}
	}
	out, err := h.opts.EC2.RunInstances(ctx, in)
	if err != nil {
		return "", err
	}
	if len(out.Instances) != 1 {
		return "", fmt.Errorf("RunInstances started %d instances, want 1", len(out.Instances))
	}
	return aws.ToString(out.Instances[0].InstanceId), nil
}

// registerRunning waits for the instance to run, registers it in the
// table with the worker booked and disk bytes of root volume for work,
// and returns its address.
func (h *Host) registerRunning(ctx context.Context, id string, o ec2alloc.Offer, r driver.Resources, wid string, start time.Time, disk int64) (string, string, error) {
	fail := func(err error) (string, string, error) {
		// Not left running for nothing.
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		h.opts.EC2.TerminateInstances(tctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}})
		return "", "", fmt.Errorf("ec2 host: instance %s: %w", id, err)
	}
	deadline := time.Now().Add(h.opts.BootTimeout)
	var addr string
	for {
		out, err := h.opts.EC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
		if err != nil && code(err) != "InvalidInstanceID.NotFound" {
			return fail(classify(err))
		}
		var inst *types.Instance
		if err == nil {
			for _, res := range out.Reservations {
				for i := range res.Instances {
					inst = &res.Instances[i]
				}
			}
		}
		if inst != nil && inst.State != nil {
			switch inst.State.Name {
			case types.InstanceStateNameRunning:
				addr = aws.ToString(inst.PublicIpAddress)
				if h.opts.PrivateAddress || addr == "" {
					addr = aws.ToString(inst.PrivateIpAddress)
				}
				if addr == "" {
					return fail(errors.New("running without an address"))
				}
			case types.InstanceStateNamePending:
			default:
				reason := ""
				if inst.StateReason != nil {
					reason = ": " + aws.ToString(inst.StateReason.Message)
				}
				return fail(fmt.Errorf("%s instead of running%s", inst.State.Name, reason))
			}
		}
		if addr != "" {
			break
		}
		if time.Now().After(deadline) {
			return fail(fmt.Errorf("not running within %v (BootTimeout)", h.opts.BootTimeout))
		}
		select {
		case <-ctx.Done():
			return fail(ctx.Err())
		case <-time.After(h.opts.PollInterval):
		}
	}
	per, ok := ec2alloc.WorkerCapacity(r, o.Type.GPUMemoryBytes)
	if !ok {
		return fail(fmt.Errorf("a worker of %s does not fit a %s", r, o.Type.Name))
	}
	rec := ec2alloc.NewRecord(id, addr, h.key, o)
	rec.Architecture = h.arch
	rec.DiskBytes = disk
	if err := h.table.Register(context.WithoutCancel(ctx), rec, []string{wid}, per); err != nil {
		return fail(err)
	}
	fmt.Fprintf(h.opts.Log, "meadowrun: ec2 host: launched %s, a %s %s instance in %s at %s ($%g/h), running and registered after %v\n",
		id, o.Type.Name, o.Market, o.Zone, addr, o.Price, time.Since(start).Round(time.Millisecond))
	return id, addr, nil
}

// sweepLoop terminates idle instances while the host is open.
func (h *Host) sweepLoop() {
	every := min(h.opts.IdleTimeout/2, time.Minute)
	for {
		select {
		case <-h.stopSweep:
			return
		case <-time.After(every):
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		TerminateIdle(ctx, h.opts.EC2, h.table, h.opts.IdleTimeout, h.opts.Log)
		cancel()
	}
}

// TerminateIdle terminates the instances of the table that have had no
// worker booked for idle, removing each from the table first (atomically
// with the check, so that a worker booked meanwhile keeps it). It
// returns the instances it terminated; log, when not nil, gets a line
// for each.
func TerminateIdle(ctx context.Context, api EC2API, t *ec2alloc.Table, idle time.Duration, log io.Writer) ([]string, error) {
	recs, err := t.List(ctx)
	if err != nil {
		return nil, err
	}
	recs, err = deregisterGone(ctx, api, t, recs, log)
	if err != nil {
		return nil, err
	}
	var done []string
	var errs []error
	for _, rec := range recs {
		if released, err := t.ReleaseExpired(ctx, rec, LeaseTTL(idle)); err != nil {
			errs = append(errs, err)
		} else if len(released) > 0 && log != nil {
			fmt.Fprintf(log, "meadowrun: ec2 host: released %d bookings on %s of clients that stopped renewing their lease\n", len(released), rec.InstanceID)
		}
		err := t.DeregisterIdle(ctx, rec.InstanceID, idle)
		if errors.Is(err, ec2alloc.ErrBusy) || errors.Is(err, ec2alloc.ErrNotRegistered) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if _, err := api.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{rec.InstanceID}}); err != nil && code(err) != "InvalidInstanceID.NotFound" {
			errs = append(errs, fmt.Errorf("ec2 host: terminating %s: %w", rec.InstanceID, classify(err)))
			continue
		}
		if log != nil {
			fmt.Fprintf(log, "meadowrun: ec2 host: terminated %s, idle for %v\n", rec.InstanceID, idle)
		}
		done = append(done, rec.InstanceID)
	}
	return done, errors.Join(errs...)
}
