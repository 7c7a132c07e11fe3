package agentproto

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
)

// StreamRefs, in a Start, has the agent relay the worker's stream frame by
// frame, turning the frames below into the worker protocol's own, so that
// the worker sees a plain stream (docs/agent-protocol.md, "Large values
// through an object store").
type StreamRefs struct {
	// MinResultBytes is the payload size from which a result goes
	// through the store: the agent asks for an upload target
	// (TypeResultUpload) and sends a ResultRef instead of the bytes.
	MinResultBytes int64 `json:"min_result_bytes"`
}

// Frame types of a worker stream started with StreamRefs, beside those of
// the worker protocol (package wire). Values are part of the protocol.
const (
	// TypeTaskRef (client → agent): a task whose argument the agent
	// downloads (Ref) before handing the worker a Tasks frame of it.
	TypeTaskRef byte = 0x15
	// TypeResultTarget (client → agent): where the result of a task goes
	// (Target), in answer to TypeResultUpload; an empty target means
	// "send it on the stream".
	TypeResultTarget byte = 0x16
	// TypeResultUpload (agent → client): the result of a task is
	// size bytes: asks for its TypeResultTarget.
	TypeResultUpload byte = 0x23
	// TypeResultRef (agent → client): a result uploaded to its target,
	// in place of the Results frame.
	TypeResultRef byte = 0x24
	// TypeRefFailed (agent → client): a download (RefTask) or an upload
	// (RefResult) failed; the message says why (never a URL's query).
	TypeRefFailed byte = 0x25
)

// What failed, in a RefFailed frame.
const (
	RefTask   byte = 1 // the task's argument could not be downloaded: the client sends the task again, inline
	RefResult byte = 2 // the result could not be uploaded: it follows inline
)

// Ref is an object of the store: a GET of URL (with Header, "Name:
// value", when not "") returns Size bytes of sha256 SHA.
type Ref struct {
	SHA    string `json:"sha"`
	Size   int64  `json:"size"`
	URL    string `json:"url,omitempty"`
	Header string `json:"header,omitempty"`
}

// Target is where a result is uploaded: a request of Method (PUT, POST)
// to URL with Header, when not "", whose body is the payload.
type Target struct {
	Method string `json:"method"`
	URL    string `json:"url"`
	Header string `json:"header,omitempty"`
}

// TaskRef is the body of a TypeTaskRef frame.
type TaskRef struct {
	Key, Func uint64
	Ref       Ref
}

// ResultRef is the body of a TypeResultRef frame: a wire.Result whose
// payload is in the store.
type ResultRef struct {
	Key        uint64
	Status     byte
	Nanos      uint64
	PeakMemory uint64
	Ref        Ref // SHA and Size; no URL
}

// ErrRefFrame is wrapped by the errors of malformed frames of refs.go.
var ErrRefFrame = errors.New("agentproto: malformed reference frame")

func appendJSON(dst []byte, v any) []byte {
	b, _ := json.Marshal(v)
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

// AppendTaskRef appends the body of a TypeTaskRef frame.
func AppendTaskRef(dst []byte, t TaskRef) []byte {
	dst = binary.AppendUvarint(dst, t.Key)
	dst = binary.AppendUvarint(dst, t.Func)
	return appendJSON(dst, t.Ref)
}

// AppendResultTarget appends the body of a TypeResultTarget frame; a nil
// target is the empty one.
func AppendResultTarget(dst []byte, key uint64, t *Target) []byte {
	dst = binary.AppendUvarint(dst, key)
	if t == nil {
		return binary.AppendUvarint(dst, 0)
	}
	return appendJSON(dst, t)
}

// AppendResultUpload appends the body of a TypeResultUpload frame.
func AppendResultUpload(dst []byte, key uint64, size int64) []byte {
	dst = binary.AppendUvarint(dst, key)
	return binary.AppendUvarint(dst, uint64(size))
}

// AppendResultRef appends the body of a TypeResultRef frame.
func AppendResultRef(dst []byte, r ResultRef) []byte {
	dst = binary.AppendUvarint(dst, r.Key)
	dst = append(dst, r.Status)
	dst = binary.AppendUvarint(dst, r.Nanos)
	dst = binary.AppendUvarint(dst, r.PeakMemory)
	return appendJSON(dst, r.Ref)
}

// AppendRefFailed appends the body of a TypeRefFailed frame.
func AppendRefFailed(dst []byte, key uint64, what byte, msg string) []byte {
	dst = binary.AppendUvarint(dst, key)
	dst = append(dst, what)
	dst = binary.AppendUvarint(dst, uint64(len(msg)))
	return append(dst, msg...)
}

type refDecoder struct {
	b   []byte
	err error
}

func (d *refDecoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = fmt.Errorf("%w: bad uvarint", ErrRefFrame)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *refDecoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.err = fmt.Errorf("%w: truncated", ErrRefFrame)
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *refDecoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = fmt.Errorf("%w: truncated", ErrRefFrame)
		return nil
	}
	b := d.b[:n]
	d.b = d.b[n:]
	return b
}

func (d *refDecoder) json(v any) {
	b := d.bytes()
	if d.err == nil {
		if err := json.Unmarshal(b, v); err != nil {
			d.err = fmt.Errorf("%w: %w", ErrRefFrame, err)
		}
	}
}

func (d *refDecoder) done(what string) error {
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%w: %d bytes after the %s", ErrRefFrame, len(d.b), what)
	}
	return d.err
}

// DecodeTaskRef parses the body of a TypeTaskRef frame.
func DecodeTaskRef(body []byte) (TaskRef, error) {
	d := refDecoder{b: body}
	t := TaskRef{Key: d.uvarint(), Func: d.uvarint()}
	d.json(&t.Ref)
	return t, d.done("task reference")
}

// DecodeResultTarget parses the body of a TypeResultTarget frame; t is
// nil for the empty target.
func DecodeResultTarget(body []byte) (key uint64, t *Target, err error) {
	d := refDecoder{b: body}
	key = d.uvarint()
	if b := d.bytes(); d.err == nil && len(b) > 0 {
		t = &Target{}
		if err := json.Unmarshal(b, t); err != nil {
			d.err = fmt.Errorf("%w: %w", ErrRefFrame, err)
		}
	}
	return key, t, d.done("result target")
}

// DecodeResultUpload parses the body of a TypeResultUpload frame.
func DecodeResultUpload(body []byte) (key uint64, size int64, err error) {
	d := refDecoder{b: body}
	key, size = d.uvarint(), int64(d.uvarint())
	return key, size, d.done("result upload")
}

// DecodeResultRef parses the body of a TypeResultRef frame.
func DecodeResultRef(body []byte) (ResultRef, error) {
	d := refDecoder{b: body}
	r := ResultRef{Key: d.uvarint(), Status: d.byte(), Nanos: d.uvarint(), PeakMemory: d.uvarint()}
	d.json(&r.Ref)
	return r, d.done("result reference")
}

// DecodeRefFailed parses the body of a TypeRefFailed frame.
func DecodeRefFailed(body []byte) (key uint64, what byte, msg string, err error) {
	d := refDecoder{b: body}
	key, what = d.uvarint(), d.byte()
	msg = string(d.bytes())
	return key, what, msg, d.done("failure")
}
