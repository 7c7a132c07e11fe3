// Package ec2 makes EC2 instances, launched on demand, a meadowrun host
// (the reference's AllocEC2Instance): a worker is booked on a running
// instance with room, of this process or another (an allocation table in
// DynamoDB with conditional writes), else the cheapest instance type that
// holds it is launched, in the first of the host's subnets whose zone has
// capacity; the agent is then reached over SSH as on SSH hosts (package
// ssh), at the instance's public address or, when so configured, its
// private one. Instances idle for IdleTimeout are terminated.
//
// Importing the package registers the ec2:// scheme of meadowrun.OpenHost:
//
//	ec2://REGION?ami=AMI&subnet=S1&subnet=S2&sg=SG&profile=P&key_name=K&key=FILE&key_secret=SECRET&user=U&private=1&type=T&max_instances=N&idle=5m&table=NAME&cache=DIR&ports_from=CIDR&on_demand_after_interruption=1&no_idle_shutdown=1
//
// It uses aws-sdk-go-v2 only. See docs/ec2.md.
package ec2

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	awsec2 "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/pricing"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/internal/ec2host"
)

// AllocEC2Instance configures NewHost: the reference's AllocEC2Instance
// (region_name, ami_id, subnet_id, security_group_ids,
// iam_role_instance_profile) and what a Go program needs besides. AMI,
// KeyName and KeyFile are required; the zero value of every other field
// is valid.
type AllocEC2Instance struct {
	// Region is the AWS region; "" means $AWS_REGION, else
	// $AWS_DEFAULT_REGION.
	Region string
	// AMI is the image instances are launched from ("ami-..."): a Linux
	// image with sshd and cloud-init (such as Ubuntu's or Debian's cloud
	// images); its architecture chooses the instance types'. Required:
	// there are no meadowrun images.
	AMI string
	// Subnets are tried in order: an instance is launched in the first
	// subnet of the cheapest offer's zone, and in the next when AWS has no
	// capacity there. Their zones bound the offers. None means the
	// default subnet of each zone, in every zone.
	Subnets []string
	// SecurityGroups are the instances' security groups; they must let
	// this machine reach port 22. None means the VPC's default group.
	SecurityGroups []string
	// InstanceProfile is the name of the IAM instance profile instances
	// run under; "" means none.
	InstanceProfile string
	// KeyName is the EC2 key pair instances are launched with, and
	// KeyFile the file of its private key, which logs in to them.
	KeyName, KeyFile string
	// KeySecret, when KeyFile is "", names the Secrets Manager secret
	// that holds the key pair's private key (`meadowrun ec2 install`
	// keeps it in "meadowrun_private_key"); it is read once per host and
	// written to a file of this user's cache readable by the user only.
	KeySecret string
	// PortsFrom are the address ranges (CIDR) a job's ports
	// (Options.Ports) are opened to; none means the instances' VPC.
	PortsFrom []string
	// User is the account to log in as; "" means "ubuntu".
	User string
	// PrivateAddress reaches instances at their private address, for a
	// machine inside the VPC (or connected to it); by default the public
	// address is used where an instance has one.
	PrivateAddress bool
	// InstanceTypes, when not empty, are the only types launched.
	InstanceTypes []string
	// MaxInstances bounds the instances one host uses at once; 0 means 8.
	MaxInstances int
	// IdleTimeout is how long an instance may go without a worker before
	// it is terminated; 0 means 5 minutes. Idle instances are terminated
	// by hosts that are open (any process's), and by their own agent once
	// no client has been connected for as long; see docs/ec2.md.
	IdleTimeout time.Duration
	// BootTimeout bounds how long a new instance may take to run and
	// answer over SSH; 0 means 5 minutes.
	BootTimeout time.Duration
	// TableName is the DynamoDB allocation table; "" means
	// "meadowrun_ec2_alloc_table", the reference's. It is created when
	// missing.
	TableName string
	// CacheDir keeps the region's catalog (instance types and prices,
	// slow to load) for an hour between processes; "" means
	// meadowrun/ec2 in the user's cache directory ($XDG_CACHE_HOME or
	// ~/.cache), "none" keeps it in this process only.
	CacheDir string
	// SpotAdvisor is the Spot Instance Advisor's data
	// (spot-advisor-data.json) for spot interruption rates; without it
	// every spot type counts as interrupted 80% of the time, so spot is
	// used only with MaxEvictionRate 80 or more.
	SpotAdvisor []byte
	// AWSConfig, when not nil, is the AWS configuration (credentials,
	// region, endpoint) of the EC2 and DynamoDB clients; nil means the
	// environment's: $AWS_ACCESS_KEY_ID, $AWS_SECRET_ACCESS_KEY,
	// $AWS_SESSION_TOKEN, $AWS_ENDPOINT_URL and, for the Pricing API,
	// $AWS_ENDPOINT_URL_PRICING. (Shared config files,
	// SSO and instance roles need a configuration made with
	// aws-sdk-go-v2/config by the caller.)
	AWSConfig *aws.Config
	// PricingConfig, when not nil, is the configuration of the AWS
	// Pricing API client; nil means AWSConfig's, in us-east-1 (the
	// Pricing API answers in a few regions only).
	PricingConfig *aws.Config
	// Binaries are this program built for other platforms, by
	// "GOOS/GOARCH" ("linux/arm64" for Graviton types).
	Binaries map[string]string
	// Log receives a line per launch, termination and machine problem;
	// nil means standard error.
	Log io.Writer
	// OnDemandAfterInterruption: once one of the host's spot instances
	// has had a spot interruption notice, the workers the host starts
	// (the interrupted tasks' re-runs first) go to on-demand instances
	// only. Without it they may go to spot instances again.
	OnDemandAfterInterruption bool
	// MetadataPoll is how often the agent on each instance polls the
	// instance metadata for a spot interruption notice; 0 means 5 s.
	MetadataPoll time.Duration
	// NoIdleShutdown keeps the agents from shutting their instance down
	// when no client has been connected for IdleTimeout: idle instances
	// are then terminated by open hosts' sweeps and TerminateIdle only.
	NoIdleShutdown bool
}

