// Package ec2host is the EC2 driver behind package ec2: workers run on EC2
// instances that it launches or reuses, and reaches over SSH with the
// machinery of SSH hosts (package sshhost: the agent, program shipping,
// lost machines).
//
// A worker is first booked, through internal/ec2alloc's allocation table
// in DynamoDB, on a running instance of the same launch settings that has
// room, of this process or another. When none has, the cheapest instance
// type that holds the worker is launched (RunInstances with the key pair,
// a user data that gives the instance the SSH host key this process
// trusts, and tags), in the first subnet of its zone; when AWS has no
// capacity or the account no quota for it, the next subnet, zone or type
// is tried, and the error names every attempt when none is left. The
// instance is registered in the table with the worker booked, and the
// worker starts once its agent answers over SSH.
package ec2host

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/agentclient"
	"github.com/meadowrun-go/meadowrun/internal/agentproto"
	"github.com/meadowrun-go/meadowrun/internal/ec2alloc"
	"github.com/meadowrun-go/meadowrun/internal/sshhost"
	"github.com/meadowrun-go/meadowrun/internal/tracepoint"
)

// EC2API is the part of the EC2 client the host calls; *ec2.Client
// implements it.
type EC2API interface {
	ec2alloc.EC2API
	ec2.DescribeInstancesAPIClient
	ec2.DescribeImagesAPIClient
	ec2.DescribeSubnetsAPIClient
	ec2.DescribeSecurityGroupsAPIClient
	DescribeRegions(context.Context, *ec2.DescribeRegionsInput, ...func(*ec2.Options)) (*ec2.DescribeRegionsOutput, error)
	DescribeKeyPairs(context.Context, *ec2.DescribeKeyPairsInput, ...func(*ec2.Options)) (*ec2.DescribeKeyPairsOutput, error)
	RunInstances(context.Context, *ec2.RunInstancesInput, ...func(*ec2.Options)) (*ec2.RunInstancesOutput, error)
	TerminateInstances(context.Context, *ec2.TerminateInstancesInput, ...func(*ec2.Options)) (*ec2.TerminateInstancesOutput, error)
}

// Options configure New; package ec2's AllocEC2Instance documents them.
type Options struct {
	Region          string
	AMI             string
	Subnets         []string
	SecurityGroups  []string
	InstanceProfile string
	KeyName         string
	KeyFile         string
	User            string
	PrivateAddress  bool
	InstanceTypes   []string
	MaxInstances    int
	IdleTimeout     time.Duration
	BootTimeout     time.Duration
	TableName       string
	SpotAdvisor     []byte
	Binaries        map[string]string
	Log             io.Writer
	// PortsFrom are the address ranges a job's ports are opened to;
	// none means the instance's VPC.
	PortsFrom []string

	EC2      EC2API
	DynamoDB ec2alloc.DynamoDBAPI
	Pricing  ec2alloc.PricingAPI
	// CatalogKey names where the catalog comes from (region, endpoints,
	// spot advisor data): catalogs are cached by it. "" means Region.
	CatalogKey string
	// CacheDir keeps catalogs between processes; "" keeps them in this
	// process only.
	CacheDir string
	// PollInterval is how often an instance's state is read while it
	// boots; 0 means 1 s.
	PollInterval time.Duration
	// Instance-side settings (spot.go): OnDemandAfterInterruption,
	// IMDS, IMDSPoll, NoInstanceShutdown.
	InstanceOptions
}

// listRegion is the region asked for the list of regions.
const listRegion = "us-east-1"

// ErrLaunch is wrapped when no instance could be launched: every subnet,
// zone and type that fits was refused for want of capacity or quota.
var ErrLaunch = errors.New("no instance could be launched")

// Tag keys on the instances the host launches.
const (
	TagManaged   = "meadowrun:managed"
	TagHostKey   = "meadowrun:host-key"
	TagLaunchKey = "meadowrun:launch-key"
)

