package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/meadowrun-go/meadowrun/internal/agentproto"
)

// What the agent does for the cloud instance it runs on: it watches the
// instance metadata for a spot interruption notice and tells its clients
// (Options.IMDS), and it shuts the instance down once no client has used
// it for a while (agentproto.EnvIdleShutdown).

// DefaultIMDSPoll is how often the instance metadata is polled.
const DefaultIMDSPoll = 5 * time.Second

// instanceOptions adds to opts what the environment asks for the
// instance: metadata polling and idle shutdown.
func instanceOptions(opts *Options) error {
	defer func() {
		for _, k := range []string{agentproto.EnvIMDS, agentproto.EnvIMDSPoll, agentproto.EnvIdleShutdown, agentproto.EnvShutdownCommand} {
			os.Unsetenv(k)
		}
	}()
	opts.IMDS = os.Getenv(agentproto.EnvIMDS)
	if v := os.Getenv(agentproto.EnvIMDSPoll); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return fmt.Errorf("%s=%q: want a positive duration such as 5s", agentproto.EnvIMDSPoll, v)
		}
		opts.IMDSPoll = d
	}
	v := os.Getenv(agentproto.EnvIdleShutdown)
	if v == "" {
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return fmt.Errorf("%s=%q: want a positive duration such as 5m", agentproto.EnvIdleShutdown, v)
	}
	cmd := os.Getenv(agentproto.EnvShutdownCommand)
	if cmd == "" {
		cmd = "shutdown -h now"
		if os.Geteuid() != 0 {
			cmd = "sudo -n " + cmd
		}
	}
	// The agent stops once idle for d; the last agent of the machine to
	// stop shuts it down.
	opts.IdleExit = d
	dir, machine := opts.Dir, opts.Machine
	opts.OnIdle = func() {
		if others := otherAgents(dir, machine); len(others) > 0 {
			fmt.Fprintf(os.Stderr, "%s meadowrun agent: idle for %v; not shutting the machine down: agents %s still run\n",
				time.Now().Format(time.RFC3339), d, strings.Join(others, ", "))
			return
		}
		fmt.Fprintf(os.Stderr, "%s meadowrun agent: idle for %v with no client: shutting the machine down (%s)\n", time.Now().Format(time.RFC3339), d, cmd)
		c := exec.Command("sh", "-c", cmd)
		c.Stdout, c.Stderr = os.Stderr, os.Stderr
		if err := c.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "%s meadowrun agent: shutting down: %v\n", time.Now().Format(time.RFC3339), err)
		}
	}
	return nil
}

// otherAgents returns the pids of the other agents of this machine that
// run (by their pid files in dir).
func otherAgents(dir, machine string) []string {
	if machine == "" {
		machine = agentproto.SelfMachineID()
	}
	files, _ := filepath.Glob(filepath.Join(dir, "agent-*-"+machine+".pid"))
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 || pid == os.Getpid() {
			continue
		}
		if syscall.Kill(pid, 0) == nil {
			out = append(out, strconv.Itoa(pid))
		}
	}
	return out
}

// watchIMDS polls the instance metadata at base every poll until ctx
// ends or a spot interruption notice comes, which it then sends to every
// session (and each later one, in hello).
func (a *agent) watchIMDS(ctx context.Context, base string, poll time.Duration) {
	if poll <= 0 {
		poll = DefaultIMDSPoll
	}
	base = strings.TrimRight(base, "/")
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		if n, ok := spotNotice(ctx, client, base); ok {
			a.mu.Lock()
			a.notice = &n
			ss := make([]*session, 0, len(a.sessions))
			for _, s := range a.sessions {
				ss = append(ss, s)
			}
			a.mu.Unlock()
			fmt.Fprintf(os.Stderr, "%s meadowrun agent: spot interruption notice: %s at %s\n", time.Now().Format(time.RFC3339), n.Action, n.Time)
			for _, s := range ss {
				s.sendNotice(n)
			}
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(poll):
		}
	}
}

// spotNotice asks the metadata for spot/instance-action, with an IMDSv2
// token: present (200) only when the instance is to be interrupted. Any
// failure (no metadata service, 404) is no notice.
func spotNotice(ctx context.Context, client *http.Client, base string) (agentproto.Notice, bool) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, base+"/latest/api/token", nil)
	if err != nil {
		return agentproto.Notice{}, false
	}
	req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "300")
	resp, err := client.Do(req)
	if err != nil {
		return agentproto.Notice{}, false
	}
	tok, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return agentproto.Notice{}, false
	}
	req, err = http.NewRequestWithContext(ctx, http.MethodGet, base+"/latest/meta-data/spot/instance-action", nil)
	if err != nil {
		return agentproto.Notice{}, false
	}
	req.Header.Set("X-aws-ec2-metadata-token", strings.TrimSpace(string(tok)))
	resp, err = client.Do(req)
	if err != nil {
		return agentproto.Notice{}, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return agentproto.Notice{}, false
	}
	var body struct {
		Action string `json:"action"`
		Time   string `json:"time"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&body); err != nil || body.Action == "" {
		return agentproto.Notice{}, false
	}
	return agentproto.Notice{Notice: agentproto.NoticeSpotInterruption, Action: body.Action, Time: body.Time}, true
}

// sendNotice writes n on the session's control channel.
func (s *session) sendNotice(n agentproto.Notice) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	agentproto.WriteMessage(s.w, n)
}
