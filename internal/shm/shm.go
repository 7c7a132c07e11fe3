package shm

import (
	"encoding/binary"
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/meadowrun-go/meadowrun/internal/wire"
)

// ResultLogSize is the size of the result log a host gives each worker.
// Pages the worker never touches cost nothing.
const ResultLogSize = 1 << 20

// Region is a memfd mapped into this process.
type Region struct {
	f   *os.File
	mem []byte
}

// Create makes a region of size bytes, named name (for /proc only).
func Create(name string, size int) (*Region, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("shm: memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), name)
	if err := f.Truncate(int64(size)); err != nil {
		f.Close()
		return nil, fmt.Errorf("shm: sizing %s: %w", name, err)
	}
	return mapFile(f, size)
}

// Open maps the region whose descriptor this process inherited.
func Open(f *os.File) (*Region, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("shm: %w", err)
	}
	if st.Size() < wire.ResultLogHeader || st.Size() > 1<<30 {
		return nil, fmt.Errorf("shm: region %s has %d bytes", f.Name(), st.Size())
	}
	return mapFile(f, int(st.Size()))
}

func mapFile(f *os.File, size int) (*Region, error) {
	mem, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("shm: mapping %s: %w", f.Name(), err)
	}
	return &Region{f: f, mem: mem}, nil
}

// File is the region's descriptor, for a child process to inherit.
func (r *Region) File() *os.File { return r.f }

// Snapshot copies the result log in the region as its writer left it:
// the header and the records it counts. Call it after the writer died.
func (r *Region) Snapshot() []byte {
	used := binary.LittleEndian.Uint64(r.mem[0:8])
	n := wire.ResultLogHeader + int(min(used, uint64(len(r.mem)-wire.ResultLogHeader)))
	return append([]byte(nil), r.mem[:n]...)
}

// OutputPending is the count of output bytes the worker had forwarded on
// its stream but not yet consumed from its output socket, as it left it:
// a host draining the socket after the worker died skips that many.
func (r *Region) OutputPending() uint64 {
	return (*atomic.Uint64)(unsafe.Pointer(&r.mem[wire.ResultLogOutputPending])).Load()
}

// Close unmaps the region and closes its descriptor.
func (r *Region) Close() error {
	err := unix.Munmap(r.mem)
	if cerr := r.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// ResultLog writes a worker's result log in a region.
type ResultLog struct {
	mem  []byte
	used uint64
}

// NewResultLog writes the result log in r, which starts empty.
func NewResultLog(r *Region) *ResultLog {
	l := &ResultLog{mem: r.mem}
	l.Reset()
	l.word(8).Store(0)
	l.SetOutputPending(0)
	return l
}

func (l *ResultLog) word(off int) *atomic.Uint64 {
	return (*atomic.Uint64)(unsafe.Pointer(&l.mem[off]))
}

// Begin records that the task with key is about to run.
func (l *ResultLog) Begin(key uint64) { l.word(8).Store(key) }

// Append records r, reporting false when the log has no room for it.
func (l *ResultLog) Append(r wire.Result) bool {
	start := wire.ResultLogHeader + int(l.used)
	end := start + resultSize(r)
	if end > len(l.mem) {
		return false
	}
	wire.AppendResult(l.mem[start:start:end], r)
	l.used = uint64(end - wire.ResultLogHeader)
	l.word(0).Store(l.used)
	return true
}

// SetOutputPending records that n bytes of output were forwarded on the
// stream and are still in the output socket (0 once consumed).
func (l *ResultLog) SetOutputPending(n uint64) { l.word(wire.ResultLogOutputPending).Store(n) }

// Len is the number of record bytes held.
func (l *ResultLog) Len() int { return int(l.used) }

// Reset empties the log: its results have reached the stream.
func (l *ResultLog) Reset() {
	l.used = 0
	l.word(0).Store(0)
}

// resultSize is the encoded size of r as AppendResult writes it.
func resultSize(r wire.Result) int {
	var tmp [binary.MaxVarintLen64]byte
	n := binary.PutUvarint(tmp[:], r.Key) + 1 + binary.PutUvarint(tmp[:], r.Nanos) + binary.PutUvarint(tmp[:], r.PeakMemory)
	return n + binary.PutUvarint(tmp[:], uint64(len(r.Payload))) + len(r.Payload)
}