// Host is the EC2 driver.Host.
type Host struct {
	opts   Options
	arch   string // the AMI's
	root   rootImage
	zones  []string // of the subnets, in their order
	subnet map[string]string
	key    string // launch key
	table  *ec2alloc.Table
	progs  *agentclient.Programs
	dir    string // known_hosts files
	sess   string

	catMu   sync.Mutex
	catalog *ec2alloc.Catalog

	launchMu sync.Mutex

	mu        sync.Mutex
	closed    bool
	n         int // workers started
	instances map[string]*instance
	releases  sync.WaitGroup
	stopSweep chan struct{}
	spot      spotState

	// A new client on a warm instance (warm.go).
	warm      warmState     // the cache directory's, guarded by mu
	pre       *instance     // logged in to before the first booking, guarded by mu
	checked   chan struct{} // closed once the background checks are done; nil: none
	checkErr  error         // theirs
	checkOnce sync.Once     // starts them
}

// instance is an instance this process has booked workers on.
type instance struct {
	id, addr string
	ready    chan struct{} // closed once agent or err is set
	launched bool          // by this host
	agent    *sshhost.Host
	err      error
	workers  int
	spot     instanceSpot
	cost     instanceCost
	pre      bool // logged in to before any booking: one try (warm.go)
}

// New checks the options against the region (its name, the AMI, subnets,
// security groups and key pair exist) and prepares the host; instances
// are launched when work runs.
func New(ctx context.Context, opts Options) (*Host, error) {
	if opts.Region == "" {
		return nil, errors.New("ec2 host: no region: give Region (region in the URL), or set $AWS_REGION")
	}
	if opts.AMI == "" {
		return nil, errors.New("ec2 host: no AMI: give the image to launch instances of (AMI, ami= in the URL)")
	}
	if opts.KeyName == "" || opts.KeyFile == "" {
		return nil, errors.New("ec2 host: give the key pair instances are launched with (KeyName) and its private key (KeyFile)")
	}
	if opts.User == "" {
		opts.User = "ubuntu"
	}
	if opts.MaxInstances <= 0 {
		opts.MaxInstances = 8
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 5 * time.Minute
	}
	if opts.BootTimeout <= 0 {
		opts.BootTimeout = 5 * time.Minute
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = time.Second
	}
	if opts.Log == nil {
		opts.Log = os.Stderr
	}
	h := &Host{opts: opts, subnet: map[string]string{}, instances: map[string]*instance{}, stopSweep: make(chan struct{})}
	sum := sha256.Sum256([]byte(strings.Join([]string{opts.AMI, strings.Join(opts.Subnets, ","), strings.Join(opts.SecurityGroups, ","),
		opts.InstanceProfile, opts.KeyName, opts.User}, "\x00")))
	h.key = hex.EncodeToString(sum[:8])
	h.table = ec2alloc.NewTable(opts.DynamoDB, opts.TableName)
	warm, isWarm := h.loadWarm()
	if !isWarm {
		tracepoint.Mark("ec2host: checking the options")
		if err := h.check(ctx); err != nil {
			return nil, err
		}
		tracepoint.Mark("ec2host: options checked")
		if err := h.table.Create(ctx); err != nil {
			return nil, fmt.Errorf("ec2 host: %w", err)
		}
		tracepoint.Mark("ec2host: table there")
		h.warm = h.checkedState()
		h.saveWarm(h.warm)
	} else if _, err := os.Stat(opts.KeyFile); err != nil {
		return nil, fmt.Errorf("ec2 host: the private key of key pair %s: %w", opts.KeyName, err)
	}
	b := make([]byte, 6)
	rand.Read(b)
	host, _ := os.Hostname()
	h.sess = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b))
	var err error
	if h.dir, err = os.MkdirTemp("", "meadowrun-ec2-"); err != nil {
		return nil, fmt.Errorf("ec2 host: %w", err)
	}
	if h.progs, err = agentclient.NewPrograms("ec2 host", "", opts.Binaries); err != nil {
		os.RemoveAll(h.dir)
		return nil, err
	}
	tracepoint.Mark("ec2host: programs ready")
	if isWarm {
		h.useWarm(warm)
		h.preconnect(warm)
	}
	go h.sweepLoop()
	go h.leaseLoop()
	go h.portSweepLoop()
	return h, nil
}

