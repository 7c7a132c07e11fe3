package agentclient

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/agentproto"
	"github.com/meadowrun-go/meadowrun/internal/pyworker/pytest"
	"github.com/meadowrun-go/meadowrun/internal/wire"
)

// objectStore is an object store over HTTP in memory: GET, PUT and POST
// (whose body is the object) of /PATH; a query (a signature) is ignored.
// Requests of paths under refuse are answered 403.
type objectStore struct {
	srv    *httptest.Server
	refuse string

	mu   sync.Mutex
	objs map[string][]byte
	n    map[string]int // "METHOD /first/segment"
}

func newObjectStore(t *testing.T) *objectStore {
	s := &objectStore{objs: map[string][]byte{}, n: map[string]int{}}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seg, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		s.mu.Lock()
		s.n[r.Method+" /"+seg]++
		refuse := s.refuse != "" && strings.HasPrefix(r.URL.Path, s.refuse)
		s.mu.Unlock()
		if refuse {
			http.Error(w, "refused", http.StatusForbidden)
			return
		}
		switch r.Method {
		case http.MethodGet:
			s.mu.Lock()
			b, ok := s.objs[r.URL.Path]
			s.mu.Unlock()
			if !ok {
				http.NotFound(w, r)
				return
			}
			w.Write(b)
		case http.MethodPut, http.MethodPost:
			b, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			s.mu.Lock()
			s.objs[r.URL.Path] = b
			s.mu.Unlock()
		default:
			http.Error(w, "no", http.StatusMethodNotAllowed)
		}
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *objectStore) count(what string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n[what]
}

func (s *objectStore) keys(prefix string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ks []string
	for k := range s.objs {
		if strings.HasPrefix(k, prefix) {
			ks = append(ks, k)
		}
	}
	return ks
}

// testValues is a ValueStore on an objectStore, as a host's bucket is:
// arguments under /args/SHA, results under /results/NAME, URLs carrying a
// "signature" that no message may show.
type testValues struct {
	s   *objectStore
	min int64

	mu      sync.Mutex
	written map[string]int
}

const signature = "X-Signature=s3cr3t"

func (v *testValues) MinBytes() int64 { return v.min }

func (v *testValues) Argument(ctx context.Context, sha string, payload []byte) (Download, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.written[sha] == 0 {
		v.s.mu.Lock()
		v.s.objs["/args/"+sha] = bytes.Clone(payload)
		v.s.mu.Unlock()
	}
	v.written[sha]++
	return Download{URL: v.s.srv.URL + "/args/" + sha + "?" + signature, Header: "Authorization: Bearer tok"}, nil
}

func (v *testValues) ResultTarget(ctx context.Context, name string, size int64) (agentproto.Target, error) {
	return agentproto.Target{Method: http.MethodPut, URL: v.s.srv.URL + "/results/" + name + "?" + signature}, nil
}

func (v *testValues) ReadArgument(ctx context.Context, sha string, size int64) ([]byte, error) {
	v.s.mu.Lock()
	defer v.s.mu.Unlock()
	b, ok := v.s.objs["/args/"+sha]
	if !ok || int64(len(b)) != size {
		return nil, errors.New("no such argument")
	}
	return b, nil
}

func (v *testValues) TakeResult(ctx context.Context, name, sha string, size int64) ([]byte, error) {
	v.s.mu.Lock()
	defer v.s.mu.Unlock()
	b, ok := v.s.objs["/results/"+name]
	if !ok {
		return nil, errors.New("no such result")
	}
	if sum := sha256.Sum256(b); int64(len(b)) != size || hex.EncodeToString(sum[:]) != sha {
		return nil, fmt.Errorf("result %s: %d bytes, not what was uploaded", name, len(b))
	}
	delete(v.s.objs, "/results/"+name)
	return b, nil
}

