package k8shost

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/agentclient"
	"github.com/meadowrun-go/meadowrun/internal/agentproto"
	"github.com/meadowrun-go/meadowrun/internal/durable"
)

// Durable jobs on a cluster. With Options.JobsVolume (a
// PersistentVolumeClaim of the namespace), a detached job is supervised
// in the cluster: a batch Job of one pod (restartPolicy OnFailure) runs
// this program as the job's supervisor, with the journal, the job's logs
// and the program on the volume, mounted at jobsDir. Kubernetes restarts
// the supervisor when its container fails and replaces its pod when the
// pod is deleted or its node drained; the supervisor it starts resumes
// the job from the journal (durable.EnvSuperviseSubmission). The
// supervisor opens the cluster with the pod's service account
// (Options.JobsServiceAccount) and runs the job's workers in pods like
// any client.
//
// Any process holding the kubeconfig follows and cancels the job through
// the agent of the supervisor's pod (the same agent protocol as SSH
// machines, over exec streams), whose journal is the supervisor's: the
// machine of such a job, as the keeper names it, is the batch Job.

// jobsDir is where the jobs volume is mounted in supervisor pods.
const jobsDir = "/meadowrun-jobs"

// LabelJob is on the batch Job and pod of a durable job's supervisor,
// and of its reader.
const LabelJob = "meadowrun.dev/job"

// LabelReader is on the batch Job and pod that serve an ended job's
// journal from the volume.
const LabelReader = "meadowrun.dev/reader"

// inClusterContext is the context name of a host opened with the pod's
// own service account.
const inClusterContext = "in-cluster"

// inCluster is the configuration of a process in a pod of the cluster
// (ok): when no kubeconfig is given or found and the pod has a service
// account's token, the cluster is the pod's, reached with the token.
func inCluster(opts Options) (cfg *rest.Config, ns string, ok bool, err error) {
	if opts.KubeConfig != "" || os.Getenv("KUBECONFIG") != "" || os.Getenv("KUBERNETES_SERVICE_HOST") == "" {
		return nil, "", false, nil
	}
	if home, err := os.UserHomeDir(); err == nil {
		if _, err := os.Stat(filepath.Join(home, ".kube", "config")); err == nil {
			return nil, "", false, nil
		}
	}
	cfg, err = rest.InClusterConfig()
	if err != nil {
		return nil, "", true, fmt.Errorf("kubernetes: no kubeconfig, and the in-cluster configuration failed (does the pod have a service account token?): %w", err)
	}
	ns = opts.Namespace
	if ns == "" {
		b, _ := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
		ns = strings.TrimSpace(string(b))
	}
	if ns == "" {
		ns = "default"
	}
	return cfg, ns, true, nil
}

// JobHost is a Host that keeps durable jobs in the cluster
// (driver.JobKeeper): see Keeping.
type JobHost struct {
	*Host

	mu     sync.Mutex
	agents map[string]*jobAgent // by batch Job
}

// jobAgent is the agent client of a supervisor's pod, or of the reader
// pod of a job whose supervisor has ended (one per request).
type jobAgent struct {
	pod    string
	ah     *agentclient.Host
	reader bool
}

// release ends a reader's agent client once its request is answered.
func (a *jobAgent) release() {
	if a.reader {
		a.ah.Close()
	}
}

var (
	_ driver.JobKeeper = (*JobHost)(nil)
	_ driver.Describer = (*JobHost)(nil)
)

// Keeping returns h as the driver of its meadowrun.Host: a JobHost when
// Options.JobsVolume names the volume of durable jobs, else h, whose
// detached jobs are supervised by the submitting machine.
func (h *Host) Keeping() driver.Host {
	if h.opts.JobsVolume == "" {
		return h
	}
	return &JobHost{Host: h, agents: map[string]*jobAgent{}}
}

// KeepsWholeJobs tells the durable layer not to split a map across the
// nodes: the one supervisor runs its workers on all of them.
func (*JobHost) KeepsWholeJobs() bool { return true }