// check verifies that the region, the AMI, the subnets, the security
// groups and the key pair exist, and learns the AMI's architecture and
// the subnets' zones.
func (h *Host) check(ctx context.Context) error {
	o := h.opts
	// The checks go at once (a new client pays one round trip, not
	// five); the error is the first in this order, as if one at a time.
	var regionErr, imageErr, groupErr, keyErr error
	subnetErrs := make([]error, len(o.Subnets))
	zones := make([]string, len(o.Subnets))
	var wg sync.WaitGroup
	wg.Go(func() {
		// Asked of us-east-1, which answers for every region: an unknown
		// region has no endpoint to ask.
		regions, err := o.EC2.DescribeRegions(ctx, &ec2.DescribeRegionsInput{AllRegions: aws.Bool(true)},
			func(eo *ec2.Options) { eo.Region = listRegion })
		if err != nil {
			regionErr = fmt.Errorf("ec2 host: region %s: %w", o.Region, classify(err))
			return
		}
		var names []string
		for _, r := range regions.Regions {
			names = append(names, aws.ToString(r.RegionName))
		}
		if !slices.Contains(names, o.Region) {
			slices.Sort(names)
			regionErr = fmt.Errorf("ec2 host: unknown region %q (regions: %s)", o.Region, strings.Join(names, ", "))
		}
	})
	wg.Go(func() {
		imgs, err := o.EC2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{o.AMI}})
		if err != nil || len(imgs.Images) == 0 {
			imageErr = fmt.Errorf("ec2 host: AMI %s does not exist in %s, or may not be used: %w", o.AMI, o.Region, classify(orNotFound(err)))
			return
		}
		h.arch = string(imgs.Images[0].Architecture)
		h.root = rootOf(imgs.Images[0])
		if h.arch == "" {
			h.arch = ec2alloc.DefaultArchitecture
		}
	})
	for i, s := range o.Subnets {
		// One call each, so that the error names the one missing.
		wg.Go(func() {
			out, err := o.EC2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: []string{s}})
			if err != nil || len(out.Subnets) == 0 {
				subnetErrs[i] = fmt.Errorf("ec2 host: subnet %s does not exist in %s: %w", s, o.Region, classify(orNotFound(err)))
				return
			}
			zones[i] = aws.ToString(out.Subnets[0].AvailabilityZone)
		})
	}
	if len(o.SecurityGroups) > 0 {
		wg.Go(func() {
			out, err := o.EC2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: o.SecurityGroups})
			if err != nil || len(out.SecurityGroups) < len(o.SecurityGroups) {
				groupErr = fmt.Errorf("ec2 host: security groups %s: %w", strings.Join(o.SecurityGroups, ", "), classify(orNotFound(err)))
			}
		})
	}
	wg.Go(func() {
		kp, err := o.EC2.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{KeyNames: []string{o.KeyName}})
		if err != nil || len(kp.KeyPairs) == 0 {
			keyErr = fmt.Errorf("ec2 host: key pair %s does not exist in %s: %w", o.KeyName, o.Region, classify(orNotFound(err)))
		}
	})
	wg.Wait()
	for _, err := range append(append([]error{regionErr, imageErr}, subnetErrs...), groupErr, keyErr) {
		if err != nil {
			return err
		}
	}
	for i, s := range o.Subnets {
		h.subnet[s] = zones[i]
		if !slices.Contains(h.zones, zones[i]) {
			h.zones = append(h.zones, zones[i])
		}
	}
	if _, err := os.Stat(o.KeyFile); err != nil {
		return fmt.Errorf("ec2 host: the private key of key pair %s: %w", o.KeyName, err)
	}
	return nil
}

func orNotFound(err error) error {
	if err == nil {
		return errors.New("not found")
	}
	return err
}

// Name implements driver.Host.
func (h *Host) Name() string { return "ec2 host " + h.opts.Region }

// ExpectedDigest is the build ID workers must report: this program's.
func (h *Host) ExpectedDigest() string { return h.progs.SelfDigest() }

// Capabilities implements driver.Host: the agent's, over SSH; ports are
// opened in a security group for the job (ports.go).
func (h *Host) Capabilities() driver.Capabilities {
	return driver.Capabilities{CapturesOutput: true, ProcessExits: true, MemoryLimits: true, Sidecars: true, Ports: true,
		Runtimes:    []driver.Runtime{driver.RuntimePython},
		Deployments: []driver.DeploymentKind{driver.DeployInterpreter, driver.DeployContainer, driver.DeployEnvironment}}
}

