package agent

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/meadowrun-go/meadowrun/internal/agentproto"
	"github.com/meadowrun-go/meadowrun/internal/wire"
)

// targetWait bounds how long a large result waits for the client's upload
// target before it is sent on the stream.
const targetWait = time.Minute

// refRelay relays a worker's stream started with agentproto.StreamRefs:
// the client's TaskRef frames become Tasks frames of the downloaded
// argument, and results of at least refs.MinResultBytes are uploaded where
// the client says and become ResultRef frames. Everything else passes
// through unchanged, frame by frame.
type refRelay struct {
	refs   agentproto.StreamRefs
	client *wire.Writer // to the client

	mu      sync.Mutex
	waiting map[uint64]chan *agentproto.Target
	ended   bool // the client's side of the stream ended
}

// relayRefs runs the relay between the client's connection (br for what
// it sends, c for what it reads) and the worker's stream; it returns when
// the worker's side has ended. toWorkerDone is called once the client's
// side has ended.
func relayRefs(refs agentproto.StreamRefs, c io.Writer, br *bufio.Reader, worker io.ReadWriter, toWorkerDone func()) {
	r := &refRelay{refs: refs, client: wire.NewWriter(c), waiting: map[uint64]chan *agentproto.Target{}}
	go func() {
		r.toWorker(br, worker)
		r.mu.Lock()
		r.ended = true
		for k, ch := range r.waiting {
			close(ch)
			delete(r.waiting, k)
		}
		r.mu.Unlock()
		toWorkerDone()
	}()
	r.toClient(worker)
}

// toWorker relays the client's frames to the worker until either side
// ends.
func (r *refRelay) toWorker(br *bufio.Reader, worker io.Writer) {
	in := wire.NewReader(br)
	out := wire.NewWriter(worker)
	for {
		typ, body, err := in.Next()
		if err != nil {
			return
		}
		switch typ {
		case agentproto.TypeTaskRef:
			t, err := agentproto.DecodeTaskRef(body)
			if err != nil {
				return
			}
			payload, err := fetchRef(t.Ref)
			if err != nil {
				r.send(agentproto.TypeRefFailed, agentproto.AppendRefFailed(nil, t.Key, agentproto.RefTask, err.Error()))
				continue
			}
			err = out.WriteFrame(wire.TypeTasks, wire.AppendTaskHeader(wire.AppendCount(nil, 1), wire.Task{Key: t.Key, Func: t.Func}, len(payload)), payload)
			if err == nil {
				err = out.Flush()
			}
			if err != nil {
				return
			}
		case agentproto.TypeResultTarget:
			key, target, err := agentproto.DecodeResultTarget(body)
			if err != nil {
				return
			}
			r.mu.Lock()
			if ch := r.waiting[key]; ch != nil {
				ch <- target
				delete(r.waiting, key)
			}
			r.mu.Unlock()
		default:
			if out.WriteFrame(typ, body) != nil || out.Flush() != nil {
				return
			}
		}
	}
}

// send writes one frame to the client.
func (r *refRelay) send(typ byte, parts ...[]byte) error {
	if err := r.client.WriteFrame(typ, parts...); err != nil {
		return err
	}
	return r.client.Flush()
}

// toClient relays the worker's frames to the client until the worker's
// stream ends.
func (r *refRelay) toClient(worker io.Reader) {
	in := wire.NewReader(worker)
	for {
		typ, body, err := in.Next()
		if err != nil {
			return
		}
		if typ != wire.TypeResults || int64(len(body)) < r.refs.MinResultBytes || r.refs.MinResultBytes <= 0 {
			if r.send(typ, body) != nil {
				return
			}
			continue
		}
		rs, err := wire.DecodeResults(body)
		if err != nil {
			// The coordinator reports the protocol error.
			if r.send(typ, body) != nil {
				return
			}
			continue
		}
		if r.results(rs) != nil {
			return
		}
	}
}

