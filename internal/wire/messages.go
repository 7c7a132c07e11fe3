package wire

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
)

// Hello is the first frame a worker sends. It describes the worker and
// everything it can run, so that the coordinator can refuse a mismatched
// worker with a clear error before any task is sent.
type Hello struct {
	Protocol     int        `json:"protocol"`
	Language     string     `json:"language"` // "go" or "python"
	Runtime      string     `json:"runtime"`  // e.g. "go1.26.8"
	PID          int        `json:"pid"`
	Worker       string     `json:"worker"`        // name given by the host, echoed back
	BinaryDigest string     `json:"binary_digest"` // identity of the worker's code
	Functions    []Function `json:"functions"`
	// Dynamic says that the worker resolves function names when they are
	// first used (the Python worker imports "package.module.function")
	// rather than listing them in Functions: the coordinator defines any
	// name on it, and a name the worker cannot resolve fails its tasks
	// with StatusUnknown. A dynamic worker's functions take and return
	// JSON.
	Dynamic bool `json:"dynamic,omitempty"`
	// ResultLog says that the worker was given a result log (memory
	// shared with its host, see ResultLogHeader) and understands Hold.
	ResultLog bool `json:"result_log,omitempty"`
}

// Function describes one registered function: its stable name and the
// types and codecs of its argument and result.
type Function struct {
	Name   string `json:"name"`
	Arg    string `json:"arg"`
	Result string `json:"result"`
	Codec  string `json:"codec"`
}

// EncodeHello returns the body of a Hello frame.
func EncodeHello(h Hello) []byte {
	b, err := json.Marshal(h)
	if err != nil {
		panic(err) // only strings and ints: cannot fail
	}
	return b
}

// DecodeHello parses the body of a Hello frame.
func DecodeHello(body []byte) (Hello, error) {
	var h Hello
	if err := json.Unmarshal(body, &h); err != nil {
		return Hello{}, fmt.Errorf("%w: hello: %v", ErrProtocol, err)
	}
	if h.Protocol != Version {
		return h, fmt.Errorf("%w: worker speaks protocol version %d, this coordinator speaks %d", ErrProtocol, h.Protocol, Version)
	}
	return h, nil
}

// Define binds a connection-local function id (1 and up; 0 means "command")
// to a function name.
type Define struct {
	ID   uint64
	Name string
	// Codec, when not empty, is the caller's codec of the function
	// ("argument/result", e.g. "json/json" or "string/bytes"): sent to
	// dynamic workers, which list no codecs and learn each function's
	// from its Define. An optional trailing field: a Define without it
	// decodes with Codec empty.
	Codec string
}

// AppendDefine appends the body of a Define frame to dst.
func AppendDefine(dst []byte, d Define) []byte {
	dst = binary.AppendUvarint(dst, d.ID)
	dst = appendBytes(dst, []byte(d.Name))
	if d.Codec != "" {
		dst = appendBytes(dst, []byte(d.Codec))
	}
	return dst
}

// DecodeDefine parses the body of a Define frame.
func DecodeDefine(body []byte) (Define, error) {
	d := decoder{b: body}
	id := d.uvarint()
	name := d.bytes()
	var codec []byte
	if d.err == nil && len(d.b) > 0 {
		codec = d.bytes()
	}
	if err := d.done("define"); err != nil {
		return Define{}, err
	}
	if id == 0 {
		return Define{}, fmt.Errorf("%w: define: function id 0 is reserved for commands", ErrProtocol)
	}
	return Define{ID: id, Name: string(name), Codec: string(codec)}, nil
}

// FuncCommand is the function id of a task that runs a command; its payload
// is a JSON Command.
const FuncCommand = 0

// Task is one unit of work sent to a worker.
type Task struct {
	Key     uint64 // unique on the connection, chosen by the coordinator
	Func    uint64 // a Define'd id, or FuncCommand
	Payload []byte // the encoded argument
}

// AppendTasks appends the body of a Tasks frame holding ts to dst.
func AppendTasks(dst []byte, ts []Task) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(ts)))
	for _, t := range ts {
		dst = AppendTask(dst, t)
	}
	return dst
}

// AppendTask appends one task of a Tasks body; the caller writes the count
// first with AppendCount.
func AppendTask(dst []byte, t Task) []byte {
	dst = binary.AppendUvarint(dst, t.Key)
	dst = binary.AppendUvarint(dst, t.Func)
	return appendBytes(dst, t.Payload)
}

// AppendCount appends the element count that starts a Tasks or Results body.
func AppendCount(dst []byte, n int) []byte {
	return binary.AppendUvarint(dst, uint64(n))
}

