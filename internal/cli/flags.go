package cli

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/ec2"
)

// workFlags are the flags of every command that runs work: where it runs
// and what each worker needs.
type workFlags struct {
	hosts     []string
	host      string
	cpu       float64
	memory    float64
	gpus      float64
	gpuMemory float64
	flags     []string
	eviction  float64
	disk      float64
	env       []string
	detach    bool
	json      bool
	image     string
	regUser   string
	regPass   string
	regAWS    string
	sidecars  []string
	ports     []string
}

func (w *workFlags) add(fs *pflag.FlagSet) {
	def := os.Getenv("MEADOWRUN_HOST")
	if def == "" {
		def = "local"
	}
	fs.StringArrayVar(&w.hosts, "host", []string{def}, "where the work runs, as a URL (schemes: "+strings.Join(meadowrun.HostSchemes(), ", ")+"); repeat --host ssh://... for several machines; $MEADOWRUN_HOST sets the default")
	fs.Float64Var(&w.cpu, "cpu", 0, "logical CPUs per worker (default 1)")
	fs.Float64Var(&w.memory, "memory", 0, "memory per worker in GB (of 2^30 bytes), enforced (default: no limit)")
	fs.Float64Var(&w.gpus, "gpus", 0, "GPUs per worker")
	fs.Float64Var(&w.gpuMemory, "gpu-memory", 0, "GPU memory per worker in GB (implies 1 GPU)")
	fs.StringSliceVar(&w.flags, "flags", nil, "machine features required, comma-separated (intel, amd_cpu, avx2, avx512, nvidia, ...)")
	fs.Float64Var(&w.eviction, "max-eviction-rate", 0, "highest acceptable chance in percent that a spot instance is interrupted; 0 asks for on-demand only (default 80)")
	fs.Float64Var(&w.disk, "ephemeral-storage", 0, "local disk per worker in GB")
	fs.StringArrayVarP(&w.env, "env", "e", nil, "environment variable K=V for the command (repeatable)")
	fs.BoolVarP(&w.detach, "detach", "d", false, "submit the job, print its id and return: it goes on after this process exits")
	fs.BoolVar(&w.json, "json", false, "print machine-readable JSON on stdout")
	fs.StringVar(&w.image, "image", "", "run in this container image, REPOSITORY[:TAG] or REPOSITORY@sha256:DIGEST, pulled once per machine")
	fs.StringVar(&w.regUser, "registry-user-env", "", "with --image: the environment variable that holds the registry's username")
	fs.StringVar(&w.regPass, "registry-password-env", "", "with --image: the environment variable that holds the registry's password")
	fs.StringVar(&w.regAWS, "registry-aws-secret", "", "with --image: the AWS Secrets Manager secret (JSON {\"username\", \"password\"}) that logs in to the registry, read with the environment's AWS credentials")
	fs.StringArrayVar(&w.sidecars, "sidecar", nil, "with --image: a container beside each worker, 'IMAGE [ARG...]', sharing its network (reachable on localhost and as meadowrun-sidecar-N; repeatable; the registry flags log in to it too)")
	fs.StringArrayVarP(&w.ports, "port", "p", nil, "port or range to open on the worker's machine for the job, e.g. 8080 or 8000-8009 (repeatable)")
}

// options are the Options every command that runs work shares: the
// resources, ports and sidecars its flags ask for, with output and
// deployment given.
func (w *workFlags) options(cmd *cobra.Command, out io.Writer, dep meadowrun.Deployment) (meadowrun.Options, error) {
	o := meadowrun.Options{Resources: w.resources(cmd), Ports: w.ports, Output: out, Deployment: dep}
	if len(w.sidecars) > 0 && w.image == "" {
		return o, usagef(cmd, "--sidecar needs --image: sidecars run beside workers in containers")
	}
	secret := w.secret()
	for _, sc := range w.sidecars {
		// IMAGE, then the arguments that replace its command.
		words := strings.Fields(sc)
		if len(words) == 0 {
			return o, usagef(cmd, "--sidecar %q: want 'IMAGE [ARG...]', the image as REPOSITORY[:TAG] or REPOSITORY@DIGEST", sc)
		}
		repo, tag, digest := splitImage(words[0])
		o.Sidecars = append(o.Sidecars, meadowrun.Container{Repository: repo, Tag: tag, Digest: digest, Args: words[1:], Credentials: secret})
	}
	return o, nil
}

// deployment is the deployment the flags ask for: the --image container
// image, or this machine's programs (MirrorLocal).
func (w *workFlags) deployment(cmd *cobra.Command) (meadowrun.Deployment, error) {
	if (w.regUser == "") != (w.regPass == "") || w.regUser != "" && w.image == "" {
		return meadowrun.Deployment{}, usagef(cmd, "--registry-user-env and --registry-password-env go together, with --image")
	}
	if w.regAWS != "" && (w.image == "" || w.regUser != "") {
		return meadowrun.Deployment{}, usagef(cmd, "--registry-aws-secret goes with --image, without --registry-user-env")
	}
	if w.image == "" {
		return meadowrun.Deployment{}, nil
	}
	secret := w.secret()
	repo, tag, digest := splitImage(w.image)
	if digest != "" {
		return meadowrun.ContainerImageAtDigest(repo, digest, secret, nil), nil
	}
	return meadowrun.ContainerImage(repo, tag, secret, nil), nil
}

// secret is the registry's secret the flags name.
func (w *workFlags) secret() meadowrun.Secret {
	switch {
	case w.regAWS != "":
		return ec2.AwsSecret(w.regAWS)
	case w.regUser != "":
		return meadowrun.SecretFromEnv(w.regUser, w.regPass)
	}
	return meadowrun.Secret{}
}