// ErrLaunch is wrapped when no instance could be launched: every subnet,
// zone and type that fits was refused for want of capacity or quota. The
// message names each attempt and what to change.
var ErrLaunch = ec2host.ErrLaunch

// ErrNoCredentials is wrapped when no AWS credentials are given.
var ErrNoCredentials = errors.New("ec2: no AWS credentials")

// NewHost checks the options against the region (it exists, and so do the
// AMI, subnets, security groups and key pair), creates the allocation
// table when missing and returns the host. Instances are launched or
// reused when work runs. Close kills the host's workers and releases
// their bookings; instances stay for other jobs until their idle timeout.
func NewHost(ctx context.Context, opts AllocEC2Instance) (*meadowrun.Host, error) {
	h, err := newHost(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("meadowrun: %w", err)
	}
	return h, nil
}

func newHost(ctx context.Context, o AllocEC2Instance) (*meadowrun.Host, error) {
	fromEnv := o.AWSConfig == nil
	cfg, err := awsConfig(o)
	if err != nil {
		return nil, err
	}
	pcfg := cfg.Copy()
	pcfg.Region = "us-east-1"
	if e := os.Getenv("AWS_ENDPOINT_URL_PRICING"); e != "" && fromEnv {
		pcfg.BaseEndpoint = aws.String(e)
	}
	if o.PricingConfig != nil {
		pcfg = o.PricingConfig.Copy()
	}
	if o.KeyFile == "" && o.KeySecret != "" {
		if o.KeyFile, err = keyFromSecret(ctx, cfg, o.KeySecret); err != nil {
			return nil, err
		}
	}
	d, err := ec2host.New(ctx, ec2host.Options{PortsFrom: o.PortsFrom, Region: cfg.Region, AMI: o.AMI, Subnets: o.Subnets, SecurityGroups: o.SecurityGroups,
		InstanceProfile: o.InstanceProfile, KeyName: o.KeyName, KeyFile: o.KeyFile, User: o.User, PrivateAddress: o.PrivateAddress,
		InstanceTypes: o.InstanceTypes, MaxInstances: o.MaxInstances, IdleTimeout: o.IdleTimeout, BootTimeout: o.BootTimeout,
		TableName: o.TableName, SpotAdvisor: o.SpotAdvisor, Binaries: o.Binaries, Log: o.Log,
		CatalogKey: catalogKey(cfg, pcfg, o.SpotAdvisor), CacheDir: cacheDir(o.CacheDir),
		EC2: awsec2.NewFromConfig(cfg), DynamoDB: dynamodb.NewFromConfig(cfg), Pricing: pricing.NewFromConfig(pcfg),
		InstanceOptions: ec2host.InstanceOptions{OnDemandAfterInterruption: o.OnDemandAfterInterruption, IMDSPoll: o.MetadataPoll,
			NoIdleShutdown: o.NoIdleShutdown}})
	if err != nil {
		return nil, err
	}
	u := ""
	if fromEnv && o.PricingConfig == nil && o.SpotAdvisor == nil && len(o.Binaries) == 0 {
		// Another process rebuilds the same host from the URL and its
		// environment.
		u = URL(o)
	}
	return meadowrun.NewHost(d, meadowrun.HostOptions{URL: u, Digest: d.ExpectedDigest()}), nil
}

