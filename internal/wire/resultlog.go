package wire

import (
	"encoding/binary"
	"fmt"
)

// A result log is memory that a worker shares with its host (on Linux a
// memfd both map) in which the worker, once the coordinator has sent
// Hold, keeps the results of tasks it has run but not yet written to its
// stream, and the key of the task it is running. When the worker dies,
// the host reads the log, so that neither a result nor the identity of
// the running task is lost although the worker wrote nothing per task.
//
// Layout, every integer unsigned 64-bit little-endian:
//
//	offset 0   used: bytes of records after the header
//	offset 8   running: key of the task the worker started last (0: none)
//	offset 16  output_pending: bytes of output the worker forwarded on its
//	           stream and has not yet consumed from its output socket
//	offset 64  records: results encoded as in a Results body (AppendResult),
//	           without a count, back to back
//
// The worker writes a record's bytes before it adds them to used, so a
// worker that dies mid-record leaves the log consistent; it sets running
// before it runs any of a task's code. Having written held results to its
// stream, it sets used to 0. A record may therefore also have been
// received on the stream: the reader drops results of tasks it no longer
// holds.
const (
	ResultLogHeader  = 64
	resultLogUsed    = 0
	resultLogRunning = 8
	// ResultLogOutputPending is the offset of output_pending.
	ResultLogOutputPending = 16
)

// ParseResultLog reads a result log as the worker left it: the key of the
// task it started last and the results it held, in the order the tasks
// ran.
func ParseResultLog(mem []byte) (running uint64, rs []Result, err error) {
	if len(mem) < ResultLogHeader {
		return 0, nil, fmt.Errorf("%w: result log of %d bytes is shorter than its header", ErrProtocol, len(mem))
	}
	used := binary.LittleEndian.Uint64(mem[resultLogUsed:])
	running = binary.LittleEndian.Uint64(mem[resultLogRunning:])
	if used > uint64(len(mem)-ResultLogHeader) {
		return running, nil, fmt.Errorf("%w: result log claims %d bytes of records in %d", ErrProtocol, used, len(mem)-ResultLogHeader)
	}
	d := decoder{b: mem[ResultLogHeader : ResultLogHeader+used]}
	for len(d.b) > 0 && d.err == nil {
		if r := d.result(); d.err == nil {
			rs = append(rs, r)
		}
	}
	if d.err != nil {
		return running, rs, fmt.Errorf("result log: %w", d.err)
	}
	return running, rs, nil
}
