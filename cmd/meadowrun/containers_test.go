package main_test

import (
	"testing"

	"github.com/meadowrun-go/meadowrun/internal/containertest"
)

// A command in an image reaches a sidecar given with --sidecar on
// localhost; one that exits at once fails the job, saying so.
func TestRunWithASidecar(t *testing.T) {
	env := containertest.Require(t)
	u := newUser(t)
	u.env = append(u.env, "DOCKER_HOST="+env.DockerHost, "MR_U="+env.RegistryUser, "MR_P="+env.RegistryPassword)
	creds := []string{"--registry-user-env", "MR_U", "--registry-password-env", "MR_P"}
	// The sidecar may still be starting when the command does.
	dial := `import socket, time
for _ in range(100):
    try:
        print(socket.create_connection(("localhost", 7071)).recv(100).decode().strip()); break
    except OSError:
        time.sleep(0.1)`
	args := append([]string{"run", "--image", env.DebianImage, "--sidecar", env.ScratchImage + " -listen :7071 from the sidecar"}, creds...)
	u.want(u.run("", append(args, "--", "python3", "-c", dial)...), 0, []string{"hello from scratch from the sidecar\n"}, nil)

	args = append([]string{"run", "--image", env.DebianImage, "--sidecar", env.ScratchImage + " -exit 3 gone"}, creds...)
	u.want(u.run("", append(args, "--", "true")...), 125, nil, []string{"sidecar", "exit code 3"})

	u.want(u.run("", "run", "--sidecar", env.ScratchImage, "--", "true"), 2, nil, []string{"--sidecar needs --image"})
}