// DecodeTasks parses the body of a Tasks frame. Payloads alias body.
func DecodeTasks(body []byte) ([]Task, error) {
	d := decoder{b: body}
	n := d.count(3)
	ts := make([]Task, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		t := Task{Key: d.uvarint(), Func: d.uvarint(), Payload: d.bytes()}
		ts = append(ts, t)
	}
	if err := d.done("tasks"); err != nil {
		return nil, err
	}
	return ts, nil
}

// Status says how a task ended.
type Status byte

// Task statuses. Values are part of the protocol.
const (
	StatusOK        Status = 0 // Payload is the encoded result
	StatusError     Status = 1 // Payload is a JSON Failure: the function returned an error
	StatusPanic     Status = 2 // Payload is a JSON Failure: the function panicked
	StatusBadInput  Status = 3 // Payload is a JSON Failure: the argument could not be decoded
	StatusBadOutput Status = 4 // Payload is a JSON Failure: the result could not be encoded
	StatusUnknown   Status = 5 // Payload is a JSON Failure: no such function in this worker
	StatusCanceled  Status = 6 // Payload is a JSON Failure: cancelled by a Cancel frame
)

func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusError:
		return "error"
	case StatusPanic:
		return "panic"
	case StatusBadInput:
		return "bad-input"
	case StatusBadOutput:
		return "bad-output"
	case StatusUnknown:
		return "unknown-function"
	case StatusCanceled:
		return "canceled"
	}
	return fmt.Sprintf("status(%d)", byte(s))
}

// Failure is the JSON payload of a task that did not succeed: the remote
// error's type, message and stack, in the form every language can produce.
type Failure struct {
	Type    string `json:"type"`
	Message string `json:"message"`
	Stack   string `json:"stack,omitempty"`
}

// Result is the outcome of one task.
type Result struct {
	Key        uint64
	Status     Status
	Nanos      uint64 // time the task ran in the worker
	PeakMemory uint64 // peak resident memory of the worker during the task, bytes (0: unknown)
	Payload    []byte
}

// AppendResult appends one result of a Results body; the caller writes the
// count first with AppendCount.
func AppendResult(dst []byte, r Result) []byte {
	dst = binary.AppendUvarint(dst, r.Key)
	dst = append(dst, byte(r.Status))
	dst = binary.AppendUvarint(dst, r.Nanos)
	dst = binary.AppendUvarint(dst, r.PeakMemory)
	return appendBytes(dst, r.Payload)
}

// AppendResultHeader appends everything of one result but its payload bytes,
// ending with the payload length, so that a large payload can follow as its
// own frame part without being copied.
func AppendResultHeader(dst []byte, r Result, payloadLen int) []byte {
	dst = binary.AppendUvarint(dst, r.Key)
	dst = append(dst, byte(r.Status))
	dst = binary.AppendUvarint(dst, r.Nanos)
	dst = binary.AppendUvarint(dst, r.PeakMemory)
	return binary.AppendUvarint(dst, uint64(payloadLen))
}

// AppendTaskHeader is AppendResultHeader for tasks.
func AppendTaskHeader(dst []byte, t Task, payloadLen int) []byte {
	dst = binary.AppendUvarint(dst, t.Key)
	dst = binary.AppendUvarint(dst, t.Func)
	return binary.AppendUvarint(dst, uint64(payloadLen))
}

// DecodeResults parses the body of a Results frame. Payloads alias body.
func DecodeResults(body []byte) ([]Result, error) { return AppendResults(nil, body) }

// AppendResults is DecodeResults appending to dst, so that a reader can
// reuse one slice for every frame.
func AppendResults(dst []Result, body []byte) ([]Result, error) {
	d := decoder{b: body}
	n := d.count(5)
	rs := slices.Grow(dst, n)
	for i := 0; i < n && d.err == nil; i++ {
		rs = append(rs, d.result())
	}
	if err := d.done("results"); err != nil {
		return nil, err
	}
	return rs, nil
}

// Log is output of a task (Key of the task) or of the worker itself (Key 0).
type Log struct {
	Key  uint64
	Data []byte
}

// AppendLog appends the body of a Log frame to dst.
func AppendLog(dst []byte, l Log) []byte {
	dst = binary.AppendUvarint(dst, l.Key)
	return append(dst, l.Data...)
}

// DecodeLog parses the body of a Log frame. Data aliases body.
func DecodeLog(body []byte) (Log, error) {
	d := decoder{b: body}
	key := d.uvarint()
	if d.err != nil {
		return Log{}, fmt.Errorf("%w: log: %v", ErrProtocol, d.err)
	}
	return Log{Key: key, Data: d.b}, nil
}