func (h *Host) request(r driver.Resources) ec2alloc.Request {
	return ec2alloc.Request{Resources: r, Workers: 1, Architecture: h.arch, Zones: h.zones}
}

// Fit implements driver.Host: how many workers of r MaxInstances
// instances of the roomiest type that holds one can run, or ErrNeverFits
// when no type holds one.
func (h *Host) Fit(ctx context.Context, r driver.Resources) (int, error) {
	if err := h.checkDisk(r); err != nil {
		return 0, err
	}
	if n, ok := h.warmFit(r); ok {
		return n, nil
	}
	c, err := h.loadCatalog(ctx)
	if err != nil {
		return 0, err
	}
	if _, err := ec2alloc.Choose(c, h.request(r)); err != nil {
		if errors.Is(err, ec2alloc.ErrNoFit) {
			return 0, fmt.Errorf("ec2 host: a worker of %s %w: %w", r, driver.ErrNeverFits, err)
		}
		return 0, fmt.Errorf("ec2 host: %w", err)
	}
	k := 0
	for i := range c.Types {
		if slices.Contains(c.Types[i].Architectures, h.arch) {
			k = max(k, ec2alloc.WorkersPerInstance(&c.Types[i], r))
		}
	}
	n := max(1, k) * h.opts.MaxInstances
	h.rememberFit(r, n)
	return n, nil
}

// Start implements driver.Host: the worker is booked on a running
// instance with room, else on a new one, and started there once its agent
// answers.
func (h *Host) Start(ctx context.Context, spec driver.WorkerSpec) (driver.Worker, error) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, errors.New("ec2 host: closed")
	}
	h.n++
	wid := fmt.Sprintf("%s-%d", h.sess, h.n)
	h.mu.Unlock()
	res := h.allocResources(spec.Resources)
	req := ec2alloc.AllocRequest{Workers: []string{wid}, Resources: res, LaunchKey: h.key, Architecture: h.arch}
	tracepoint.Mark("ec2host: Start: booking")
	booked, _, err := h.table.Allocate(ctx, req)
	if err != nil && h.checked != nil {
		// The table the cache directory knows may be gone: the checks
		// create it again.
		if cerr := h.waitChecked(ctx); cerr != nil {
			return nil, cerr
		}
		booked, _, err = h.table.Allocate(ctx, req)
	}
	if err != nil {
		return nil, fmt.Errorf("ec2 host: %w", err)
	}
	tracepoint.Mark("ec2host: Start: booked")
	var id, addr string
	var rec *ec2alloc.Record // as the booking read it
	if len(booked) == 1 {
		id, addr, rec = booked[0].InstanceID, booked[0].Address, &booked[0].Record
	} else {
		// Nothing is launched before the options have passed their
		// checks.
		if err := h.waitChecked(ctx); err != nil {
			return nil, err
		}
		// One launch at a time: a worker that waited may find room on
		// the instance the one before it launched.
		h.launchMu.Lock()
		booked, _, err = h.table.Allocate(ctx, req)
		if err == nil && len(booked) == 1 {
			id, addr = booked[0].InstanceID, booked[0].Address
		} else if err == nil {
			if id, addr, err = h.launch(ctx, res, wid); err == nil {
				h.mu.Lock()
				h.instances[id] = &instance{id: id, addr: addr, ready: make(chan struct{}), launched: true}
				go h.connect(h.instances[id])
				h.mu.Unlock()
			}
		}
		h.launchMu.Unlock()
		if err != nil {
			return nil, err
		}
	}
	// The lease is renewed beside the login, and waited for before
	// Start returns.
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		h.renew(ctx, id)
		tracepoint.Mark("ec2host: Start: lease renewed")
	}()
	defer func() { <-renewed }()
	inst, err := h.use(ctx, id, addr)
	tracepoint.Mark("ec2host: Start: instance connected")
	if err == nil && h.goingAway(inst) {
		// Booked just before its notice: somewhere else.
		h.unuse(inst, id)
		h.release(id, wid)
		<-renewed
		return h.startElsewhere(ctx, spec)
	}
	var pg *PortGroup
	if err == nil {
		pg, err = h.openPorts(ctx, id, wid, spec.Ports)
	}
	if err == nil {
		if rec != nil {
			h.knownCost(inst, *rec)
		}
		// The instance's price is read beside the worker's start (when
		// the booking did not read it).
		priced := make(chan struct{})
		go func() {
			defer close(priced)
			h.loadCost(inst)
		}()
		var w driver.Worker
		w, err = inst.agent.Start(ctx, spec)
		<-priced
		if err == nil {
			tracepoint.Mark("ec2host: Start: worker started")
			h.closePortsAfter(w, pg)
			ww := h.wrap(inst, wid, w)
			h.setRate(ww, inst, spec.Resources)
			h.rememberWarm(inst)
			return ww, nil
		}
	}
	if pg != nil {
		pg.Close(context.WithoutCancel(ctx))
	}
	h.unuse(inst, id)
	h.release(id, wid)
	return nil, err
}

