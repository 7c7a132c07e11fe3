package shm

import (
	"bytes"
	"testing"

	"github.com/meadowrun-go/meadowrun/internal/wire"
)

func TestResultLog(t *testing.T) {
	newLog := func(t *testing.T, size int) (*Region, *ResultLog) {
		t.Helper()
		r, err := Create("test", size)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r, NewResultLog(r)
	}
	t.Run("what the writer left is read back in order, with the running key", func(t *testing.T) {
		r, l := newLog(t, 4096)
		l.Begin(7)
		if !l.Append(wire.Result{Key: 7, Nanos: 12, Payload: []byte("8")}) {
			t.Fatal("no room for a small result")
		}
		l.Begin(8)
		if !l.Append(wire.Result{Key: 8, Status: wire.StatusError, PeakMemory: 1 << 20, Payload: []byte(`{"type":"x"}`)}) {
			t.Fatal("no room for a small result")
		}
		l.Begin(9)
		running, rs, err := wire.ParseResultLog(r.Snapshot())
		if err != nil {
			t.Fatal(err)
		}
		if running != 9 || len(rs) != 2 || rs[0].Key != 7 || rs[0].Nanos != 12 || string(rs[0].Payload) != "8" ||
			rs[1].Key != 8 || rs[1].Status != wire.StatusError || rs[1].PeakMemory != 1<<20 {
			t.Fatalf("running %d, results %+v", running, rs)
		}
	})
	t.Run("a reset log holds nothing but still names the running task", func(t *testing.T) {
		r, l := newLog(t, 4096)
		l.Begin(1)
		l.Append(wire.Result{Key: 1})
		l.Reset()
		l.Begin(2)
		running, rs, err := wire.ParseResultLog(r.Snapshot())
		if err != nil || running != 2 || len(rs) != 0 {
			t.Fatalf("running %d, results %+v, err %v", running, rs, err)
		}
	})
	t.Run("a result larger than the room left is refused and the log stays readable", func(t *testing.T) {
		r, l := newLog(t, 4096)
		if !l.Append(wire.Result{Key: 1, Payload: bytes.Repeat([]byte("a"), 3000)}) {
			t.Fatal("no room for the first result")
		}
		if l.Append(wire.Result{Key: 2, Payload: bytes.Repeat([]byte("b"), 3000)}) {
			t.Fatal("a result beyond the log's size was accepted")
		}
		_, rs, err := wire.ParseResultLog(r.Snapshot())
		if err != nil || len(rs) != 1 || len(rs[0].Payload) != 3000 {
			t.Fatalf("results %d, err %v", len(rs), err)
		}
	})
	t.Run("a corrupt header is a protocol error", func(t *testing.T) {
		mem := make([]byte, wire.ResultLogHeader)
		mem[0] = 200
		if _, _, err := wire.ParseResultLog(mem); err == nil {
			t.Fatal("no error for a log claiming more bytes than it has")
		}
	})
}