// results sends a batch of results in order: the large ones through the
// store where possible, the others in Results frames between them.
func (r *refRelay) results(rs []wire.Result) error {
	var small []wire.Result
	flush := func() error {
		if len(small) == 0 {
			return nil
		}
		b := wire.AppendCount(nil, len(small))
		for _, s := range small {
			b = wire.AppendResult(b, s)
		}
		small = small[:0]
		return r.send(wire.TypeResults, b)
	}
	for _, res := range rs {
		if int64(len(res.Payload)) < r.refs.MinResultBytes {
			small = append(small, res)
			continue
		}
		if err := flush(); err != nil {
			return err
		}
		ref, err := r.upload(res)
		if err == nil {
			if err := r.send(agentproto.TypeResultRef, agentproto.AppendResultRef(nil, agentproto.ResultRef{Key: res.Key, Status: byte(res.Status),
				Nanos: res.Nanos, PeakMemory: res.PeakMemory, Ref: ref})); err != nil {
				return err
			}
			continue
		}
		if !errors.Is(err, errNoTarget) {
			if err := r.send(agentproto.TypeRefFailed, agentproto.AppendRefFailed(nil, res.Key, agentproto.RefResult, err.Error())); err != nil {
				return err
			}
		}
		small = append(small, res)
	}
	return flush()
}

// errNoTarget: the client gave no upload target (or none in time, or its
// side ended): the result goes on the stream.
var errNoTarget = errors.New("no upload target")

// upload asks the client where res goes and uploads it there.
func (r *refRelay) upload(res wire.Result) (agentproto.Ref, error) {
	ch := make(chan *agentproto.Target, 1)
	r.mu.Lock()
	if r.ended {
		r.mu.Unlock()
		return agentproto.Ref{}, errNoTarget
	}
	r.waiting[res.Key] = ch
	r.mu.Unlock()
	if err := r.send(agentproto.TypeResultUpload, agentproto.AppendResultUpload(nil, res.Key, int64(len(res.Payload)))); err != nil {
		return agentproto.Ref{}, err
	}
	var target *agentproto.Target
	select {
	case target = <-ch:
	case <-time.After(targetWait):
		r.mu.Lock()
		delete(r.waiting, res.Key)
		r.mu.Unlock()
	}
	if target == nil {
		return agentproto.Ref{}, errNoTarget
	}
	sum := sha256.Sum256(res.Payload)
	if err := putTarget(*target, res.Payload); err != nil {
		return agentproto.Ref{}, err
	}
	return agentproto.Ref{SHA: hex.EncodeToString(sum[:]), Size: int64(len(res.Payload))}, nil
}

// setHeader adds h ("Name: value") to req.
func setHeader(req *http.Request, h string) error {
	if h == "" {
		return nil
	}
	k, v, ok := strings.Cut(h, ":")
	if !ok {
		return fmt.Errorf("header %q is not Name: value", k)
	}
	req.Header.Set(strings.TrimSpace(k), strings.TrimSpace(v))
	return nil
}

// putTarget uploads payload to t. Errors name the URL's host only: its
// query may carry a signature.
func putTarget(t agentproto.Target, payload []byte) error {
	req, err := http.NewRequest(t.Method, t.URL, bytes.NewReader(payload))
	if err != nil {
		return errors.New("upload: bad target URL")
	}
	host := req.URL.Host
	if err := setHeader(req, t.Header); err != nil {
		return fmt.Errorf("upload to %s: %w", host, err)
	}
	req.ContentLength = int64(len(payload))
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := downloadClient.Do(req)
	if err != nil {
		return fmt.Errorf("upload to %s: %w", host, errors.Unwrap(err))
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("upload to %s: %s", host, resp.Status)
	}
	return nil
}

// fetchRef downloads ref and checks its size and sha256.
func fetchRef(ref agentproto.Ref) ([]byte, error) {
	body, err := download(&agentproto.Put{SHA: ref.SHA, Size: ref.Size, URL: ref.URL, Header: ref.Header})
	if err != nil {
		return nil, err
	}
	defer body.Close()
	b, err := io.ReadAll(io.LimitReader(body, ref.Size+1))
	if err != nil {
		return nil, fmt.Errorf("download: %w", err)
	}
	if int64(len(b)) != ref.Size {
		return nil, fmt.Errorf("download: %d bytes, want %d", len(b), ref.Size)
	}
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != ref.SHA {
		return nil, fmt.Errorf("download: the content's sha256 is %x, not %.12s", sum[:6], ref.SHA)
	}
	return b, nil
}
