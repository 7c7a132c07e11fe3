package agentclient

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"sync"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/agentproto"
	"github.com/meadowrun-go/meadowrun/internal/wire"
)

// ValueStore carries the large arguments and results of workers through
// an object store instead of their streams: the client writes an argument
// once per content and the agent downloads it; the agent uploads a large
// result where the client says, and the client reads it back and deletes
// it (docs/agent-protocol.md, "Large values through an object store").
type ValueStore interface {
	// MinBytes is the payload size from which an argument or a result
	// goes through the store.
	MinBytes() int64
	// Argument makes payload, of sha256 sha, downloadable, writing it
	// unless it was written already, and returns how.
	Argument(ctx context.Context, sha string, payload []byte) (Download, error)
	// ResultTarget returns where the agent uploads the result name (one
	// per task attempt) of size bytes.
	ResultTarget(ctx context.Context, name string, size int64) (agentproto.Target, error)
	// TakeResult reads the result name back, checks its size and sha256,
	// and deletes it.
	TakeResult(ctx context.Context, name, sha string, size int64) ([]byte, error)
	// ReadArgument reads back an argument Argument wrote (for a task the
	// agent could not download), checking its size and sha256.
	ReadArgument(ctx context.Context, sha string, size int64) ([]byte, error)
}

// refStream is a worker's stream through which large values travel by
// reference (agentproto.StreamRefs): the coordinator's Tasks with large
// arguments leave as TaskRef frames, and the agent's ResultRef frames
// arrive as Results; the coordinator sees the plain worker protocol.
type refStream struct {
	conn io.ReadWriteCloser
	in   *wire.Reader
	vs   ValueStore
	min  int64
	id   string // names the stream's results
	logf func(format string, args ...any)

	wmu  sync.Mutex // writes to conn, whole frames
	wbuf []byte     // the coordinator's bytes not yet a whole frame

	mu        sync.Mutex
	sent      map[uint64]sentRef // by task key, until answered
	cancelled map[uint64]bool
	loggedArg bool
	logged    map[string]bool // messages of the agent's failures, logged once

	rbuf []byte // what Read returns next
}

type sentRef struct {
	fn   uint64
	sha  string
	size int64
}

func newRefStream(conn io.ReadWriteCloser, br *bufio.Reader, vs ValueStore, logf func(string, ...any)) *refStream {
	var id [6]byte
	rand.Read(id[:])
	return &refStream{conn: conn, in: wire.NewReader(br), vs: vs, min: vs.MinBytes(), id: hex.EncodeToString(id[:]), logf: logf,
		sent: map[uint64]sentRef{}, cancelled: map[uint64]bool{}, logged: map[string]bool{}}
}

func (s *refStream) resultName(key uint64) string { return fmt.Sprintf("%s-%d", s.id, key) }

// Close implements io.Closer.
func (s *refStream) Close() error { return s.conn.Close() }

func frame(typ byte, body []byte) []byte {
	b := make([]byte, 5, 5+len(body))
	binary.BigEndian.PutUint32(b, uint32(len(body)+1))
	b[4] = typ
	return append(b, body...)
}

