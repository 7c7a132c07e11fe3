// Package ec2sim is the EC2 test bench: moto_server for the EC2 and
// DynamoDB APIs, the made-up prices of ec2alloctest for the Pricing API,
// and an instance simulator that makes moto's instances real machines.
//
// moto keeps instances as records only. For each instance moto reports
// running, the simulator starts a machine the way scripts/sshnet.sh does:
// a network namespace on the test network's bridge, at the private
// address moto assigned (inside a VPC and subnet the bench creates with
// the network's address range), with its own home directory and an
// OpenSSH server that authorizes the public key of the instance's key
// pair and presents the host key of its user data (cloud-init's part).
// When moto reports it stopped or terminated, the machine goes. Traffic
// only ever goes to these namespaces: an instance with an address outside
// the network fails the test, and moto's invented public addresses are
// never used.
//
// It needs root and the network of scripts/sshnet.sh (internal/sshtest).
package ec2sim

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"golang.org/x/crypto/ssh"

	"github.com/meadowrun-go/meadowrun/internal/ec2alloc/ec2alloctest"
	"github.com/meadowrun-go/meadowrun/internal/ec2host"
	"github.com/meadowrun-go/meadowrun/internal/mototest"
	"github.com/meadowrun-go/meadowrun/internal/sshtest"
)

// Bench is moto with a VPC, a subnet, a security group, a key pair and an
// image ready for launches, the Pricing API fake, and the simulator.
type Bench struct {
	Moto *mototest.Server
	// Config reaches moto, PricingConfig the Pricing API fake.
	Config, PricingConfig aws.Config
	EC2                   *ec2.Client
	Net                   *sshtest.Net
	VPC, Group            string
	// Subnet is in zone a, Subnet2 in zone b.
	Subnet, Subnet2 string
	AMI             string
	// KeyName is the key pair, KeyFile its private key.
	KeyName, KeyFile string
	Sim              *Sim
	// Dir is a directory of the bench's, removed when the test ends.
	Dir string
}

// Open starts the bench; everything stops when t ends.
func Open(t testing.TB) *Bench {
	t.Helper()
	n := sshtest.Open(t)
	moto := mototest.Start(t)
	b := &Bench{Moto: moto, Config: moto.Config(), Net: n, Dir: t.TempDir()}
	b.EC2 = ec2.NewFromConfig(b.Config)
	ctx := t.Context()
	prefix := fmt.Sprintf("10.99.%d.", n.ID)
	vpc, err := b.EC2.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String(prefix + "0/24")})
	if err != nil {
		t.Fatalf("ec2sim: CreateVpc: %v", err)
	}
	b.VPC = aws.ToString(vpc.Vpc.VpcId)
	// Above sshnet's machines (below .100): .128/26 here, .192/26 for a
	// second subnet (Subnet2, in another zone).
	b.Subnet = b.CreateSubnet(t, prefix+"128/26", mototest.Region+"a")
	b.Subnet2 = b.CreateSubnet(t, prefix+"192/26", mototest.Region+"b")
	sg, err := b.EC2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("meadowrun-test"),
		Description: aws.String("ssh from the tests"), VpcId: aws.String(b.VPC)})
	if err != nil {
		t.Fatalf("ec2sim: CreateSecurityGroup: %v", err)
	}
	b.Group = aws.ToString(sg.GroupId)
	imgs, err := b.EC2.DescribeImages(ctx, &ec2.DescribeImagesInput{Filters: []types.Filter{{Name: aws.String("architecture"), Values: []string{"x86_64"}}}})
	if err != nil || len(imgs.Images) == 0 {
		t.Fatalf("ec2sim: no x86_64 image in moto: %v", err)
	}
	b.AMI = aws.ToString(imgs.Images[0].ImageId)

	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "meadowrun-test-key-pair")
	if err != nil {
		t.Fatal(err)
	}
	b.KeyFile = filepath.Join(t.TempDir(), "key-pair")
	if err := os.WriteFile(b.KeyFile, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	spub, _ := ssh.NewPublicKey(pub)
	b.KeyName = "meadowrun-test"
	if _, err := b.EC2.ImportKeyPair(ctx, &ec2.ImportKeyPairInput{KeyName: aws.String(b.KeyName), PublicKeyMaterial: ssh.MarshalAuthorizedKey(spub)}); err != nil {
		t.Fatalf("ec2sim: ImportKeyPair: %v", err)
	}

	tys := ec2alloctest.DescribeTypes(t, b.EC2)
	fake := ec2alloctest.PricingServer(t, mototest.Region, tys)
	b.PricingConfig = moto.Config()
	b.PricingConfig.BaseEndpoint = aws.String(fake.URL)

	b.Sim = Start(t, b.EC2, n, map[string]string{b.KeyName: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(spub)))})
	return b
}