// AppendStarted appends the body of a Started frame to dst: the key of the
// task the worker is about to run.
func AppendStarted(dst []byte, key uint64) []byte {
	return binary.AppendUvarint(dst, key)
}

// DecodeStarted parses the body of a Started frame.
func DecodeStarted(body []byte) (uint64, error) {
	d := decoder{b: body}
	key := d.uvarint()
	if err := d.done("started"); err != nil {
		return 0, err
	}
	return key, nil
}

// AppendCancel appends the body of a Cancel frame to dst.
func AppendCancel(dst []byte, key uint64) []byte {
	return binary.AppendUvarint(dst, key)
}

// DecodeCancel parses the body of a Cancel frame.
func DecodeCancel(body []byte) (uint64, error) {
	d := decoder{b: body}
	key := d.uvarint()
	if err := d.done("cancel"); err != nil {
		return 0, err
	}
	return key, nil
}

// Command is the JSON payload of a task that runs a command.
type Command struct {
	Args []string          `json:"args"`
	Env  map[string]string `json:"env,omitempty"`
	Dir  string            `json:"dir,omitempty"`
	// ContextVariables are handed to the command as JSON in the
	// MEADOWRUN_CONTEXT_VARIABLES environment variable.
	ContextVariables json.RawMessage `json:"context_variables,omitempty"`
}

// CommandResult is the payload of a successful command task (StatusOK):
// the exit code and whatever the command wrote to the file named by
// MEADOWRUN_RESULT_FILE (nil when it wrote nothing).
type CommandResult struct {
	ExitCode int    `json:"exit_code"`
	Signal   string `json:"signal,omitempty"`
	NotFound bool   `json:"not_found,omitempty"`
	Result   []byte `json:"result,omitempty"`
}

func appendBytes(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

// decoder reads varints and byte strings, remembering the first error.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = fmt.Errorf("%w: bad varint", ErrProtocol)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.err = fmt.Errorf("%w: truncated", ErrProtocol)
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = fmt.Errorf("%w: byte string of %d bytes with %d left", ErrProtocol, n, len(d.b))
		return nil
	}
	b := d.b[:n:n]
	d.b = d.b[n:]
	return b
}

// result reads one result as AppendResult writes it.
func (d *decoder) result() Result {
	r := Result{Key: d.uvarint(), Status: Status(d.byte())}
	r.Nanos = d.uvarint()
	r.PeakMemory = d.uvarint()
	r.Payload = d.bytes()
	if d.err == nil && r.Status > StatusCanceled {
		d.err = fmt.Errorf("%w: results: unknown status %d", ErrProtocol, r.Status)
	}
	return r
}

// count reads an element count and checks it against the bytes left, each
// element taking at least minSize bytes, so a lying count cannot force a
// huge allocation.
func (d *decoder) count(minSize int) int {
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b)/minSize) {
		d.err = fmt.Errorf("%w: count %d larger than the body allows", ErrProtocol, n)
		return 0
	}
	return int(n)
}

func (d *decoder) done(what string) error {
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%w: %d trailing bytes", ErrProtocol, len(d.b))
	}
	if d.err != nil {
		return fmt.Errorf("%s: %w", what, d.err)
	}
	return nil
}

// Batch builds the body of a Tasks or Results frame as parts for
// Writer.WriteFrame: small payloads are copied next to their headers,
// payloads of 64 KiB or more become parts of their own and are never
// copied.
type Batch struct {
	parts [][]byte
	cur   []byte
}

// NewBatch starts a batch of n tasks or n results.
func NewBatch(n int) *Batch {
	return &Batch{cur: AppendCount(make([]byte, 0, 16*n+8), n)}
}

// AddTask appends a task.
func (b *Batch) AddTask(t Task) {
	b.cur = AppendTaskHeader(b.cur, t, len(t.Payload))
	b.payload(t.Payload)
}

// AddResult appends a result.
func (b *Batch) AddResult(r Result) {
	b.cur = AppendResultHeader(b.cur, r, len(r.Payload))
	b.payload(r.Payload)
}

func (b *Batch) payload(p []byte) {
	if len(p) >= largePart {
		b.parts = append(b.parts, b.cur, p)
		b.cur = nil
		return
	}
	b.cur = append(b.cur, p...)
}

// Parts returns the frame body's parts.
func (b *Batch) Parts() [][]byte {
	if len(b.cur) > 0 {
		return append(b.parts, b.cur)
	}
	return b.parts
}
