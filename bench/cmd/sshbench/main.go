// Command sshbench measures meadowrun's SSH host on the simulated machines
// of scripts/sshnet.sh (MEADOWRUN_SSHNET names their directory): agent
// bootstrap with a 20 MB program, warm dispatch latency next to the
// network round trip, and map throughput over three machines, attached
// and detached.
//
//	sudo scripts/sshnet.sh up DIR && MEADOWRUN_SSHNET=DIR go run ./bench/cmd/sshbench [-quick]
//
// The program measured is this one with 12 MiB of random bytes appended
// (it re-executes itself from such a copy), so that it weighs over 20 MB to
// upload and a compressed upload gains only what real code gives.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/bench/internal/benchmain"
	"github.com/meadowrun-go/meadowrun/internal/sshtest"
	mrssh "github.com/meadowrun-go/meadowrun/ssh"
)

var inc = meadowrun.Register("sshbench.Inc", func(ctx context.Context, x int) (int, error) {
	return x + 1, nil
})

func main() {
	meadowrun.Main()
	quick := flag.Bool("quick", false, "tiny sizes")
	child := flag.Bool("padded", false, "(internal) this is the padded copy")
	flag.Parse()
	if !*child {
		if err := padded(); err != nil {
			fmt.Fprintln(os.Stderr, "sshbench:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(*quick); err != nil {
		fmt.Fprintln(os.Stderr, "sshbench:", err)
		os.Exit(1)
	}
}

// padded runs a copy of this program with 12 MiB of random bytes appended.
func padded() error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "sshbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cp := filepath.Join(dir, "sshbench")
	in, err := os.ReadFile(self)
	if err != nil {
		return err
	}
	pad := make([]byte, 12<<20)
	rand.Read(pad)
	if err := os.WriteFile(cp, append(in, pad...), 0o700); err != nil {
		return err
	}
	cmd := exec.Command(cp, append([]string{"-padded"}, os.Args[1:]...)...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	return cmd.Run()
}

func run(quick bool) error {
	n, err := sshtest.Load(os.Getenv("MEADOWRUN_SSHNET"))
	if err != nil {
		return err
	}
	ctx := context.Background()
	self, _ := os.Executable()
	st, _ := os.Stat(self)
	fmt.Printf("program size %.1f MB (12 MiB of it random padding)\n", float64(st.Size())/1e6)
	machines := func(hs ...string) []string {
		var ms []string
		for _, h := range hs {
			ms = append(ms, n.User+"@"+n.Addr(h))
		}
		return ms
	}
	open := func(dir string, hs ...string) (*meadowrun.Host, error) {
		return mrssh.NewHost(machines(hs...), mrssh.Options{
			IdentityFiles: []string{n.Key}, KnownHostsFiles: []string{n.KnownHosts}, NoAgent: true, ConfigFile: "none",
			RemoteDir: dir, Log: io.Discard})
	}
	o := &meadowrun.Options{Output: io.Discard, LogDir: os.TempDir()}

	// Bootstrap: a fresh agent directory, so the program is uploaded and
	// the agent started, up to the first result.
	reps := 5
	if quick {
		reps = 1
	}
	var boots []time.Duration
	for range reps {
		b := make([]byte, 6)
		rand.Read(b)
		dir := "$HOME/.cache/meadowrun-bench-" + hex.EncodeToString(b) // expanded by the remote shell
		h, err := open(dir, "h1")
		if err != nil {
			return err
		}
		start := time.Now()
		if _, err := meadowrun.RunFunction(ctx, inc.With(1), h, o); err != nil {
			return err
		}
		boots = append(boots, time.Since(start))
		h.Close()
		n.RunE("h1", "kill $(cat \""+dir+"\"/agent-*.pid) 2>/dev/null; rm -rf \""+dir+"\"")
	}
	fmt.Printf("bootstrap (connect, upload %.1f MB, start the agent, first result): median %v over %d\n",
		float64(st.Size())/1e6, benchmain.Median(boots).Round(time.Millisecond), len(boots))

	// Warm dispatch on one machine, next to the TCP round trip.
	h, err := open("", "h1", "h2", "h3")
	if err != nil {
		return err
	}
	defer h.Close()
	one, err := open("", "h1")
	if err != nil {
		return err
	}
	defer one.Close()
	if _, err := meadowrun.RunFunction(ctx, inc.With(1), one, o); err != nil {
		return err
	}
	calls := 2000
	if quick {
		calls = 50
	}
	var lat []time.Duration
	for i := range calls {
		start := time.Now()
		if _, err := meadowrun.RunFunction(ctx, inc.With(i), one, o); err != nil {
			return err
		}
		lat = append(lat, time.Since(start))
	}
	// The round trip, measured apart: every connection makes sshd start a
	// process, which would disturb the calls above.
	rtt := benchmain.DialTimes(n.Addr("h1"), 50, 20*time.Millisecond)
	slices.Sort(lat)
	slow := 0
	for _, d := range lat {
		if d > 10*time.Millisecond {
			slow++
		}
	}
	fmt.Printf("warm dispatch of a trivial function to one machine: p50 %v, p90 %v, p99 %v over %d calls (%d over 10 ms); TCP round trip (connect) p50 %v\n",
		lat[len(lat)/2].Round(time.Microsecond), lat[len(lat)*9/10].Round(time.Microsecond), lat[len(lat)*99/100].Round(time.Microsecond), calls, slow, rtt[len(rtt)/2].Round(time.Microsecond))

	// Throughput over three machines.
	for _, size := range []int{10_000, 100_000} {
		if quick {
			size = 500
		}
		args := make([]int, size)
		if _, err := meadowrun.RunMap(ctx, inc, args[:100], h, &meadowrun.MapOptions{Options: *o}); err != nil {
			return err
		}
		start := time.Now()
		if _, err := meadowrun.RunMap(ctx, inc, args, h, &meadowrun.MapOptions{Options: *o}); err != nil {
			return err
		}
		d := time.Since(start)
		fmt.Printf("map of x+1 over 3 machines (2 CPUs each): %d tasks in %v = %.0f tasks/s\n", size, d.Round(time.Millisecond), float64(size)/d.Seconds())
		if quick {
			break
		}
	}

	// A detached map over three machines: split, run by a supervisor on
	// each machine, and collected through their agents. Its journal is a
	// directory of its own, not the user's.
	state, err := os.MkdirTemp("", "sshbench-state-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(state)
	os.Setenv("XDG_STATE_HOME", state)
	size := 10_000
	if quick {
		size = 200
	}
	args := make([]int, size)
	start := time.Now()
	m, err := meadowrun.SubmitMap(ctx, inc, args, h, nil, nil)
	if err != nil {
		return err
	}
	submitted := time.Since(start)
	if _, err := m.Wait(ctx); err != nil {
		return err
	}
	d := time.Since(start)
	fmt.Printf("detached map of x+1 split over 3 machines: %d tasks submitted in %v, every result back in %v = %.0f tasks/s\n",
		size, submitted.Round(time.Millisecond), d.Round(time.Millisecond), float64(size)/d.Seconds())
	return nil
}