// catalogKey names where a catalog comes from: the region, the endpoints
// and the spot advisor data.
func catalogKey(cfg, pcfg aws.Config, advisor []byte) string {
	sum := sha256.Sum256(advisor)
	return strings.Join([]string{cfg.Region, aws.ToString(cfg.BaseEndpoint), aws.ToString(pcfg.BaseEndpoint), hex.EncodeToString(sum[:])}, "|")
}

func cacheDir(d string) string {
	switch d {
	case "none":
		return ""
	case "":
		if c, err := os.UserCacheDir(); err == nil {
			return filepath.Join(c, "meadowrun", "ec2")
		}
		return ""
	}
	return d
}

// awsConfig returns o's AWS configuration, or the environment's.
func awsConfig(o AllocEC2Instance) (aws.Config, error) {
	var cfg aws.Config
	if o.AWSConfig != nil {
		cfg = o.AWSConfig.Copy()
	} else {
		id, secret := os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY")
		if id == "" || secret == "" {
			return cfg, fmt.Errorf("%w: set $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY (and $AWS_SESSION_TOKEN for temporary ones), or give AWSConfig", ErrNoCredentials)
		}
		cfg.Credentials = credentials.NewStaticCredentialsProvider(id, secret, os.Getenv("AWS_SESSION_TOKEN"))
		if e := os.Getenv("AWS_ENDPOINT_URL"); e != "" {
			cfg.BaseEndpoint = aws.String(e)
		}
		cfg.Region = os.Getenv("AWS_REGION")
		if cfg.Region == "" {
			cfg.Region = os.Getenv("AWS_DEFAULT_REGION")
		}
	}
	if cfg.Credentials == nil {
		return cfg, fmt.Errorf("%w: AWSConfig has no Credentials", ErrNoCredentials)
	}
	if o.Region != "" {
		cfg.Region = o.Region
	}
	return cfg, nil
}