// use returns the instance id, connected (waiting for it to boot when
// new), counting one more worker on it.
func (h *Host) use(ctx context.Context, id, addr string) (*instance, error) {
	for {
		h.mu.Lock()
		pre := h.adoptPre(id, addr)
		inst := h.instances[id]
		if inst == nil && pre != nil {
			inst = pre
			h.instances[id] = inst
		} else if pre != nil {
			go closeWhenReady(pre)
		}
		if inst == nil {
			inst = &instance{id: id, addr: addr, ready: make(chan struct{})}
			h.instances[id] = inst
			go h.connect(inst)
		}
		inst.workers++
		h.mu.Unlock()
		select {
		case <-inst.ready:
		case <-ctx.Done():
			return inst, ctx.Err()
		}
		if inst.pre && inst.err != nil {
			// Logged in to ahead of the booking, once, and that failed:
			// connect as usual.
			h.unuse(inst, id)
			continue
		}
		return inst, inst.err
	}
}

// unuse counts a worker off inst; an instance that could not be reached
// is forgotten, so that the next worker tries again.
func (h *Host) unuse(inst *instance, id string) {
	if inst == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	inst.workers--
	select {
	case <-inst.ready:
		if inst.err != nil && inst.workers == 0 && h.instances[id] == inst {
			delete(h.instances, id)
		}
	default:
	}
}

// connect reaches the instance's agent, retrying while it boots, until
// BootTimeout.
func (h *Host) connect(inst *instance) {
	defer close(inst.ready)
	ctx, cancel := context.WithTimeout(context.Background(), h.opts.BootTimeout)
	defer cancel()
	fail := func(err error) {
		inst.err = fmt.Errorf("ec2 host: instance %s (%s): %w", inst.id, inst.addr, err)
		h.drop(inst)
	}
	kh := filepath.Join(h.dir, inst.id+".known_hosts")
	if inst.pre {
		// Ahead of the booking, with the cache directory's address and
		// host key: one try, which fails quietly.
		fail = func(err error) {
			inst.err = fmt.Errorf("ec2 host: instance %s (%s): %w", inst.id, inst.addr, err)
			os.Remove(kh)
			h.mu.Lock()
			if h.instances[inst.id] == inst {
				delete(h.instances, inst.id)
			}
			h.mu.Unlock()
			tracepoint.Mark("ec2host: connect: logging in ahead failed")
		}
	}
	if _, err := os.Stat(kh); err != nil {
		key, err := h.hostKeyOf(ctx, inst.id)
		if err != nil {
			fail(err)
			return
		}
		if err := os.WriteFile(kh, []byte(inst.addr+" "+key+"\n"), 0o600); err != nil {
			fail(err)
			return
		}
		tracepoint.Mark("ec2host: connect: host key read from the tag")
	}
	a, err := sshhost.New(sshhost.Options{Machines: []string{h.opts.User + "@" + inst.addr + ":22"}, ConfigFile: "none",
		IdentityFiles: []string{h.opts.KeyFile}, NoAgent: true, KnownHostsFiles: []string{kh},
		ConnectTimeout: 5 * time.Second, GiveUpAfter: 30 * time.Second, Programs: h.progs, Log: h.opts.Log,
		AgentEnv: h.agentEnv(), OnNotice: func(_ string, n agentproto.Notice) { h.interrupted(inst, n) }})
	if err != nil {
		fail(err)
		return
	}
	start := time.Now()
	for {
		_, err := a.Fit(ctx, driver.Resources{LogicalCPU: 0.001})
		tracepoint.Mark("ec2host: connect: agent answered Fit")
		if err == nil || errors.Is(err, driver.ErrNeverFits) {
			h.mu.Lock()
			closed := h.closed
			if !closed {
				inst.agent = a
			}
			h.mu.Unlock()
			if closed {
				// Nothing may stay connected after Close.
				a.Close()
				inst.err = fmt.Errorf("ec2 host: instance %s: host closed", inst.id)
				return
			}
			if inst.launched {
				fmt.Fprintf(h.opts.Log, "meadowrun: ec2 host: the agent on %s answers after %v (boot and upload)\n", inst.id, time.Since(start).Round(time.Millisecond))
			}
			return
		}
		if !errors.Is(err, driver.ErrUnreachable) || ctx.Err() != nil || inst.pre {
			a.Close()
			if ctx.Err() != nil {
				err = fmt.Errorf("not reachable over SSH within %v (BootTimeout): %w", h.opts.BootTimeout, err)
			}
			fail(err)
			return
		}
		h.mu.Lock()
		closed := h.closed
		h.mu.Unlock()
		if closed {
			a.Close()
			fail(errors.New("host closed"))
			return
		}
		time.Sleep(h.opts.PollInterval / 4)
	}
}