// Write implements io.Writer: whole frames are passed on, Tasks frames
// with large arguments rewritten.
func (s *refStream) Write(p []byte) (int, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.wbuf = append(s.wbuf, p...)
	off := 0
	var out []byte
	for len(s.wbuf)-off >= 5 {
		n := int(binary.BigEndian.Uint32(s.wbuf[off:]))
		if n == 0 || n > wire.MaxFrameSize {
			// Not the protocol: pass it on for the worker to refuse.
			out = append(out, s.wbuf[off:]...)
			off = len(s.wbuf)
			break
		}
		if len(s.wbuf)-off < 4+n {
			break
		}
		f := s.wbuf[off : off+4+n]
		off += 4 + n
		switch typ := f[4]; {
		case typ == wire.TypeTasks && int64(n-1) >= s.min:
			if len(out) > 0 {
				if _, err := s.conn.Write(out); err != nil {
					return 0, err
				}
				out = out[:0]
			}
			if err := s.tasks(f[5:]); err != nil {
				return 0, err
			}
		case typ == wire.TypeCancel:
			if key, err := wire.DecodeCancel(f[5:]); err == nil {
				s.mu.Lock()
				if _, ok := s.sent[key]; ok {
					s.cancelled[key] = true
				}
				s.mu.Unlock()
			}
			out = append(out, f...)
		default:
			out = append(out, f...)
		}
	}
	s.wbuf = append(s.wbuf[:0], s.wbuf[off:]...)
	if len(out) > 0 {
		if _, err := s.conn.Write(out); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// tasks sends a Tasks body: each large argument by reference, the others
// in Tasks frames between them, in order.
func (s *refStream) tasks(body []byte) error {
	ts, err := wire.DecodeTasks(body)
	if err != nil {
		_, err = s.conn.Write(frame(wire.TypeTasks, body))
		return err
	}
	var small []wire.Task
	flush := func() error {
		if len(small) == 0 {
			return nil
		}
		_, err := s.conn.Write(frame(wire.TypeTasks, wire.AppendTasks(nil, small)))
		small = small[:0]
		return err
	}
	for _, t := range ts {
		if int64(len(t.Payload)) < s.min {
			small = append(small, t)
			continue
		}
		sum := sha256.Sum256(t.Payload)
		sha := hex.EncodeToString(sum[:])
		d, err := s.vs.Argument(context.Background(), sha, t.Payload)
		if err != nil {
			s.mu.Lock()
			first := !s.loggedArg
			s.loggedArg = true
			s.mu.Unlock()
			if first {
				s.logf("an argument of %s goes through the stream: %v", driver.Bytes(int64(len(t.Payload))), err)
			}
			small = append(small, t)
			continue
		}
		if err := flush(); err != nil {
			return err
		}
		s.mu.Lock()
		s.sent[t.Key] = sentRef{fn: t.Func, sha: sha, size: int64(len(t.Payload))}
		s.mu.Unlock()
		ref := agentproto.Ref{SHA: sha, Size: int64(len(t.Payload)), URL: d.URL, Header: d.Header}
		if _, err := s.conn.Write(frame(agentproto.TypeTaskRef, agentproto.AppendTaskRef(nil, agentproto.TaskRef{Key: t.Key, Func: t.Func, Ref: ref}))); err != nil {
			return err
		}
	}
	return flush()
}

// answered forgets what task key needed once its result has come.
func (s *refStream) answered(key uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.sent, key)
	delete(s.cancelled, key)
}

// Read implements io.Reader: the agent's frames, ResultRef frames turned
// into Results.
func (s *refStream) Read(p []byte) (int, error) {
	for len(s.rbuf) == 0 {
		if err := s.next(); err != nil {
			return 0, err
		}
	}
	n := copy(p, s.rbuf)
	s.rbuf = s.rbuf[n:]
	return n, nil
}

// next reads one frame from the agent and queues what the coordinator
// reads of it.
func (s *refStream) next() error {
	typ, body, err := s.in.Next()
	if err != nil {
		return err
	}
	switch typ {
	case agentproto.TypeResultUpload:
		key, size, err := agentproto.DecodeResultUpload(body)
		if err != nil {
			return err
		}
		go s.target(key, size)
	case agentproto.TypeResultRef:
		r, err := agentproto.DecodeResultRef(body)
		if err != nil {
			return err
		}
		payload, err := s.vs.TakeResult(context.Background(), s.resultName(r.Key), r.Ref.SHA, r.Ref.Size)
		if err != nil {
			// The task runs again: the stream ends as a lost worker's.
			s.logf("a result of %s could not be read from the store: %v", driver.Bytes(r.Ref.Size), err)
			return fmt.Errorf("%w: a result could not be read from the store: %w", driver.ErrUnreachable, err)
		}
		s.answered(r.Key)
		res := wire.Result{Key: r.Key, Status: wire.Status(r.Status), Nanos: r.Nanos, PeakMemory: r.PeakMemory}
		s.rbuf = frame(wire.TypeResults, append(wire.AppendResultHeader(wire.AppendCount(nil, 1), res, len(payload)), payload...))
	case agentproto.TypeRefFailed:
		key, what, msg, err := agentproto.DecodeRefFailed(body)
		if err != nil {
			return err
		}
		if what == agentproto.RefTask {
			s.logOnce("the agent could not download an argument (%s): it goes through the stream", msg)
			go s.resend(key)
		} else {
			s.logOnce("the agent could not upload a result (%s): it comes through the stream", msg)
		}
	case wire.TypeResults:
		s.mu.Lock()
		track := len(s.sent) > 0
		s.mu.Unlock()
		if track {
			if rs, err := wire.DecodeResults(body); err == nil {
				for _, r := range rs {
					s.answered(r.Key)
				}
			}
		}
		s.rbuf = frame(typ, body)
	default:
		s.rbuf = frame(typ, body)
	}
	return nil
}

// logOnce logs a message of the agent's once per stream: the same
// failure of every task is one line.
func (s *refStream) logOnce(format, msg string) {
	s.mu.Lock()
	seen := s.logged[format+msg]
	s.logged[format+msg] = true
	s.mu.Unlock()
	if !seen {
		s.logf(format, msg)
	}
}

// target answers the agent's TypeResultUpload; an empty target (the store
// failed, logged) has the result come on the stream.
func (s *refStream) target(key uint64, size int64) {
	var tp *agentproto.Target
	t, err := s.vs.ResultTarget(context.Background(), s.resultName(key), size)
	if err != nil {
		s.logf("a result of %s comes through the stream: %v", driver.Bytes(size), err)
	} else {
		tp = &t
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.conn.Write(frame(agentproto.TypeResultTarget, agentproto.AppendResultTarget(nil, key, tp)))
}

// resend sends the task key, which the agent could not download, with its
// argument inline, read back from the store (and its Cancel again when it
// was cancelled). An argument that cannot be read back ends the stream
// as a lost worker's: the task, never started, runs again.
func (s *refStream) resend(key uint64) {
	s.mu.Lock()
	r, ok := s.sent[key]
	cancelled := s.cancelled[key]
	s.mu.Unlock()
	if !ok {
		return
	}
	payload, err := s.vs.ReadArgument(context.Background(), r.sha, r.size)
	if err != nil {
		s.logf("an argument the agent could not download could not be read back: %v", err)
		s.conn.Close()
		return
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	b := frame(wire.TypeTasks, wire.AppendTasks(nil, []wire.Task{{Key: key, Func: r.fn, Payload: payload}}))
	if cancelled {
		b = append(b, frame(wire.TypeCancel, wire.AppendCancel(nil, key))...)
	}
	s.conn.Write(b)
}
