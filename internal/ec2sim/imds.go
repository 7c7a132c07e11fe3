package ec2sim

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// imdsAddr is the instance metadata service's address; each simulated
// instance has it on its loopback device.
const imdsAddr = "169.254.169.254"

// mockModule is the wrapper module that pins the metadata mock, relative
// to the repository's root.
const mockModule = "scripts/imdsmock"

var mockBuild struct {
	once sync.Once
	path string
	err  error
}

// metadataMock returns amazon-ec2-metadata-mock, built from the wrapper
// module once per version (kept in the user's cache directory).
func metadataMock() (string, error) {
	mockBuild.once.Do(func() {
		mockBuild.path, mockBuild.err = buildMetadataMock()
	})
	return mockBuild.path, mockBuild.err
}

func buildMetadataMock() (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, mockModule)
	sum, err := os.ReadFile(filepath.Join(dir, "go.sum"))
	if err != nil {
		return "", fmt.Errorf("the metadata mock's module: %w", err)
	}
	h := sha256.Sum256(sum)
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(cache, "meadowrun-test", "ec2-metadata-mock-"+hex.EncodeToString(h[:6]))
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		return "", err
	}
	tmp := fmt.Sprintf("%s.%d", bin, os.Getpid())
	cmd := exec.Command("go", "build", "-o", tmp, "github.com/aws/amazon-ec2-metadata-mock/cmd/ec2-metadata-mock")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the metadata mock in %s: %v: %s", mockModule, err, out)
	}
	return bin, os.Rename(tmp, bin)
}

// repoRoot is the directory of meadowrun's go.mod above the working
// directory (a package's, in tests).
func repoRoot() (string, error) {
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(d, mockModule, "go.mod")); err == nil {
			return d, nil
		}
		up := filepath.Dir(d)
		if up == d {
			return "", errors.New("ec2sim: no " + mockModule + " above the working directory")
		}
		d = up
	}
}

// Interrupt gives instance id a spot interruption notice, as EC2 does
// two minutes before it reclaims a spot instance: it starts
// amazon-ec2-metadata-mock in the instance's network namespace on
// 169.254.169.254:80, serving spot/instance-action (action terminate) at
// once. The instance keeps running; it goes when the test ends or moto
// terminates it.
func (s *Sim) Interrupt(t *testing.T, id string) {
	t.Helper()
	bin, err := metadataMock()
	if err != nil {
		t.Fatalf("ec2sim: %v", err)
	}
	s.mu.Lock()
	m := s.machines[id]
	s.mu.Unlock()
	if m == nil || m.ns == "" {
		t.Fatalf("ec2sim: Interrupt: instance %s has no machine", id)
	}
	log, err := os.Create(filepath.Join(m.dir, "metadata-mock.log"))
	if err != nil {
		t.Fatal(err)
	}
	// Killed with everything else in the namespace when the machine halts.
	cmd := exec.Command("nsenter", "--net=/run/netns/"+m.ns, bin, "spot", "--hostname", imdsAddr, "--port", "80", "--action", "terminate")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		t.Fatalf("ec2sim: starting the metadata mock on %s: %v", id, err)
	}
	go func() {
		cmd.Wait()
		log.Close()
	}()
}
