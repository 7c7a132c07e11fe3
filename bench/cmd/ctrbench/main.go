// Command ctrbench measures container deployments on the local host with
// the engine and registry of scripts/containers.sh (MEADOWRUN_CONTAINERS
// names their directory): a warm call in a container next to one on a
// plain worker, the cold start of the first containerised result (image
// cached, and pulled), and `meadowrun map --image` over commands next to
// `xargs -P2 docker run` in the same run.
//
//	sudo scripts/containers.sh up DIR && MEADOWRUN_CONTAINERS=DIR go run ./bench/cmd/ctrbench [-quick]
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/bench/internal/benchmain"
	"github.com/meadowrun-go/meadowrun/internal/containertest"
	"github.com/meadowrun-go/meadowrun/local"
)

var inc = meadowrun.Register("ctrbench.Inc", func(ctx context.Context, x int) (int, error) {
	return x + 1, nil
})

// The registry's credentials reach the deployments through these
// variables, as a user's would.
const userEnv, passwordEnv = "MR_CTRBENCH_USER", "MR_CTRBENCH_PASSWORD"

func main() { benchmain.Main("ctrbench", run) }

func run(quick bool) error {
	env, err := containertest.Load(os.Getenv("MEADOWRUN_CONTAINERS"))
	if err != nil {
		return err
	}
	os.Setenv(userEnv, env.RegistryUser)
	os.Setenv(passwordEnv, env.RegistryPassword)
	os.Setenv("DOCKER_HOST", env.DockerHost)
	ctx := context.Background()
	i := strings.LastIndex(env.DebianImage, ":")
	debian := meadowrun.ContainerImage(env.DebianImage[:i], env.DebianImage[i+1:], meadowrun.SecretFromEnv(userEnv, passwordEnv), nil)
	logs, err := os.MkdirTemp("", "ctrbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(logs)
	opts := func(d meadowrun.Deployment) *meadowrun.Options {
		return &meadowrun.Options{Deployment: d, Output: io.Discard, LogDir: logs}
	}
	newHost := func() (*meadowrun.Host, error) {
		return local.NewHost(ctx, local.Options{DockerHost: env.DockerHost})
	}

	// C1: warm calls, plain worker and container, on one host.
	calls := 2000
	if quick {
		calls = 50
	}
	h, err := newHost()
	if err != nil {
		return err
	}
	var p50 [2]time.Duration
	for k, d := range []meadowrun.Deployment{{}, debian} {
		name := [...]string{"plain worker", "container (Debian image)"}[k]
		o := opts(d)
		if _, err := meadowrun.RunFunction(ctx, inc.With(0), h, o); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		lat := make([]time.Duration, 0, calls)
		for n := range calls {
			start := time.Now()
			if _, err := meadowrun.RunFunction(ctx, inc.With(n), h, o); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			lat = append(lat, time.Since(start))
		}
		slices.Sort(lat)
		p50[k] = lat[len(lat)/2]
		fmt.Printf("C1 warm call, %s: p50 %v, p99 %v over %d calls\n", name,
			lat[len(lat)/2].Round(time.Microsecond), lat[len(lat)*99/100].Round(time.Microsecond), calls)
	}
	h.Close()
	fmt.Printf("C1 ratio container/plain at p50: %.2f\n", float64(p50[1])/float64(p50[0]))

	// C2: cold start, a new host (no warm worker) up to the first result:
	// plain, in the cached image, and after removing the image (a pull
	// from the registry).
	reps := 5
	if quick {
		reps = 1
	}
	cli, err := client.NewClientWithOpts(client.WithHost(env.DockerHost), client.WithAPIVersionNegotiation())
	if err != nil {
		return err
	}
	defer cli.Close()
	for _, c := range []struct {
		name   string
		d      meadowrun.Deployment
		before func() error
	}{
		{"plain worker", meadowrun.Deployment{}, nil},
		{"container, image cached", debian, nil},
		{"container, image pulled", debian, func() error {
			_, err := cli.ImageRemove(ctx, env.DebianImage, image.RemoveOptions{Force: true})
			return err
		}},
	} {
		var ds []time.Duration
		for range reps {
			if c.before != nil {
				if err := c.before(); err != nil {
					return err
				}
			}
			start := time.Now()
			h, err := newHost()
			if err != nil {
				return err
			}
			if _, err := meadowrun.RunFunction(ctx, inc.With(0), h, opts(c.d)); err != nil {
				return fmt.Errorf("cold start, %s: %w", c.name, err)
			}
			ds = append(ds, time.Since(start))
			h.Close()
		}
		fmt.Printf("C2 cold start to the first result, %s: median %v over %d\n", c.name, benchmain.Median(ds).Round(time.Millisecond), reps)
	}

	// C3: a map of /bin/true over commands in the image, next to
	// xargs -P2 docker run, both on the cached image.
	n := 1000
	if quick {
		n = 20
	}
	bin := filepath.Join(logs, "meadowrun")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/meadowrun").CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/meadowrun: %w\n%s", err, out)
	}
	inputs := make([]string, n)
	for k := range inputs {
		inputs[k] = strconv.Itoa(k)
	}
	state := filepath.Join(logs, "state")
	mr := func(extra ...string) *exec.Cmd {
		args := append([]string{"map", "-j", "2"}, extra...)
		args = append(append(args, "--", "/bin/true", ":::"), inputs...)
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "XDG_STATE_HOME="+state)
		return cmd
	}
	xargs := exec.Command("sh", "-c", "xargs -P2 -I{} docker run --rm "+env.DebianImage+" /bin/true")
	xargs.Stdin = strings.NewReader(strings.Join(inputs, "\n") + "\n")
	xargs.Env = append(os.Environ(), "DOCKER_CONFIG="+filepath.Join(logs, "docker-config"))
	var took [3]time.Duration
	for k, cmd := range []*exec.Cmd{
		mr(),
		mr("--image", env.DebianImage, "--registry-user-env", userEnv, "--registry-password-env", passwordEnv),
		xargs,
	} {
		start := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %w\n%s", cmd, err, out)
		}
		took[k] = time.Since(start)
	}
	fmt.Printf("C3 %d × /bin/true, 2 at a time: meadowrun map -j 2 %v (plain), meadowrun map -j 2 --image %v, xargs -P2 docker run --rm %v; xargs docker / meadowrun --image = %.1f×\n",
		n, took[0].Round(time.Millisecond), took[1].Round(time.Millisecond), took[2].Round(time.Millisecond),
		float64(took[2])/float64(took[1]))
	return nil
}
