package wire

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
)

func TestFramesRoundTrip(t *testing.T) {
	big := bytes.Repeat([]byte{7}, 3<<20)
	tasks := []Task{{Key: 1, Func: 2, Payload: []byte("x")}, {Key: 1 << 40, Func: FuncCommand, Payload: nil}}
	results := []Result{{Key: 9, Status: StatusPanic, Nanos: 12, PeakMemory: 1 << 30, Payload: []byte(`{"type":"panic"}`)}}

	var buf bytes.Buffer
	w := NewWriter(&buf)
	must(t, w.WriteFrame(TypeHello, EncodeHello(Hello{Protocol: Version, Language: "go", Functions: []Function{{Name: "a.B", Arg: "int", Result: "int", Codec: "json"}}})))
	must(t, w.WriteFrame(TypeDefine, AppendDefine(nil, Define{ID: 3, Name: "pkg.Func"})))
	must(t, w.WriteFrame(TypeDefine, AppendDefine(nil, Define{ID: 4, Name: "mod.fn", Codec: "string/bytes"})))
	must(t, w.WriteFrame(TypeTasks, AppendTasks(nil, tasks)))
	must(t, w.WriteFrame(TypeResults, AppendCount(nil, 1), AppendResultHeader(nil, Result{Key: 5}, len(big)), big))
	must(t, w.WriteFrame(TypeResults, AppendResult(AppendCount(nil, 1), results[0])))
	must(t, w.WriteFrame(TypeLog, AppendLog(nil, Log{Key: 4, Data: []byte("hello\n")})))
	must(t, w.WriteFrame(TypeCancel, AppendCancel(nil, 77)))
	must(t, w.WriteFrame(TypeStarted, AppendStarted(nil, 1<<40)))
	must(t, w.Flush())

	r := NewReader(&buf)
	next := func(want byte) []byte {
		t.Helper()
		typ, body, err := r.Next()
		if err != nil || typ != want {
			t.Fatalf("Next() = %#x, %v; want type %#x", typ, err, want)
		}
		return body
	}
	h, err := DecodeHello(next(TypeHello))
	if err != nil || h.Functions[0].Name != "a.B" {
		t.Fatalf("hello = %+v, %v", h, err)
	}
	if d, err := DecodeDefine(next(TypeDefine)); err != nil || d != (Define{ID: 3, Name: "pkg.Func"}) {
		t.Fatalf("define = %+v, %v", d, err)
	}
	if d, err := DecodeDefine(next(TypeDefine)); err != nil || d != (Define{ID: 4, Name: "mod.fn", Codec: "string/bytes"}) {
		t.Fatalf("define with a codec = %+v, %v", d, err)
	}
	gotTasks, err := DecodeTasks(next(TypeTasks))
	if err != nil || len(gotTasks) != 2 || gotTasks[1].Key != 1<<40 || string(gotTasks[0].Payload) != "x" {
		t.Fatalf("tasks = %+v, %v", gotTasks, err)
	}
	gotBig, err := DecodeResults(next(TypeResults))
	if err != nil || !bytes.Equal(gotBig[0].Payload, big) {
		t.Fatalf("big result: %v", err)
	}
	gotResults, err := DecodeResults(next(TypeResults))
	if err != nil || !reflect.DeepEqual(gotResults, results) {
		t.Fatalf("results = %+v, %v", gotResults, err)
	}
	if l, err := DecodeLog(next(TypeLog)); err != nil || l.Key != 4 || string(l.Data) != "hello\n" {
		t.Fatalf("log = %+v, %v", l, err)
	}
	if k, err := DecodeCancel(next(TypeCancel)); err != nil || k != 77 {
		t.Fatalf("cancel = %d, %v", k, err)
	}
	if k, err := DecodeStarted(next(TypeStarted)); err != nil || k != 1<<40 {
		t.Fatalf("started = %d, %v", k, err)
	}
	if _, _, err := r.Next(); err != io.EOF {
		t.Fatalf("at the end Next() error = %v, want io.EOF", err)
	}
}

func TestMalformedInputIsAProtocolError(t *testing.T) {
	cases := []struct {
		name string
		fn   func() error
	}{
		{"a task count larger than the body", func() error { _, err := DecodeTasks([]byte{200, 1}); return err }},
		{"a byte string longer than the body", func() error { _, err := DecodeTasks([]byte{1, 1, 1, 50, 'a'}); return err }},
		{"trailing bytes after the tasks", func() error { _, err := DecodeTasks([]byte{0, 9}); return err }},
		{"an unknown result status", func() error { _, err := DecodeResults([]byte{1, 1, 99, 0, 0, 0}); return err }},
		{"a define of the command id", func() error { _, err := DecodeDefine([]byte{0, 1, 'a'}); return err }},
		{"a hello of an older version", func() error { _, err := DecodeHello([]byte(`{"protocol":1}`)); return err }},
		{"a hello of a newer version", func() error { _, err := DecodeHello([]byte(`{"protocol":3}`)); return err }},
		{"a hello that is not JSON", func() error { _, err := DecodeHello([]byte(`{`)); return err }},
		{"a frame header of length zero", func() error { _, _, err := NewReader(bytes.NewReader([]byte{0, 0, 0, 0})).Next(); return err }},
		{"a frame header over the limit", func() error {
			_, _, err := NewReader(bytes.NewReader([]byte{0x7f, 0xff, 0xff, 0xff, 1})).Next()
			return err
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := c.fn(); !errors.Is(err, ErrProtocol) {
				t.Fatalf("error = %v, want ErrProtocol", err)
			}
		})
	}
}

func TestATruncatedLargeFrameIsUnexpectedEOF(t *testing.T) {
	// The header claims 512 MiB but the stream ends early: the reader must
	// fail without allocating more than 64 MiB up front.
	_, _, err := NewReader(bytes.NewReader([]byte{0x20, 0, 0, 0, TypeResults, 1, 2, 3})).Next()
	if err != io.ErrUnexpectedEOF {
		t.Fatalf("error = %v, want io.ErrUnexpectedEOF", err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