// Fault is an error a [Bench.Faulty] proxy answers instead of moto.
type Fault struct {
	Code, Message string
}

// Faulty returns a configuration that reaches moto through a loopback
// proxy (stopped when t ends) that asks fail about every EC2 request,
// by its action and form parameters, and answers those it returns a
// fault for with that error, as EC2 does (HTTP 400, the EC2 error XML),
// without moto seeing them: capacity and quota errors moto never makes.
func (b *Bench) Faulty(t testing.TB, fail func(action string, form url.Values) *Fault) aws.Config {
	t.Helper()
	target, _ := url.Parse(b.Moto.Endpoint)
	proxy := httputil.NewSingleHostReverseProxy(target)
	p := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		if form, err := url.ParseQuery(string(body)); err == nil && form.Get("Action") != "" {
			if f := fail(form.Get("Action"), form); f != nil {
				w.Header().Set("Content-Type", "text/xml")
				w.WriteHeader(http.StatusBadRequest)
				fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>%s</Code><Message>%s</Message></Error></Errors><RequestID>ec2sim-fault</RequestID></Response>`, f.Code, f.Message)
				return
			}
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(p.Close)
	cfg := b.Config
	cfg.BaseEndpoint = aws.String(p.URL)
	return cfg
}

// CreateSubnet makes another subnet of the bench's VPC in zone.
func (b *Bench) CreateSubnet(t testing.TB, cidr, zone string) string {
	t.Helper()
	s, err := b.EC2.CreateSubnet(t.Context(), &ec2.CreateSubnetInput{VpcId: aws.String(b.VPC), CidrBlock: aws.String(cidr), AvailabilityZone: aws.String(zone)})
	if err != nil {
		t.Fatalf("ec2sim: CreateSubnet %s in %s: %v", cidr, zone, err)
	}
	return aws.ToString(s.Subnet.SubnetId)
}

// Sim boots a machine for each instance moto runs.
type Sim struct {
	t    testing.TB
	api  *ec2.Client
	net  *sshtest.Net
	dir  string
	keys map[string]string // key pair name → public key
	home string

	mu       sync.Mutex
	machines map[string]*machine
	next     int
	booted   []string // instance ids, in boot order
	paused   bool
	stop     chan struct{}
	done     chan struct{}
}

// Pause keeps instances that start running from now on from booting
// (while paused, and after): they never answer, as an instance whose
// image is broken would not.
func (s *Sim) Pause() {
	s.mu.Lock()
	s.paused = true
	s.mu.Unlock()
}

type machine struct {
	id, ip, ns, veth, dir string
	cmd                   *exec.Cmd
	exited                chan struct{}
	shutdown              bool // asked for, and passed on to moto
}

// Start starts the simulator for the instances api reports, on network n;
// keys maps key pair names to their public keys. It stops, and takes
// every machine down, when t ends.
func Start(t testing.TB, api *ec2.Client, n *sshtest.Net, keys map[string]string) *Sim {
	t.Helper()
	home, err := os.UserHomeDir()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	s := &Sim{t: t, api: api, net: n, dir: t.TempDir(), keys: keys, home: home, machines: map[string]*machine{},
		stop: make(chan struct{}), done: make(chan struct{})}
	go s.loop()
	t.Cleanup(s.close)
	return s
}

func (s *Sim) loop() {
	defer close(s.done)
	for {
		s.sync()
		select {
		case <-s.stop:
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// sync boots the instances moto runs that have no machine yet and halts
// the machines of instances it no longer runs.
func (s *Sim) sync() {
	out, err := s.api.DescribeInstances(s.t.Context(), &ec2.DescribeInstancesInput{})
	if err != nil {
		return // moto stopping with the test
	}
	s.shutdowns()
	running := map[string]types.Instance{}
	for _, r := range out.Reservations {
		for _, i := range r.Instances {
			if i.State != nil && i.State.Name == types.InstanceStateNameRunning {
				running[aws.ToString(i.InstanceId)] = i
			}
		}
	}
	s.mu.Lock()
	var gone []*machine
	for id, m := range s.machines {
		if _, ok := running[id]; !ok {
			gone = append(gone, m)
			delete(s.machines, id)
		}
	}
	var boot []types.Instance
	for id, i := range running {
		if _, ok := s.machines[id]; !ok {
			if s.paused {
				s.machines[id] = &machine{id: id} // never booted
				continue
			}
			boot = append(boot, i)
		}
	}
	s.mu.Unlock()
	for _, m := range gone {
		s.halt(m)
	}
	for _, i := range boot {
		if m, err := s.boot(i); err != nil {
			s.t.Errorf("ec2sim: booting %s: %v", aws.ToString(i.InstanceId), err)
			s.mu.Lock()
			s.machines[aws.ToString(i.InstanceId)] = &machine{id: aws.ToString(i.InstanceId)} // not again
			s.mu.Unlock()
		} else {
			s.mu.Lock()
			s.machines[m.id] = m
			s.booted = append(s.booted, m.id)
			s.mu.Unlock()
		}
	}
}

// Booted returns the instances booted so far, in order.
func (s *Sim) Booted() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.booted)
}

// Running returns the instances that have a machine now, by address.
func (s *Sim) Running() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]string{}
	for id, m := range s.machines {
		if m.cmd != nil {
			out[id] = m.ip
		}
	}
	return out
}

func run(args ...string) error {
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// boot starts the machine of instance i.
func (s *Sim) boot(i types.Instance) (*machine, error) {
	id, ip := aws.ToString(i.InstanceId), aws.ToString(i.PrivateIpAddress)
	_, bridgeNet, _ := net.ParseCIDR(fmt.Sprintf("10.99.%d.0/24", s.net.ID))
	if a := net.ParseIP(ip); a == nil || !bridgeNet.Contains(a) {
		return nil, fmt.Errorf("its private address %q lies outside the test network %s: launch it in the bench's subnets", ip, bridgeNet)
	}
	pub, ok := s.keys[aws.ToString(i.KeyName)]
	if !ok {
		return nil, fmt.Errorf("key pair %q unknown to the simulator", aws.ToString(i.KeyName))
	}
	attr, err := s.api.DescribeInstanceAttribute(s.t.Context(), &ec2.DescribeInstanceAttributeInput{InstanceId: aws.String(id), Attribute: types.InstanceAttributeNameUserData})
	if err != nil {
		return nil, fmt.Errorf("reading its user data: %w", err)
	}
	var ud []byte
	if attr.UserData != nil {
		ud, _ = base64.StdEncoding.DecodeString(aws.ToString(attr.UserData.Value))
	}
	hostKey := ec2host.HostKeyOfUserData(string(ud))
	if hostKey == "" {
		return nil, fmt.Errorf("its user data carries no host key")
	}
	s.mu.Lock()
	s.next++
	k := s.next
	s.mu.Unlock()
	m := &machine{id: id, ip: ip, ns: fmt.Sprintf("mr%de%d", s.net.ID, k), veth: fmt.Sprintf("mr%dw%d", s.net.ID, k),
		dir: filepath.Join(s.dir, id), exited: make(chan struct{})}
	if err := os.MkdirAll(m.dir, 0o700); err != nil {
		return nil, err
	}
	files := map[string]string{"hostkey": hostKey, "authorized_keys": pub + "\n", "sshd_config": fmt.Sprintf(`# Simulated EC2 instance %s (internal/ec2sim).
Port 22
ListenAddress 0.0.0.0
HostKey %s/hostkey
PidFile none
AuthorizedKeysFile %s/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
AllowStreamLocalForwarding yes
AllowTcpForwarding local
ClientAliveInterval 1
ClientAliveCountMax 3
MaxSessions 100
MaxStartups 100
`, id, m.dir, m.dir)}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(m.dir, name), []byte(body), 0o600); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(filepath.Join(m.dir, "shutdown"), []byte(shutdownScript(m.dir)), 0o700); err != nil {
		return nil, err
	}
	bridge := fmt.Sprintf("mrbr%d", s.net.ID)
	for _, c := range [][]string{
		{"ip", "netns", "add", m.ns},
		{"ip", "link", "add", m.veth, "type", "veth", "peer", "name", "eth0", "netns", m.ns},
		{"ip", "link", "set", m.veth, "master", bridge, "up"},
		{"ip", "-n", m.ns, "addr", "add", ip + "/24", "dev", "eth0"},
		{"ip", "-n", m.ns, "link", "set", "eth0", "up"},
		{"ip", "-n", m.ns, "link", "set", "lo", "up"},
		// The instance metadata's address, where Interrupt runs the mock.
		{"ip", "-n", m.ns, "addr", "add", imdsAddr + "/32", "dev", "lo"},
	} {
		if err := run(c...); err != nil {
			s.halt(m)
			return nil, err
		}
	}
	// As scripts/sshnet.sh: nsenter --net keeps the host's sysfs (and
	// cgroups); a private mount namespace gives the machine its own home.
	// Every step execs, so the process is sshd's.
	m.cmd = exec.Command("nsenter", "--net=/run/netns/"+m.ns, "unshare", "-m", "--propagation", "private",
		"sh", "-c", `set -e
mount -t tmpfs -o size=2g,mode=0700 tmpfs "$1"
`+shutdownMount+`
exec /usr/sbin/sshd -D -f "$2/sshd_config" -E "$2/sshd.log"`, "sh", s.home, m.dir)
	log, _ := os.Create(filepath.Join(m.dir, "start.log"))
	m.cmd.Stdout, m.cmd.Stderr = log, log
	if err := m.cmd.Start(); err != nil {
		s.halt(m)
		return nil, err
	}
	go func() {
		m.cmd.Wait()
		log.Close()
		close(m.exited)
	}()
	return m, nil
}

// halt stops everything that runs in m's namespace and removes it.
func (s *Sim) halt(m *machine) {
	if m.ns == "" {
		return
	}
	if out, err := exec.Command("ip", "netns", "pids", m.ns).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			var pid int
			if _, err := fmt.Sscan(f, &pid); err == nil && pid > 1 {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	if m.cmd != nil && m.cmd.Process != nil {
		m.cmd.Process.Kill()
		<-m.exited
	}
	exec.Command("ip", "link", "del", m.veth).Run()
	exec.Command("ip", "netns", "del", m.ns).Run()
	// The next bench's moto hands out the same addresses: forget this
	// machine's link address.
	exec.Command("ip", "neigh", "del", m.ip, "dev", fmt.Sprintf("mrbr%d", s.net.ID)).Run()
}

// Crash takes instance id's machine down without telling moto, as a
// machine that dies would: its address stops answering.
func (s *Sim) Crash(id string) {
	s.mu.Lock()
	m := s.machines[id]
	s.mu.Unlock()
	if m != nil {
		s.halt(m)
	}
}

func (s *Sim) close() {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	ms := make([]*machine, 0, len(s.machines))
	for _, m := range s.machines {
		ms = append(ms, m)
	}
	s.machines = map[string]*machine{}
	s.mu.Unlock()
	for _, m := range ms {
		s.halt(m)
	}
}
