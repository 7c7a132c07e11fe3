package k8shost

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meadowrun-go/meadowrun/internal/agentclient"
	"github.com/meadowrun-go/meadowrun/internal/agentproto"
)

// DefaultValueBytes is the size from which, with a storage bucket, a
// task's argument or result travels through the bucket (StorageSpec's
// MinValueBytes 0).
const DefaultValueBytes = 1 << 20

// Prefixes of the keys of arguments and results in the bucket; after each
// comes the host's run id, unique per host opened.
const (
	ArgPrefix    = "meadowrun/args/"
	ResultPrefix = "meadowrun/results/"
)

// valueStore is the agentclient.ValueStore of a host with a bucket:
// arguments are written once per content under ArgPrefix/RUN/SHA256 and
// deleted when the host closes; results under ResultPrefix/RUN/NAME,
// deleted once read back (and any left, at Close).
type valueStore struct {
	h   *Host
	min int64
	run string

	mu      sync.Mutex
	args    map[string]*upload // by key
	results map[string]bool    // keys handed out, not yet taken
}

func (h *Host) newValueStore() *valueStore {
	min := h.opts.Storage.MinValueBytes
	if min == 0 {
		min = DefaultValueBytes
	}
	if min < 0 {
		return nil
	}
	var id [8]byte
	rand.Read(id[:])
	return &valueStore{h: h, min: min, run: time.Now().UTC().Format("20060102T150405") + "-" + hex.EncodeToString(id[:]),
		args: map[string]*upload{}, results: map[string]bool{}}
}

// MinBytes implements agentclient.ValueStore.
func (v *valueStore) MinBytes() int64 { return v.min }

// Argument implements agentclient.ValueStore.
func (v *valueStore) Argument(ctx context.Context, sha string, payload []byte) (agentclient.Download, error) {
	key := ArgPrefix + v.run + "/" + sha
	v.mu.Lock()
	u := v.args[key]
	if u == nil {
		u = &upload{}
		v.args[key] = u
	}
	v.mu.Unlock()
	u.mu.Lock()
	if !u.done {
		u.err = v.h.store.Put(ctx, key, bytes.NewReader(payload), int64(len(payload)))
		u.done = u.err == nil
	}
	err := u.err
	u.mu.Unlock()
	if err != nil {
		return agentclient.Download{}, err
	}
	f, err := v.h.store.Fetch(ctx, key, fetchTTL)
	if err != nil {
		return agentclient.Download{}, err
	}
	return agentclient.Download{URL: f.URL, Header: f.Header}, nil
}

// ReadArgument implements agentclient.ValueStore.
func (v *valueStore) ReadArgument(ctx context.Context, sha string, size int64) ([]byte, error) {
	return v.read(ctx, ArgPrefix+v.run+"/"+sha, sha, size)
}

func (v *valueStore) resultKey(name string) string { return ResultPrefix + v.run + "/" + name }

// ResultTarget implements agentclient.ValueStore.
func (v *valueStore) ResultTarget(ctx context.Context, name string, size int64) (agentproto.Target, error) {
	key := v.resultKey(name)
	u, err := v.h.store.Upload(ctx, key, fetchTTL)
	if err != nil {
		return agentproto.Target{}, err
	}
	v.mu.Lock()
	v.results[key] = true
	v.mu.Unlock()
	return agentproto.Target{Method: u.Method, URL: u.URL, Header: u.Header}, nil
}

// TakeResult implements agentclient.ValueStore.
func (v *valueStore) TakeResult(ctx context.Context, name, sha string, size int64) ([]byte, error) {
	key := v.resultKey(name)
	var b []byte
	var err error
	for try := 0; try < 3; try++ {
		if try > 0 {
			time.Sleep(time.Duration(try) * 500 * time.Millisecond)
		}
		if b, err = v.read(ctx, key, sha, size); err == nil {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	if err := v.h.store.Delete(ctx, key); err != nil {
		fmt.Fprintf(v.h.opts.Log, "[meadowrun] %v (a lifecycle rule on %s removes it)\n", err, ResultPrefix)
	}
	v.mu.Lock()
	delete(v.results, key)
	v.mu.Unlock()
	valueBytes.Add(size)
	return b, nil
}

func (v *valueStore) read(ctx context.Context, key, sha string, size int64) ([]byte, error) {
	r, err := v.h.store.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	b, err := io.ReadAll(io.LimitReader(r, size+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", key, err)
	}
	if int64(len(b)) != size {
		return nil, fmt.Errorf("%s holds %d bytes, not %d", key, len(b), size)
	}
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != sha {
		return nil, fmt.Errorf("%s: sha256 %x…, not %.12s…", key, sum[:6], sha)
	}
	return b, nil
}

// close deletes what the host wrote: its arguments and results never
// read back.
func (v *valueStore) close() {
	v.mu.Lock()
	var keys []string
	for k, u := range v.args {
		if u.done {
			keys = append(keys, k)
		}
	}
	for k := range v.results {
		keys = append(keys, k)
	}
	v.args, v.results = map[string]*upload{}, map[string]bool{}
	v.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, k := range keys {
		if err := v.h.store.Delete(ctx, k); err != nil {
			fmt.Fprintf(v.h.opts.Log, "[meadowrun] %v (a lifecycle rule on meadowrun/ removes it)\n", err)
		}
	}
}

// valueBytes counts the bytes of results read back from buckets.
var valueBytes atomic.Int64

// ResultBytesFromBuckets returns how many bytes of results this process's
// Kubernetes hosts have read back from their storage buckets: a figure
// for tests and diagnostics.
func ResultBytesFromBuckets() int64 { return valueBytes.Load() }

// valueStore is the host's agentclient.ValueStore: nil without a bucket
// (an interface holding no *valueStore).
func (h *Host) valueStore() agentclient.ValueStore {
	if h.values == nil {
		return nil
	}
	return h.values
}