// Close implements driver.Host.
func (h *JobHost) Close() error {
	h.mu.Lock()
	agents := h.agents
	h.agents = map[string]*jobAgent{}
	h.mu.Unlock()
	for _, a := range agents {
		a.ah.Close()
	}
	return h.Host.Close()
}

// Closed implements driver.JobKeeper.
func (h *JobHost) Closed() bool {
	h.Host.mu.Lock()
	defer h.Host.mu.Unlock()
	return h.Host.closed
}

// supervisorJobName is the batch Job of job id's supervisor: one per job,
// so that whoever follows the job finds it by id.
func supervisorJobName(id string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(id) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	s := strings.Trim(b.String(), "-")
	sum := sha256.Sum256([]byte(id))
	if len(s) > 40 {
		s = s[:40]
	}
	return "meadowrun-job-" + s + "-" + hex.EncodeToString(sum[:])[:6]
}

// jobMachine is the agent machine id of job id's supervisor pods: the
// same for every pod of the job, so that their state directory (the
// journal on the volume) is the same.
func jobMachine(id string) string {
	sum := sha256.Sum256([]byte("job/" + id))
	return "j" + hex.EncodeToString(sum[:])[:7]
}

// supervisorScript is a supervisor container's command. It links the
// agents' state directory of the job to the volume, waits for the
// submission (written by the submitter once it has uploaded the program),
// runs the supervisor, and passes a SIGTERM on to it (a shutdown, unless
// the journal has a cancel request). A supervisor that fails is restarted
// by Kubernetes (the container exits with its status). Once the job has
// ended the pod stays while clients read the journal through its agent,
// and idle seconds after the last one left.
func supervisorScript(id string, idle time.Duration) string {
	m := jobMachine(id)
	st := jobsDir + "/state-" + m
	return `d=` + agentDir + `; j=` + jobsDir + `; st=` + st + `; id='` + id + `'; f="$j/jobs/$id.json"; ` +
		`mkdir -p "$st" "$d" "$j/bin" "$j/jobs" && ln -sfn "$st" "$d/state-` + m + `" || exit 1; ` +
		`i=0; while [ ! -e "$f" ]; do i=$((i+1)); if [ $i -gt 6000 ]; then echo "meadowrun: no submission of job $id after 10 minutes"; exit 0; fi; sleep 0.1; done; ` +
		`e="$j/bin/$(cat "$j/jobs/$id.program")"; w="$j/jobs"; [ -s "$j/jobs/$id.dir" ] && w="$(cat "$j/jobs/$id.dir")"; cd "$w" || exit 1; ` +
		`XDG_STATE_HOME="$st" ` + durable.EnvSupervise + `="$id" ` + durable.EnvSuperviseState + `="$st/meadowrun" ` +
		durable.EnvSuperviseSubmission + `="$f" "$e" </dev/null & p=$!; ` +
		`trap 'kill -TERM $p 2>/dev/null' TERM INT; c=0; while kill -0 $p 2>/dev/null; do wait $p; c=$?; done; ` +
		`[ $c -ne 0 ] && exit $c; ` +
		`t=0; while [ $t -lt ` + strconv.Itoa(int(max(idle, time.Second).Seconds())) + ` ]; do a=; ` +
		`for g in "$d"/agent-*.pid; do [ -s "$g" ] && kill -0 "$(cat "$g")" 2>/dev/null && a=1; done; ` +
		`if [ -n "$a" ]; then t=0; else t=$((t+1)); fi; sleep 1; done; exit 0`
}

