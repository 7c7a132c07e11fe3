package ssh_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/ssh"
)

var square = meadowrun.Register("example.Square", func(ctx context.Context, x int) (int, error) {
	return x * x, nil
})

// A map over two machines: the program is uploaded to each the first time,
// the agent started, and the tasks spread where they fit.
func ExampleNewHost() {
	h, err := ssh.NewHost([]string{"me@build-box", "me@10.0.0.7:2222"}, ssh.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer h.Close()
	squares, err := meadowrun.RunMap(context.Background(), square, []int{1, 2, 3}, h,
		&meadowrun.MapOptions{Options: meadowrun.Options{Resources: &meadowrun.Resources{LogicalCPU: 1, MemoryGB: 0.5}}})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(squares)
}

// The same machines from a URL, as the CLI's --host takes them.
func ExampleHost_URL() {
	h, err := meadowrun.OpenHost(context.Background(), "ssh://me@build-box,me@10.0.0.7:2222?tofu=1")
	if err != nil {
		log.Fatal(err)
	}
	u, _ := meadowrun.HostURL(h)
	fmt.Println(u)
}

// Machines named in ~/.ssh/config, with a section such as
//
//	Host gpu-*
//	    User trainer
//	    IdentityFile ~/.ssh/gpu_key
//	    ProxyJump bastion.example.com
//
// are reached as ssh reaches them: here through the bastion.
func ExampleOptions_configFile() {
	h, err := ssh.NewHost([]string{"gpu-1", "gpu-2"}, ssh.Options{GiveUpAfter: 5 * time.Minute})
	if err != nil {
		log.Fatal(err)
	}
	defer h.Close()
	fmt.Println(h.URL())
}

// A Python function on SSH machines: the Python code (here the package
// stats, whose summary.py defines mean) travels with the deployment into the worker's working
// directory there, from which meadowrun's Python worker imports it, and
// the machines' own python3 runs it.
func ExampleNewHost_python() {
	h, err := ssh.NewHost([]string{"me@build-box", "me@10.0.0.7:2222"}, ssh.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer h.Close()
	mean := meadowrun.Named[[]float64, float64]("stats.summary.mean")
	o := meadowrun.Options{Deployment: meadowrun.PreinstalledInterpreter("python3", nil).WithGlobs("stats/*.py")}
	means, err := meadowrun.RunMap(context.Background(), mean, [][]float64{{1, 2}, {3, 4, 5}}, h, &meadowrun.MapOptions{Options: o})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(means)
}