// hexWorker starts a Python worker (a real worker behind the real agent)
// and defines binascii.hexlify on it as function 1: its result is twice
// the size of its argument.
func hexWorker(t *testing.T, h *Host) (driver.Worker, *wire.Writer, *wire.Reader) {
	t.Helper()
	h.Describe(t.Context()) // connects the machine
	w, err := h.Start(t.Context(), driver.WorkerSpec{Name: "w1", Resources: driver.Resources{LogicalCPU: 0.1},
		Runtime: driver.RuntimePython, Deployment: driver.Deployment{Kind: driver.DeployInterpreter}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Kill(); <-w.Done() })
	in := wire.NewReader(w.Conn())
	if typ, _, err := in.Next(); err != nil || typ != wire.TypeHello {
		t.Fatalf("first frame: type %#x, %v; want a Hello", typ, err)
	}
	out := wire.NewWriter(w.Conn())
	if err := out.WriteFrame(wire.TypeDefine, wire.AppendDefine(nil, wire.Define{ID: 1, Name: "binascii.hexlify", Codec: "bytes/bytes"})); err != nil {
		t.Fatal(err)
	}
	return w, out, in
}

// results reads frames until it has n results, by key.
func results(t *testing.T, in *wire.Reader, n int) map[uint64]wire.Result {
	t.Helper()
	got := map[uint64]wire.Result{}
	for len(got) < n {
		typ, body, err := in.Next()
		if err != nil {
			t.Fatalf("after %d results: %v", len(got), err)
		}
		if typ != wire.TypeResults {
			continue
		}
		rs, err := wire.DecodeResults(body)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			if _, dup := got[r.Key]; dup {
				t.Fatalf("result of task %d twice", r.Key)
			}
			got[r.Key] = r
		}
	}
	return got
}

// Large arguments and results go through the store, each argument
// written once; the worker and the coordinator see the plain protocol,
// and the stream carries neither.
func TestLargeValuesTravelThroughTheStore(t *testing.T) {
	pytest.Require(t)
	s := newObjectStore(t)
	vs := &testValues{s: s, min: 64 << 10, written: map[string]int{}}
	tr := newAgentTransport(t)
	h := newHost(t, Options{Log: io.Discard, Values: vs}, tr)
	_, out, in := hexWorker(t, h)
	big := bytes.Repeat([]byte("meadowrun"), 100_000) // 900 kB, its result 1.8 MB
	small := []byte("small")
	before := tr.bytes.Load()
	tasks := []wire.Task{{Key: 1, Func: 1, Payload: big}, {Key: 2, Func: 1, Payload: small}, {Key: 3, Func: 1, Payload: big}}
	if err := out.WriteFrame(wire.TypeTasks, wire.AppendTasks(nil, tasks)); err != nil {
		t.Fatal(err)
	}
	if err := out.WriteFrame(wire.TypeTasks, wire.AppendTasks(nil, []wire.Task{{Key: 4, Func: 1, Payload: big}})); err != nil {
		t.Fatal(err)
	}
	if err := out.Flush(); err != nil {
		t.Fatal(err)
	}
	got := results(t, in, 4)
	for _, task := range append(tasks, wire.Task{Key: 4, Payload: big}) {
		r := got[task.Key]
		if r.Status != wire.StatusOK || string(r.Payload) != hex.EncodeToString(task.Payload) {
			t.Fatalf("task %d: status %v, %d bytes; want the %d of hexlify", task.Key, r.Status, len(r.Payload), 2*len(task.Payload))
		}
	}
	if carried := tr.bytes.Load() - before; carried > int64(len(big)) {
		t.Errorf("the stream carried %d bytes, want less than one argument (%d)", carried, len(big))
	}
	if n := len(s.keys("/args/")); n != 1 {
		t.Errorf("%d arguments in the store, want the one (written once for three tasks)", n)
	}
	if n := s.count("GET /args"); n != 3 {
		t.Errorf("the agent downloaded %d arguments, want 3", n)
	}
	if n := s.count("PUT /results"); n != 3 {
		t.Errorf("the agent uploaded %d results, want the 3 large ones", n)
	}
	if ks := s.keys("/results/"); len(ks) != 0 {
		t.Errorf("results left in the store after they were read: %v", ks)
	}
}