// supervisorPod is the pod template of job id's supervisor.
func (h *JobHost) supervisorPod(id string) corev1.PodSpec {
	grace := int64(10)
	yes, no := true, false
	return corev1.PodSpec{
		RestartPolicy:                 corev1.RestartPolicyOnFailure,
		TerminationGracePeriodSeconds: &grace,
		ServiceAccountName:            h.opts.JobsServiceAccount,
		AutomountServiceAccountToken:  &yes,
		EnableServiceLinks:            &no,
		Containers: []corev1.Container{{
			Name:            containerName,
			Image:           h.opts.Image,
			ImagePullPolicy: corev1.PullIfNotPresent,
			Command:         []string{"sh", "-c", supervisorScript(id, h.opts.IdleTimeout)},
			Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")}},
			VolumeMounts: []corev1.VolumeMount{{Name: "meadowrun", MountPath: agentDir}, {Name: "jobs", MountPath: jobsDir}},
		}},
		Volumes: []corev1.Volume{
			{Name: "meadowrun", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			{Name: "jobs", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: h.opts.JobsVolume}}},
		},
	}
}

// SubmitJob implements driver.JobKeeper: it creates the batch Job of the
// job's supervisor, uploads the program to the volume through the pod's
// agent, hands the pod the submission, and returns once the supervisor has
// taken the job, with the batch Job's name as the machine. The job runs
// its workers on the cluster as the supervisor's pod sees it (in-cluster,
// with the service account). The deployment's files (sub.Files) go to
// the volume (deployFiles), and the supervisor runs in their tree.
func (h *JobHost) SubmitJob(ctx context.Context, machine string, sub driver.JobSubmission) (string, error) {
	id := sub.Job.ID
	if h.opts.ClusterURL == "" {
		return "", fmt.Errorf("%w: kubernetes: this host has no URL that a pod of the cluster can open (a PodCustomization, FlagLabels or Binaries), so its jobs cannot be supervised in the cluster", driver.ErrUnsupported)
	}
	name := supervisorJobName(id)
	labels := map[string]string{LabelManaged: "true", LabelJob: name}
	one, backoff, ttl := int32(1), int32(20), int32(24*3600)
	failed := batchv1.Failed
	bj := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels, Annotations: map[string]string{AnnotationOwner: h.owner, LabelJob: id}},
		Spec: batchv1.JobSpec{
			Parallelism: &one, Completions: &one, BackoffLimit: &backoff,
			// A deleted pod is replaced once it has stopped: two
			// supervisors never run the job at once.
			PodReplacementPolicy: &failed,
			// An ended batch Job, whose pod no longer serves the
			// journal, is removed a day later.
			TTLSecondsAfterFinished: &ttl,
			Template:                corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: h.supervisorPod(id)},
		},
	}
	if _, err := h.cs.BatchV1().Jobs(h.ns).Create(ctx, bj, metav1.CreateOptions{}); err != nil {
		return "", fmt.Errorf("kubernetes: creating the supervisor Job of job %s in namespace %s: %w", id, h.ns, h.classify(err))
	}
	fail := func(err error) (string, error) {
		h.deleteJob(name)
		return "", err
	}
	a, err := h.agentOf(ctx, name, true)
	if err != nil {
		return fail(err)
	}
	// The first request starts the pod's agent, uploading the program.
	if _, err := a.ah.InspectJob(ctx, a.pod, id, false, 0); err != nil && !errors.Is(err, driver.ErrJobNotFound) {
		return fail(err)
	}
	bin, err := h.progs.For(ctx, "linux/amd64")
	if err != nil {
		return fail(fmt.Errorf("%w: %w", driver.ErrPlatform, err))
	}
	tree := ""
	if len(sub.Files) > 0 {
		if tree, err = h.deployFiles(ctx, a, sub.Dir, sub.Files); err != nil {
			return fail(err)
		}
	}
	there := sub.Job
	there.Host, there.Machine = h.opts.ClusterURL, ""
	b, err := json.Marshal(driver.JobSubmission{Job: there, Args: sub.Args})
	if err != nil {
		return fail(fmt.Errorf("kubernetes: encoding job %s: %w", id, err))
	}
	// The tree of the deployment's files is where the supervisor runs.
	dirLine := ""
	if tree != "" {
		dirLine = `echo '` + tree + `' > "$j/jobs/$id.dir" && `
	}
	// The program the agent got goes to the volume, then the
	// submission, which the pod's shell waits for.
	script := `j=` + jobsDir + `; e=` + agentDir + `/` + agentproto.BinDir + `/` + bin.SHA + `; id='` + id + `'; umask 077; ` +
		`[ -x "$j/bin/` + bin.SHA + `" ] || { cp "$e" "$j/bin/` + bin.SHA + `.up" && mv -f "$j/bin/` + bin.SHA + `.up" "$j/bin/` + bin.SHA + `"; } || exit 1; ` +
		`echo ` + bin.SHA + ` > "$j/jobs/$id.program" && ` + dirLine + `cat > "$j/jobs/$id.json.up" && mv -f "$j/jobs/$id.json.up" "$j/jobs/$id.json" && echo submitted`
	s, err := h.exec(a.pod, []string{"sh", "-c", script})
	if err != nil {
		return fail(fmt.Errorf("%w: pod %s: %w", driver.ErrUnreachable, a.pod, err))
	}
	_, werr := s.Write(b)
	s.CloseWrite()
	out, _ := io.ReadAll(s)
	if err := errors.Join(werr, s.wait()); err != nil || !strings.Contains(string(out), "submitted") {
		s.Close()
		return fail(fmt.Errorf("%w: pod %s: handing over job %s: %s %v", driver.ErrUnreachable, a.pod, id, strings.TrimSpace(string(out)), err))
	}
	s.Close()
	// Wait until the supervisor has taken the job: its own errors (the
	// options, the host) are the submitter's.
	for {
		st, err := a.ah.InspectJob(ctx, a.pod, id, false, 0)
		switch {
		case err == nil && st.Job.State == driver.JobFailed:
			return "", fmt.Errorf("kubernetes: the supervisor of job %s failed: %s", id, st.Job.Error)
		case err == nil && st.Job.State != driver.JobSubmitted:
			return name, nil
		case err != nil && !errors.Is(err, driver.ErrJobNotFound):
			return fail(err)
		}
		select {
		case <-ctx.Done():
			return fail(ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// deployFiles places a job's deployment files (paths relative to dir)
// on the volume and returns the working tree that holds them, as the
// supervisor's pods see it. The files go to the pod's agent first (from
// the storage bucket when the host has one, else through the exec
// session, and only what the agent lacks), then to the volume by content
// (files/<sha256>, once per content), from which the tree is made once
// per list of files (deploy/<sha256 of the list>), as agents make theirs:
// the supervisor's globs then find the files that the submitter's did,
// and every later supervisor of the job finds them there.
func (h *JobHost) deployFiles(ctx context.Context, a *jobAgent, dir string, files []string) (string, error) {
	refs, err := a.ah.PutFiles(ctx, a.pod, dir, files)
	if err != nil {
		return "", fmt.Errorf("kubernetes: the deployment files of a durable job, to pod %s: %w", a.pod, err)
	}
	if len(refs) == 0 {
		return "", nil
	}
	script, tree := deployScript(refs)
	s, err := h.exec(a.pod, []string{"sh", "-s"})
	if err != nil {
		return "", fmt.Errorf("%w: pod %s: %w", driver.ErrUnreachable, a.pod, err)
	}
	defer s.Close()
	_, werr := io.WriteString(s, script)
	s.CloseWrite()
	out, _ := io.ReadAll(s)
	if err := errors.Join(werr, s.wait()); err != nil || !strings.Contains(string(out), "deployed") {
		return "", fmt.Errorf("%w: pod %s: placing the deployment's files on volume %s: %s %v", driver.ErrUnreachable, a.pod, h.opts.JobsVolume, strings.TrimSpace(string(out)), err)
	}
	return tree, nil
}

// deployScript is the shell script (read on standard input, so that no
// list is too long for a command line) that copies the files' content
// from a supervisor pod's agent to the volume and makes their working
// tree there, and the tree's path.
func deployScript(refs []agentproto.File) (script, tree string) {
	sum := sha256.New()
	for _, f := range refs {
		fmt.Fprintf(sum, "%s\x00%s\x00%o\x00", f.Path, f.SHA, f.Mode)
	}
	name := hex.EncodeToString(sum.Sum(nil))
	tree = jobsDir + "/" + agentproto.DeployDir + "/" + name
	var b strings.Builder
	b.WriteString(`j=` + jobsDir + `; s=` + agentDir + `/` + agentproto.FileDir + `; t=` + tree + `; umask 022
mkdir -p "$j/files" "$j/` + agentproto.DeployDir + `" || exit 1
if [ ! -d "$t" ]; then
u="$j/` + agentproto.DeployDir + `/.tree-` + name[:16] + `-$$"; rm -rf "$u"; mkdir "$u" || exit 1
f() { [ -e "$j/files/$1" ] || { cp "$s/$1" "$j/files/$1.up.$$" && mv -f "$j/files/$1.up.$$" "$j/files/$1"; } || exit 1
  mkdir -p "$(dirname "$u/$3")" && cp "$j/files/$1" "$u/$3" && chmod "$2" "$u/$3" || exit 1; }
`)
	for _, f := range refs {
		fmt.Fprintf(&b, "f %s %o %s\n", f.SHA, f.Mode&0o777, shQuote(f.Path))
	}
	b.WriteString(`[ -d "$t" ] || mv "$u" "$t" || exit 1
rm -rf "$u"
fi
echo deployed
`)
	return b.String(), tree
}

// shQuote quotes s for a POSIX shell.
func shQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// InspectJob implements driver.JobKeeper: the agent of the supervisor's
// pod answers.
func (h *JobHost) InspectJob(ctx context.Context, machine, id string, results bool, after uint64) (driver.JobStatus, error) {
	a, err := h.agentOf(ctx, machine, false)
	if err != nil {
		return driver.JobStatus{}, err
	}
	defer a.release()
	return a.ah.InspectJob(ctx, a.pod, id, results, after)
}

// JobLog implements driver.JobKeeper.
func (h *JobHost) JobLog(ctx context.Context, machine, id string, offset int64) (driver.JobStatus, error) {
	a, err := h.agentOf(ctx, machine, false)
	if err != nil {
		return driver.JobStatus{}, err
	}
	defer a.release()
	return a.ah.JobLog(ctx, a.pod, id, offset)
}

// CancelJob implements driver.JobKeeper: the agent of the supervisor's
// pod marks the journal and signals the supervisor, which records the
// end and exits, which completes the batch Job. A job whose supervisor
// has ended has nothing left to cancel.
func (h *JobHost) CancelJob(ctx context.Context, machine, id string) (driver.JobStatus, error) {
	a, err := h.agentOf(ctx, machine, false)
	if err != nil {
		return driver.JobStatus{}, err
	}
	defer a.release()
	if a.reader {
		st, err := a.ah.InspectJob(ctx, a.pod, id, false, 0)
		if err != nil {
			return st, err
		}
		if st.Job.Final() {
			return st, fmt.Errorf("%w: job %s %s", driver.ErrJobFinished, id, st.Job.State)
		}
		return st, fmt.Errorf("%w: job %s is %s, but its supervisor Job %s has ended (its supervisor failed more times than the backoff limit allows); nothing runs it any more", driver.ErrJobFinished, id, st.Job.State, machine)
	}
	return a.ah.CancelJob(ctx, a.pod, id)
}

// agentOf returns the agent client of the running pod of batch Job name,
// a supervisor's. While the batch Job runs but its pod does not (it is
// being replaced or scheduled) it waits for the pod, as long as the
// scheduler may take (ScheduleTimeout) when submitting, and a minute
// otherwise; then it is an error wrapping driver.ErrUnreachable. Once
// the batch Job has ended with its pod, the agent is a reader pod's
// (readerPodOf), which serves the journal from the volume.
func (h *JobHost) agentOf(ctx context.Context, name string, submitting bool) (*jobAgent, error) {
	if !strings.HasPrefix(name, "meadowrun-job-") {
		return nil, fmt.Errorf("%w: %q is not the supervisor Job of a durable job of this cluster", driver.ErrJobNotFound, name)
	}
	deadline := time.Now().Add(time.Minute)
	if submitting {
		deadline = time.Now().Add(h.opts.ScheduleTimeout + time.Minute)
	}
	for {
		pod, why, ended, err := h.supervisorPodOf(ctx, name)
		if err != nil {
			return nil, err
		}
		reader := false
		if pod == "" && ended && !submitting {
			if pod, err = h.readerPodOf(ctx, name); err != nil {
				return nil, fmt.Errorf("kubernetes: the supervisor of Job %s: %s; reading the job from volume %s: %w", name, why, h.opts.JobsVolume, err)
			}
			reader = true
		}
		if pod != "" {
			id := h.jobID(ctx, name)
			if reader {
				// A reader's agent is not kept: without a client it
				// ends, and the reader pod after it.
				ah, err := agentclient.New(agentclient.Options{Kind: "kubernetes pod", Programs: h.progs, Content: h.content(), Log: h.opts.Log, GiveUpAfter: 30 * time.Second},
					[]agentclient.MachineConfig{{Name: pod, Transport: &transport{h: h.Host, pod: pod, id: jobMachine(id)}, ConnectTimeout: 60 * time.Second, KeepAlive: 2 * time.Second}})
				if err != nil {
					return nil, err
				}
				return &jobAgent{pod: pod, ah: ah, reader: true}, nil
			}
			h.mu.Lock()
			a := h.agents[name]
			if a != nil && a.pod != pod {
				a.ah.Close()
				a = nil
			}
			if a == nil {
				ah, err := agentclient.New(agentclient.Options{Kind: "kubernetes pod", Programs: h.progs, Content: h.content(), Log: h.opts.Log, GiveUpAfter: 30 * time.Second},
					[]agentclient.MachineConfig{{Name: pod, Transport: &transport{h: h.Host, pod: pod, id: jobMachine(id)}, ConnectTimeout: 60 * time.Second, KeepAlive: 2 * time.Second}})
				if err != nil {
					h.mu.Unlock()
					return nil, err
				}
				a = &jobAgent{pod: pod, ah: ah}
				h.agents[name] = a
			}
			h.mu.Unlock()
			return a, nil
		}
		if ended || time.Now().After(deadline) {
			return nil, fmt.Errorf("%w: kubernetes: the supervisor of Job %s: %s", driver.ErrUnreachable, name, why)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// readerName is the batch Job of the reader pod of supervisor Job name
// (at most 63 characters, as supervisor Jobs' names are at most 61).
func readerName(name string) string { return name + "-r" }

// readerIdle is how long a reader pod waits for a client before it
// ends: the host's idle timeout, from 10 seconds to a minute.
func readerIdle(idle time.Duration) time.Duration { return min(max(idle, 10*time.Second), time.Minute) }

// readerScript is a reader pod's command: it links the agents' state
// directory of job id to the volume (mounted read-only), and the
// programs there (the supervisors', which a client running the same
// program then need not upload), and waits while an agent runs, ending
// idle seconds after the last one (or after its start, when no client
// comes).
func readerScript(id string, idle time.Duration) string {
	m := jobMachine(id)
	return `d=` + agentDir + `; mkdir -p "$d/` + agentproto.BinDir + `" && ln -sfn ` + jobsDir + `/state-` + m + ` "$d/state-` + m + `" || exit 1; ` +
		`for b in ` + jobsDir + `/bin/*; do case "${b##*/}" in *.*) ;; *) [ -x "$b" ] && ln -s "$b" "$d/` + agentproto.BinDir + `/${b##*/}" 2>/dev/null;; esac; done; ` +
		`t=0; while [ $t -lt ` + strconv.Itoa(int(idle.Seconds())) + ` ]; do a=; ` +
		`for g in "$d"/agent-*.pid; do [ -s "$g" ] && kill -0 "$(cat "$g")" 2>/dev/null && a=1; done; ` +
		`if [ -n "$a" ]; then t=0; else t=$((t+1)); fi; sleep 1; done; exit 0`
}

// readerPodOf returns the running reader pod of supervisor Job name, a
// job whose supervisor has ended: a pod of a batch Job of its own
// (readerName), made on demand, that mounts the jobs volume read-only
// and runs the agent (uploaded as to any pod) over the job's journal and
// logs. It ends once no client has used it for readerIdle, and its batch
// Job is then removed at once (ttlSecondsAfterFinished 0), so that
// nothing is left of it; readers of several clients share it.
func (h *JobHost) readerPodOf(ctx context.Context, name string) (string, error) {
	id := h.jobID(ctx, name)
	if id == "" {
		return "", fmt.Errorf("%w: kubernetes: the supervisor Job %s names no job", driver.ErrJobNotFound, name)
	}
	rname := readerName(name)
	labels := map[string]string{LabelManaged: "true", LabelJob: name, LabelReader: "true"}
	zero, one := int32(0), int32(1)
	no := false
	grace := int64(1)
	bj := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: rname, Labels: labels, Annotations: map[string]string{AnnotationOwner: h.owner, LabelJob: id}},
		Spec: batchv1.JobSpec{
			Parallelism: &one, Completions: &one, BackoffLimit: &zero, TTLSecondsAfterFinished: &zero,
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
				RestartPolicy:                 corev1.RestartPolicyNever,
				TerminationGracePeriodSeconds: &grace,
				AutomountServiceAccountToken:  &no,
				EnableServiceLinks:            &no,
				Containers: []corev1.Container{{
					Name:            containerName,
					Image:           h.opts.Image,
					ImagePullPolicy: corev1.PullIfNotPresent,
					Command:         []string{"sh", "-c", readerScript(id, readerIdle(h.opts.IdleTimeout))},
					Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
						corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("64Mi")}},
					VolumeMounts: []corev1.VolumeMount{{Name: "meadowrun", MountPath: agentDir}, {Name: "jobs", MountPath: jobsDir, ReadOnly: true}},
				}},
				Volumes: []corev1.Volume{
					{Name: "meadowrun", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
					{Name: "jobs", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: h.opts.JobsVolume, ReadOnly: true}}},
				},
			}},
		},
	}
	deadline := time.Now().Add(h.opts.ScheduleTimeout + time.Minute)
	why := "it has no pod yet"
	for {
		cur, err := h.cs.BatchV1().Jobs(h.ns).Get(ctx, rname, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			_, err = h.cs.BatchV1().Jobs(h.ns).Create(ctx, bj, metav1.CreateOptions{})
			if err != nil && !apierrors.IsAlreadyExists(err) {
				return "", fmt.Errorf("kubernetes: creating the reader Job %s in namespace %s: %w", rname, h.ns, h.classify(err))
			}
			continue
		case err != nil:
			return "", fmt.Errorf("kubernetes: the reader Job %s: %w", rname, h.classify(err))
		}
		if cur.DeletionTimestamp == nil && jobEnded(cur) {
			// An earlier reader that ended idle, not yet removed: a new
			// one replaces it (only that one: another client may have
			// made the new one already).
			bg := metav1.DeletePropagationBackground
			h.cs.BatchV1().Jobs(h.ns).Delete(ctx, rname, metav1.DeleteOptions{PropagationPolicy: &bg, Preconditions: &metav1.Preconditions{UID: &cur.UID}})
		} else if cur.DeletionTimestamp == nil {
			l, err := h.cs.CoreV1().Pods(h.ns).List(ctx, metav1.ListOptions{LabelSelector: "batch.kubernetes.io/job-name=" + rname})
			if err != nil {
				return "", fmt.Errorf("kubernetes: the pods of reader Job %s: %w", rname, h.classify(err))
			}
			var states []string
			for _, p := range l.Items {
				if !slices.ContainsFunc(p.OwnerReferences, func(o metav1.OwnerReference) bool { return o.UID == cur.UID }) {
					continue
				}
				if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning {
					return p.Name, nil
				}
				states = append(states, fmt.Sprintf("pod %s is %s%s", p.Name, p.Status.Phase, terminated(&p)))
			}
			if len(states) > 0 {
				why = strings.Join(states, "; ")
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%w: kubernetes: the reader pod of Job %s: %s", driver.ErrUnreachable, rname, why)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// jobEnded reports whether batch Job j has completed or failed.
func jobEnded(j *batchv1.Job) bool {
	for _, c := range j.Status.Conditions {
		if (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// jobID is the job id of supervisor Job name, from its annotation.
func (h *JobHost) jobID(ctx context.Context, name string) string {
	bj, err := h.cs.BatchV1().Jobs(h.ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return ""
	}
	return bj.Annotations[LabelJob]
}

// supervisorPodOf returns the running pod of supervisor Job name, or why
// none runs and whether the batch Job has ended.
func (h *JobHost) supervisorPodOf(ctx context.Context, name string) (string, string, bool, error) {
	l, err := h.cs.CoreV1().Pods(h.ns).List(ctx, metav1.ListOptions{LabelSelector: "batch.kubernetes.io/job-name=" + name})
	if err != nil {
		return "", "", false, fmt.Errorf("kubernetes: the pods of supervisor Job %s: %w", name, h.classify(err))
	}
	var states []string
	for _, p := range l.Items {
		if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning {
			return p.Name, "", false, nil
		}
		state := string(p.Status.Phase)
		if p.DeletionTimestamp != nil {
			state = "terminating"
		}
		states = append(states, fmt.Sprintf("pod %s is %s%s", p.Name, state, terminated(&p)))
	}
	why := "it has no pod yet"
	if len(l.Items) > 0 {
		why = strings.Join(states, "; ")
	}
	bj, err := h.cs.BatchV1().Jobs(h.ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", "", true, fmt.Errorf("%w: kubernetes: the supervisor Job %s is not in namespace %s (removed by meadowrun k8s clean, or by hand); the journal stays on volume %s", driver.ErrJobNotFound, name, h.ns, h.opts.JobsVolume)
	}
	if err != nil {
		return "", why, false, nil
	}
	for _, c := range bj.Status.Conditions {
		if (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) && c.Status == corev1.ConditionTrue {
			return "", fmt.Sprintf("its batch Job has ended (%s: %s), and with it the pod that served the journal, which stays on volume %s", c.Type, c.Message, h.opts.JobsVolume), true, nil
		}
	}
	return "", why, false, nil
}

// SetClusterURL sets the URL a supervisor in the cluster opens the host
// with, once the namespace is known.
func (h *Host) SetClusterURL(u string) { h.opts.ClusterURL = u }

// SupervisorJobName is the batch Job of job id's supervisor.
func SupervisorJobName(id string) string { return supervisorJobName(id) }

// SupervisorRules are the rules of the Role that the supervisors'
// service account needs in the namespace (docs/kubernetes.md): what any
// client of the host needs, since a supervisor is one.
func SupervisorRules() []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		{APIGroups: []string{"batch"}, Resources: []string{"jobs"}, Verbs: []string{"create", "get", "list", "watch", "delete"}},
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch", "delete"}},
		{APIGroups: []string{""}, Resources: []string{"pods/exec"}, Verbs: []string{"create", "get"}},
		{APIGroups: []string{""}, Resources: []string{"pods/log"}, Verbs: []string{"get"}},
	}
}

// JobMachine is the machine, as the keeper names it, of job id: its
// supervisor's batch Job. Any process finds a job by its id alone.
func (h *JobHost) JobMachine(id string) string { return supervisorJobName(id) }