// splitImage splits REPOSITORY[:TAG] or REPOSITORY@DIGEST; a registry's
// port is not a tag.
func splitImage(image string) (repo, tag, digest string) {
	if r, d, ok := strings.Cut(image, "@"); ok {
		return r, "", d
	}
	if i := strings.LastIndex(image, ":"); i > 0 && !strings.Contains(image[i:], "/") {
		return image[:i], image[i+1:], ""
	}
	return image, "", ""
}

// resources returns the resource flags as Resources, nil when none is set.
func (w *workFlags) resources(cmd *cobra.Command) *meadowrun.Resources {
	r := &meadowrun.Resources{LogicalCPU: w.cpu, MemoryGB: w.memory, GPUs: w.gpus, GPUMemoryGB: w.gpuMemory,
		Flags: w.flags, MaxEvictionRate: w.eviction, EphemeralStorageGB: w.disk}
	if cmd.Flags().Changed("max-eviction-rate") && w.eviction == 0 {
		r.OnDemandOnly = true
	}
	return r
}

// check refuses, as usage errors, --host flags that do not make one host
// and resource flags no host could take, naming the flags.
func (w *workFlags) check(cmd *cobra.Command) error {
	if err := w.joinHosts(); err != nil {
		return &usageError{cmd: cmd, err: err}
	}
	if err := w.resources(cmd).Validate(); err != nil {
		return &usageError{cmd: cmd, err: inFlagTerms(err)}
	}
	return nil
}

// resourceFlags name the flag of each Resources field, longest field name
// first (GPUMemoryGB before MemoryGB).
var resourceFlags = []struct{ field, flag string }{
	{"EphemeralStorageGB", "--ephemeral-storage"},
	{"MaxEvictionRate", "--max-eviction-rate"},
	{"GPUMemoryGB", "--gpu-memory"},
	{"LogicalCPU", "--cpu"},
	{"MemoryGB", "--memory"},
	{"GPUs", "--gpus"},
	{"Flags", "--flags"},
}

// flagError is an error of the library said in the command line's terms.
type flagError struct {
	msg string
	err error
}

func (e *flagError) Error() string { return e.msg }
func (e *flagError) Unwrap() error { return e.err }

// inFlagTerms rewrites an ErrInvalidResources error of Resources.Validate
// ("invalid resources: LogicalCPU is -1; ...") to name the flag ("--cpu
// is -1; ...").
func inFlagTerms(err error) error {
	head := meadowrun.ErrInvalidResources.Error() + ": "
	rest, ok := strings.CutPrefix(err.Error(), head)
	if !ok {
		return err
	}
	for _, f := range resourceFlags {
		if after, ok := strings.CutPrefix(rest, f.field+" "); ok {
			return &flagError{msg: head + f.flag + " " + after, err: err}
		}
	}
	return err
}

// environment parses the --env flags.
func (w *workFlags) environment(cmd *cobra.Command) (map[string]string, error) {
	if len(w.env) == 0 {
		return nil, nil
	}
	env := map[string]string{}
	for _, kv := range w.env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usagef(cmd, "--env %q: want KEY=VALUE", kv)
		}
		env[k] = v
	}
	return env, nil
}

// openHost opens the --host URL; check has made it of the flags.
func (w *workFlags) openHost(ctx context.Context) (*meadowrun.Host, error) {
	if err := w.joinHosts(); err != nil {
		return nil, err
	}
	return meadowrun.OpenHost(ctx, w.host)
}

// joinHosts makes one URL of the --host flags: several ssh:// URLs are
// one host of several machines.
func (w *workFlags) joinHosts() error {
	if len(w.hosts) == 1 {
		w.host = w.hosts[0]
		return nil
	}
	var machines []string
	query := url.Values{}
	for _, h := range w.hosts {
		if !strings.HasPrefix(h, "ssh://") {
			return fmt.Errorf("--host %q: only ssh:// hosts can be given several times", h)
		}
		rest, q, _ := strings.Cut(strings.TrimPrefix(h, "ssh://"), "?")
		if rest != "" {
			machines = append(machines, rest)
		}
		v, err := url.ParseQuery(q)
		if err != nil {
			return fmt.Errorf("--host %q: %w", h, err)
		}
		for k, vs := range v {
			for _, x := range vs {
				if !slices.Contains(query[k], x) {
					query.Add(k, x)
				}
			}
		}
	}
	w.host = "ssh://" + strings.Join(machines, ",")
	if len(query) > 0 {
		w.host += "?" + query.Encode()
	}
	return nil
}

// isLocal reports whether the host is this machine, where a command can
// be looked up before anything starts.
func (w *workFlags) isLocal() bool {
	if w.joinHosts() != nil {
		return false
	}
	s := w.host
	if !strings.Contains(s, ":") {
		s += "://"
	}
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "local" || u.Scheme == "inprocess")
}

// checkWork validates the flags every command that runs work shares
// (--max-attempts, the host and resource flags, --env, and -j when jobs is
// not nil) and returns the --env variables.
func (w *workFlags) checkWork(cmd *cobra.Command, maxAttempts int, jobs *int) (map[string]string, error) {
	if err := checkAttempts(cmd, maxAttempts); err != nil {
		return nil, err
	}
	if err := w.check(cmd); err != nil {
		return nil, err
	}
	if jobs != nil && *jobs < 0 {
		return nil, usagef(cmd, "-j is %d; it must be 1 or more (0: as many as fit)", *jobs)
	}
	return w.environment(cmd)
}

// checkAttempts validates --max-attempts.
func checkAttempts(cmd *cobra.Command, n int) error {
	if n < 0 {
		return usagef(cmd, "--max-attempts is %d; it must be 1 or more", n)
	}
	return nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}