// drop takes an instance that could not be reached out of use: one this
// host launched is deregistered and terminated (it never served, and a
// broken instance would be booked again and again); another client's is
// deregistered when EC2 no longer runs it.
func (h *Host) drop(inst *instance) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if !inst.launched {
		if state, err := h.state(ctx, inst.id); err != nil || state == types.InstanceStateNameRunning || state == types.InstanceStateNamePending {
			return
		}
		h.table.Deregister(ctx, inst.id)
		return
	}
	h.table.Deregister(ctx, inst.id)
	if _, err := h.opts.EC2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{inst.id}}); err != nil {
		fmt.Fprintf(h.opts.Log, "meadowrun: ec2 host: terminating %s, which could not be reached: %v\n", inst.id, classify(err))
		return
	}
	fmt.Fprintf(h.opts.Log, "meadowrun: ec2 host: terminated %s, which could not be reached: %v\n", inst.id, inst.err)
}

// hostKeyOf reads the host key the instance was launched with from its
// tag.
func (h *Host) hostKeyOf(ctx context.Context, id string) (string, error) {
	out, err := h.opts.EC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		return "", classify(err)
	}
	for _, r := range out.Reservations {
		for _, i := range r.Instances {
			for _, t := range i.Tags {
				if aws.ToString(t.Key) == TagHostKey {
					return aws.ToString(t.Value), nil
				}
			}
		}
	}
	return "", fmt.Errorf("no %s tag: it was not launched by meadowrun", TagHostKey)
}

// wrap returns w, whose end releases its booking.
func (h *Host) wrap(inst *instance, wid string, w driver.Worker) driver.Worker {
	ew := &worker{Worker: w, inst: inst, done: make(chan struct{})}
	h.track(ew)
	h.releases.Add(1)
	go func() {
		defer h.releases.Done()
		<-w.Done()
		ew.exit = h.untrack(ew, w.Exit())
		h.release(inst.id, wid)
		h.unuse(inst, inst.id)
		if ew.exit.Lost {
			h.checkGone(inst)
		}
		close(ew.done)
	}()
	return ew
}

// release frees the worker's booking.
func (h *Host) release(id, wid string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.table.Release(ctx, id, wid); err != nil && !errors.Is(err, ec2alloc.ErrNotBooked) && !errors.Is(err, ec2alloc.ErrNotRegistered) {
		fmt.Fprintf(h.opts.Log, "meadowrun: ec2 host: %v\n", err)
	}
}