// URL returns the ec2:// URL of o (without AWSConfig, PricingConfig,
// SpotAdvisor, Binaries and Log, which a URL cannot carry).
func URL(o AllocEC2Instance) string {
	q := url.Values{}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	set("ami", o.AMI)
	for _, s := range o.Subnets {
		q.Add("subnet", s)
	}
	for _, s := range o.SecurityGroups {
		q.Add("sg", s)
	}
	set("profile", o.InstanceProfile)
	set("key_name", o.KeyName)
	set("key", o.KeyFile)
	set("key_secret", o.KeySecret)
	for _, c := range o.PortsFrom {
		q.Add("ports_from", c)
	}
	set("user", o.User)
	if o.PrivateAddress {
		q.Set("private", "1")
	}
	for _, t := range o.InstanceTypes {
		q.Add("type", t)
	}
	if o.MaxInstances > 0 {
		q.Set("max_instances", strconv.Itoa(o.MaxInstances))
	}
	if o.IdleTimeout > 0 {
		q.Set("idle", o.IdleTimeout.String())
	}
	if o.BootTimeout > 0 {
		q.Set("boot_timeout", o.BootTimeout.String())
	}
	set("table", o.TableName)
	set("cache", o.CacheDir)
	if o.OnDemandAfterInterruption {
		q.Set("on_demand_after_interruption", "1")
	}
	if o.NoIdleShutdown {
		q.Set("no_idle_shutdown", "1")
	}
	s := "ec2://" + o.Region
	if len(q) > 0 {
		s += "?" + q.Encode()
	}
	return s
}

// ParseURL reads an ec2:// URL into options (see the package
// documentation for its parameters).
func ParseURL(raw string) (AllocEC2Instance, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return AllocEC2Instance{}, fmt.Errorf("ec2: %w", err)
	}
	if u.Scheme != "ec2" {
		return AllocEC2Instance{}, fmt.Errorf("ec2: URL %q: want ec2://REGION?ami=AMI&key_name=K&key=FILE", raw)
	}
	return fromURL(u)
}

var urlParams = []string{"ami", "subnet", "sg", "profile", "key_name", "key", "user", "private", "type", "max_instances", "idle", "boot_timeout", "table", "cache", "on_demand_after_interruption", "no_idle_shutdown", "key_secret", "ports_from"}

func fromURL(u *url.URL) (AllocEC2Instance, error) {
	if u.Path != "" && u.Path != "/" || u.User != nil {
		return AllocEC2Instance{}, fmt.Errorf("an ec2 URL is ec2://REGION?ami=AMI&key_name=K&key=FILE&...: no user or path")
	}
	q := u.Query()
	for k := range q {
		found := false
		for _, p := range urlParams {
			found = found || p == k
		}
		if !found {
			return AllocEC2Instance{}, fmt.Errorf("unknown parameter %q (known: %s)", k, strings.Join(urlParams, ", "))
		}
	}
	o := AllocEC2Instance{Region: u.Host, AMI: q.Get("ami"), Subnets: q["subnet"], SecurityGroups: q["sg"], InstanceProfile: q.Get("profile"),
		KeyName: q.Get("key_name"), KeyFile: q.Get("key"), User: q.Get("user"), InstanceTypes: q["type"], KeySecret: q.Get("key_secret"), PortsFrom: q["ports_from"], TableName: q.Get("table"), CacheDir: q.Get("cache")}
	if v := q.Get("private"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return o, fmt.Errorf("private=%q: want true or false", v)
		}
		o.PrivateAddress = b
	}
	for k, p := range map[string]*bool{"on_demand_after_interruption": &o.OnDemandAfterInterruption, "no_idle_shutdown": &o.NoIdleShutdown} {
		if v := q.Get(k); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return o, fmt.Errorf("%s=%q: want true or false", k, v)
			}
			*p = b
		}
	}
	if v := q.Get("max_instances"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return o, fmt.Errorf("max_instances=%q: want a positive number", v)
		}
		o.MaxInstances = n
	}
	for k, d := range map[string]*time.Duration{"idle": &o.IdleTimeout, "boot_timeout": &o.BootTimeout} {
		if v := q.Get(k); v != "" {
			x, err := time.ParseDuration(v)
			if err != nil || x <= 0 {
				return o, fmt.Errorf("%s=%q: want a duration such as 5m", k, v)
			}
			*d = x
		}
	}
	return o, nil
}

func openEC2(ctx context.Context, u *url.URL) (*meadowrun.Host, error) {
	o, err := fromURL(u)
	if err != nil {
		return nil, err
	}
	return newHost(ctx, o)
}

func init() {
	meadowrun.RegisterHostScheme("ec2", openEC2)
}