// A store the agent cannot download from or upload to: every value goes
// through the stream, the log says why, and never shows a signature.
func TestLargeValuesFallBackToTheStream(t *testing.T) {
	pytest.Require(t)
	for _, refuse := range []string{"/args/", "/results/"} {
		t.Run(refuse, func(t *testing.T) {
			s := newObjectStore(t)
			s.refuse = refuse
			vs := &testValues{s: s, min: 64 << 10, written: map[string]int{}}
			log := &logLines{}
			h := newHost(t, Options{Log: log, Values: vs}, newAgentTransport(t))
			_, out, in := hexWorker(t, h)
			big := bytes.Repeat([]byte("x"), 200_000)
			tasks := []wire.Task{{Key: 1, Func: 1, Payload: big}, {Key: 2, Func: 1, Payload: big}}
			if err := out.WriteFrame(wire.TypeTasks, wire.AppendTasks(nil, tasks)); err != nil {
				t.Fatal(err)
			}
			if err := out.Flush(); err != nil {
				t.Fatal(err)
			}
			got := results(t, in, 2)
			if r := got[1]; r.Status != wire.StatusOK || string(r.Payload) != hex.EncodeToString(big) {
				t.Fatalf("task 1: status %v, %d bytes", r.Status, len(r.Payload))
			}
			if r := got[2]; r.Status != wire.StatusOK || string(r.Payload) != hex.EncodeToString(big) {
				t.Fatalf("task 2: status %v, %d bytes", r.Status, len(r.Payload))
			}
			log.mu.Lock()
			msg := log.buf.String()
			log.mu.Unlock()
			want := map[string]string{"/args/": "could not download an argument", "/results/": "could not upload a result"}[refuse]
			if !strings.Contains(msg, want) || !strings.Contains(msg, "403") {
				t.Fatalf("the log does not say %q with the store's answer:\n%s", want, msg)
			}
			if strings.Contains(msg, "s3cr3t") || strings.Contains(msg, "tok") {
				t.Fatalf("the log shows a signature or token:\n%s", msg)
			}
		})
	}
}

// A task the agent could not download is sent again inline, and, when it
// had been cancelled, cancelled again after it (the agent passed the
// first Cancel on before the task). The agent's side is this test's.
func TestARefusedTaskIsSentAgainInline(t *testing.T) {
	client, agentSide := net.Pipe()
	defer client.Close()
	defer agentSide.Close()
	s := newObjectStore(t)
	vs := &testValues{s: s, min: 1000, written: map[string]int{}}
	rs := newRefStream(client, bufio.NewReader(client), vs, func(string, ...any) {})
	go rs.Read(make([]byte, 1)) // the coordinator's reader: it handles the agent's frames
	big := bytes.Repeat([]byte("y"), 5000)
	go func() {
		b := frame(wire.TypeTasks, wire.AppendTasks(nil, []wire.Task{{Key: 2, Func: 1, Payload: big}, {Key: 3, Func: 1, Payload: []byte("s")}}))
		b = append(b, frame(wire.TypeCancel, wire.AppendCancel(nil, 2))...)
		rs.Write(b)
	}()
	in, out := wire.NewReader(agentSide), wire.NewWriter(agentSide)
	next := func(want byte) []byte {
		t.Helper()
		typ, body, err := in.Next()
		if err != nil || typ != want {
			t.Fatalf("frame %#x, %v; want %#x", typ, err, want)
		}
		return body
	}
	tr, err := agentproto.DecodeTaskRef(next(agentproto.TypeTaskRef))
	if err != nil || tr.Key != 2 || tr.Ref.Size != int64(len(big)) || !strings.Contains(tr.Ref.URL, "/args/") {
		t.Fatalf("TaskRef %+v, %v", tr, err)
	}
	if ts, err := wire.DecodeTasks(next(wire.TypeTasks)); err != nil || len(ts) != 1 || ts[0].Key != 3 {
		t.Fatalf("the small task: %+v, %v", ts, err)
	}
	if key, err := wire.DecodeCancel(next(wire.TypeCancel)); err != nil || key != 2 {
		t.Fatalf("Cancel %d, %v", key, err)
	}
	if err := out.WriteFrame(agentproto.TypeRefFailed, agentproto.AppendRefFailed(nil, 2, agentproto.RefTask, "download from store: 403 Forbidden")); err != nil {
		t.Fatal(err)
	}
	go out.Flush()
	ts, err := wire.DecodeTasks(next(wire.TypeTasks))
	if err != nil || len(ts) != 1 || ts[0].Key != 2 || ts[0].Func != 1 || !bytes.Equal(ts[0].Payload, big) {
		t.Fatalf("the task sent again: %d tasks, %v", len(ts), err)
	}
	if key, err := wire.DecodeCancel(next(wire.TypeCancel)); err != nil || key != 2 {
		t.Fatalf("Cancel again: %d, %v", key, err)
	}
}
