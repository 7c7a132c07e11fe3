package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/smithy-go/middleware"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/ec2"
	"github.com/meadowrun-go/meadowrun/internal/tracepoint"
)

// A warm client is this program run again with clientEnv set to its
// clientConfig; it prints its clientResult on a line of its own after
// resultPrefix. startEnv is the parent's clock when it started the
// process (Unix nanoseconds).
const (
	clientEnv    = "MEADOWRUN_EC2BENCH_CLIENT"
	startEnv     = "MEADOWRUN_EC2BENCH_START"
	resultPrefix = "ec2bench-result "
)

type clientConfig struct {
	Endpoint, PricingEndpoint, Region    string
	AMI, Subnet, Group, KeyName, KeyFile string
	CacheDir, UserCache, LogDir          string
	Trace                                bool
	Arg                                  int
}

type clientResult struct {
	Start                  time.Time // when the client's main began
	Opened, First, Spawned time.Duration
	Next                   []time.Duration
	Events                 []tracepoint.Event
}

// runClient runs one warm client process and returns what it measured.
func runClient(ctx context.Context, cc clientConfig) (clientResult, error) {
	var r clientResult
	exe, err := os.Executable()
	if err != nil {
		return r, err
	}
	js, _ := json.Marshal(cc)
	cmd := exec.CommandContext(ctx, exe)
	// A user's environment: credentials, endpoints and region in the
	// variables the SDK reads, the user's cache directory kept between
	// runs.
	cmd.Env = append(os.Environ(), clientEnv+"="+string(js),
		"AWS_ACCESS_KEY_ID=testing", "AWS_SECRET_ACCESS_KEY=testing", "AWS_SESSION_TOKEN=",
		"AWS_ENDPOINT_URL="+cc.Endpoint, "AWS_ENDPOINT_URL_PRICING="+cc.PricingEndpoint, "AWS_REGION="+cc.Region,
		"XDG_CACHE_HOME="+cc.UserCache)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = append(cmd.Env, startEnv+"="+strconv.FormatInt(time.Now().UnixNano(), 10))
	if err := cmd.Run(); err != nil {
		return r, fmt.Errorf("%w: %s%s", err, stderr.String(), stdout.String())
	}
	sc := bufio.NewScanner(&stdout)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), resultPrefix); ok {
			if err := json.Unmarshal([]byte(rest), &r); err != nil {
				return r, err
			}
			return r, nil
		}
	}
	return r, fmt.Errorf("no result line: %s%s", stderr.String(), stdout.String())
}

// client is a warm client: a new host, one first call, five more.
func client() error {
	var cc clientConfig
	if err := json.Unmarshal([]byte(os.Getenv(clientEnv)), &cc); err != nil {
		return err
	}
	ns, _ := strconv.ParseInt(os.Getenv(startEnv), 10, 64)
	spawned := time.Unix(0, ns)
	if cc.Trace {
		tracepoint.Enable()
	}
	ctx := context.Background()
	r := clientResult{Start: time.Now()}
	o := ec2.AllocEC2Instance{AMI: cc.AMI, Subnets: []string{cc.Subnet}, SecurityGroups: []string{cc.Group},
		KeyName: cc.KeyName, KeyFile: cc.KeyFile, User: "root", PrivateAddress: true, InstanceTypes: []string{"t3.medium"},
		MaxInstances: 2, BootTimeout: time.Minute, CacheDir: cc.CacheDir, Log: os.Stderr}
	if cc.Trace {
		// The environment's configuration, as NewHost would make it,
		// with every AWS call marked.
		cfg := aws.Config{Region: cc.Region, BaseEndpoint: aws.String(cc.Endpoint),
			Credentials: credentials.NewStaticCredentialsProvider("testing", "testing", "")}
		cfg.APIOptions = append(cfg.APIOptions, markCalls)
		pcfg := cfg.Copy()
		pcfg.Region, pcfg.BaseEndpoint = "us-east-1", aws.String(cc.PricingEndpoint)
		o.AWSConfig, o.PricingConfig = &cfg, &pcfg
	}
	h, err := ec2.NewHost(ctx, o)
	if err != nil {
		return err
	}
	defer h.Close()
	r.Opened = time.Since(r.Start)
	tracepoint.Mark("NewHost returned")
	opts := func() *meadowrun.Options { return &meadowrun.Options{Output: io.Discard, LogDir: cc.LogDir} }
	if _, err := meadowrun.RunFunction(ctx, inc.With(cc.Arg), h, opts()); err != nil {
		return err
	}
	r.First = time.Since(r.Start)
	r.Spawned = time.Since(spawned)
	tracepoint.Mark("first call returned")
	r.Events = tracepoint.Take()
	for j := range 5 {
		t := time.Now()
		if _, err := meadowrun.RunFunction(ctx, inc.With(j), h, opts()); err != nil {
			return err
		}
		r.Next = append(r.Next, time.Since(t))
	}
	js, _ := json.Marshal(r)
	fmt.Printf("%s%s\n", resultPrefix, js)
	return nil
}

// markCalls marks each AWS call's start and end.
func markCalls(s *middleware.Stack) error {
	return s.Finalize.Add(middleware.FinalizeMiddlewareFunc("ec2bench-trace", func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
		op := awsmiddleware.GetServiceID(ctx) + "." + awsmiddleware.GetOperationName(ctx)
		tracepoint.Mark("aws " + op + " sent")
		out, md, err := next.HandleFinalize(ctx, in)
		tracepoint.Mark("aws " + op + " answered")
		return out, md, err
	}), middleware.After)
}
