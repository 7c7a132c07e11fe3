package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Version is the protocol version this package speaks. It is announced in
// the Hello message; peers with another major version refuse to talk.
const Version = 2

// MaxFrameSize bounds a single frame (1 GiB). Larger payloads must be split
// by the caller; a frame header announcing more is a protocol error.
const MaxFrameSize = 1 << 30

// Message types. Values are part of the protocol and never change meaning.
const (
	TypeHello    byte = 0x01 // worker → coordinator, JSON Hello
	TypeDefine   byte = 0x10 // coordinator → worker, binds a function id to a name
	TypeTasks    byte = 0x11 // coordinator → worker, a batch of tasks
	TypeCancel   byte = 0x12 // coordinator → worker, cancel one task
	TypeShutdown byte = 0x13 // coordinator → worker, finish and exit
	TypeHold     byte = 0x14 // coordinator → worker, hold results in the result log (a Hello field announces support)
	TypeResults  byte = 0x20 // worker → coordinator, a batch of results
	TypeLog      byte = 0x21 // worker → coordinator, output of a task or of the worker
	TypeStarted  byte = 0x22 // worker → coordinator, a task is about to run (version 2)
)

// ErrProtocol is wrapped by every error caused by a malformed stream.
var ErrProtocol = errors.New("wire: protocol error")

// largePart is the size from which Writer sends a payload straight to the
// underlying writer instead of copying it into its buffer.
const largePart = 64 << 10

// Writer writes frames. It is safe for concurrent use; frames written by
// concurrent callers never interleave. Frames are buffered until Flush.
type Writer struct {
	mu  sync.Mutex
	w   io.Writer
	bw  *bufio.Writer
	err error
}

// NewWriter returns a Writer on w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: w, bw: bufio.NewWriterSize(w, 64<<10)}
}

// WriteFrame buffers one frame whose body is the concatenation of parts.
// Parts of 64 KiB or more are written to the underlying writer directly,
// without being copied, after the buffered bytes before them.
func (w *Writer) WriteFrame(typ byte, parts ...[]byte) error {
	n := 1
	for _, p := range parts {
		n += len(p)
	}
	if n > MaxFrameSize {
		return fmt.Errorf("%w: frame of %d bytes exceeds the %d byte limit", ErrProtocol, n, MaxFrameSize)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	var hdr [5]byte
	binary.BigEndian.PutUint32(hdr[:4], uint32(n))
	hdr[4] = typ
	if _, err := w.bw.Write(hdr[:]); err != nil {
		w.err = err
		return err
	}
	for _, p := range parts {
		var err error
		if len(p) >= largePart {
			if err = w.bw.Flush(); err == nil {
				_, err = w.w.Write(p)
			}
		} else {
			_, err = w.bw.Write(p)
		}
		if err != nil {
			w.err = err
			return err
		}
	}
	return nil
}

// Buffered reports how many bytes wait for Flush.
func (w *Writer) Buffered() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.bw.Buffered()
}

// Flush writes buffered frames to the underlying writer.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	if err := w.bw.Flush(); err != nil {
		w.err = err
	}
	return w.err
}

// Reader reads frames.
type Reader struct {
	r *bufio.Reader
}

// NewReader returns a Reader on r.
func NewReader(r io.Reader) *Reader {
	return &Reader{r: bufio.NewReaderSize(r, 64<<10)}
}

// Next reads the next frame and returns its type and body. The body is a
// fresh allocation owned by the caller. At a clean end of stream Next returns
// io.EOF; a stream cut inside a frame gives io.ErrUnexpectedEOF.
func (r *Reader) Next() (typ byte, body []byte, err error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r.r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > MaxFrameSize {
		return 0, nil, fmt.Errorf("%w: frame length %d out of range", ErrProtocol, n)
	}
	typ, err = r.r.ReadByte()
	if err != nil {
		return 0, nil, unexpected(err)
	}
	size := int(n - 1)
	// Trust the header up to trustedSize: a lying header then costs at most
	// that much memory for a truncated stream; larger bodies grow as bytes
	// arrive.
	body = make([]byte, min(size, trustedSize))
	if _, err := io.ReadFull(r.r, body); err != nil {
		return 0, nil, unexpected(err)
	}
	for len(body) < size {
		chunk := min(size-len(body), len(body))
		body = append(body, make([]byte, chunk)...)
		if _, err := io.ReadFull(r.r, body[len(body)-chunk:]); err != nil {
			return 0, nil, unexpected(err)
		}
	}
	return typ, body, nil
}

// trustedSize is the largest body allocated at once on a frame header's
// word alone.
const trustedSize = 64 << 20

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
