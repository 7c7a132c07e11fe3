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