// checkGone deregisters an instance whose worker was lost when EC2 says
// it is no longer running, and forgets it.
func (h *Host) checkGone(inst *instance) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	state, err := h.state(ctx, inst.id)
	if err != nil || state == types.InstanceStateNameRunning || state == types.InstanceStateNamePending {
		return
	}
	h.table.Deregister(ctx, inst.id)
	h.forget(inst)
}

func (h *Host) forget(inst *instance) {
	h.mu.Lock()
	if h.instances[inst.id] == inst {
		delete(h.instances, inst.id)
	}
	h.mu.Unlock()
	<-inst.ready
	if inst.agent != nil {
		inst.agent.Close()
	}
}

// state returns the instance's state; "" (and no error) when EC2 does not
// know it any more.
func (h *Host) state(ctx context.Context, id string) (types.InstanceStateName, error) {
	out, err := h.opts.EC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		if code(err) == "InvalidInstanceID.NotFound" {
			return "", nil
		}
		return "", classify(err)
	}
	for _, r := range out.Reservations {
		for _, i := range r.Instances {
			if i.State != nil {
				return i.State.Name, nil
			}
		}
	}
	return "", nil
}

// worker is a worker on an instance.
type worker struct {
	driver.Worker
	inst *instance
	done chan struct{}
	exit driver.ExitStatus
	rate float64 // USD an hour (cost.go)
}

// Done implements driver.Worker: closed once the booking is released too.
func (w *worker) Done() <-chan struct{} { return w.done }

// Exit implements driver.Worker.
func (w *worker) Exit() driver.ExitStatus { return w.exit }

// Machine implements driver.Worker: the instance.
func (w *worker) Machine() string { return w.inst.id }

// ExpectedDigest is the build ID the worker reports.
func (w *worker) ExpectedDigest() string {
	if d, ok := w.Worker.(interface{ ExpectedDigest() string }); ok {
		return d.ExpectedDigest()
	}
	return ""
}

// Close implements driver.Host: workers are killed and their bookings
// released; instances keep running until they have been idle for
// IdleTimeout.
func (h *Host) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	close(h.stopSweep)
	insts := make([]*instance, 0, len(h.instances)+1)
	for _, i := range h.instances {
		insts = append(insts, i)
	}
	if h.pre != nil {
		insts = append(insts, h.pre)
		h.pre = nil
	}
	h.mu.Unlock()
	for _, i := range insts {
		select {
		case <-i.ready:
			if i.agent != nil {
				i.agent.Close()
			}
		default:
			// Still connecting: it sees the host closed, or set its
			// agent before Close began and closes it here once ready.
			go func() {
				<-i.ready
				if i.agent != nil {
					i.agent.Close()
				}
			}()
		}
	}
	h.releases.Wait()
	h.progs.Close()
	os.RemoveAll(h.dir)
	return nil
}

// Instances lists the ids of the instances this host has workers on or
// connected to.
func (h *Host) Instances() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for id := range h.instances {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// Table is the allocation table the host books workers in.
func (h *Host) Table() *ec2alloc.Table { return h.table }

// Describe implements driver.Describer: the instances of the allocation
// table launched with this host's settings, what they offer (their
// type's capacity, as booked) and where they are; none before the first
// launch.
func (h *Host) Describe(ctx context.Context) []driver.Machine {
	recs, err := h.table.List(ctx)
	if err != nil {
		return []driver.Machine{{Name: h.Name(), Err: err}}
	}
	var out []driver.Machine
	for _, r := range recs {
		if r.LaunchKey != h.key {
			continue
		}
		arch := r.Architecture
		if arch == "x86_64" {
			arch = "amd64"
		}
		m := driver.Machine{Name: fmt.Sprintf("%s %s %s %s %s", r.InstanceID, r.Type, r.Market, r.Zone, r.Address), Platform: "linux/" + arch,
			Capacity: driver.Resources{LogicalCPU: float64(r.Total.MilliCPU) / 1000, MemoryBytes: r.Total.MemoryBytes, GPUs: float64(r.Total.MilliGPUs) / 1000, Flags: r.Flags, EphemeralBytes: r.DiskBytes}}
		if r.PreventFurtherAllocation {
			m.Err = errors.New("taking no more workers")
		}
		out = append(out, m)
	}
	return out
}
