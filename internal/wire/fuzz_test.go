package wire

import (
	"bytes"
	"testing"
)

// FuzzReader feeds arbitrary streams to the frame reader and every message
// decoder. They must never panic, and whatever decodes must re-encode to a
// body that decodes to the same value.
func FuzzReader(f *testing.F) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	w.WriteFrame(TypeTasks, AppendTasks(nil, []Task{{Key: 1, Func: 1, Payload: []byte("42")}}))
	w.WriteFrame(TypeResults, AppendResult(AppendCount(nil, 1), Result{Key: 1, Payload: []byte("43")}))
	w.WriteFrame(TypeDefine, AppendDefine(nil, Define{ID: 1, Name: "a.B"}))
	w.WriteFrame(TypeDefine, AppendDefine(nil, Define{ID: 2, Name: "a.c", Codec: "json/bytes"}))
	w.WriteFrame(TypeLog, AppendLog(nil, Log{Key: 1, Data: []byte("line\n")}))
	w.WriteFrame(TypeHello, EncodeHello(Hello{Protocol: Version}))
	w.WriteFrame(TypeCancel, AppendCancel(nil, 1))
	w.WriteFrame(TypeStarted, AppendStarted(nil, 1))
	w.Flush()
	f.Add(buf.Bytes())
	f.Add([]byte{0, 0, 0, 1, TypeShutdown})
	f.Fuzz(func(t *testing.T, stream []byte) {
		r := NewReader(bytes.NewReader(stream))
		for {
			typ, body, err := r.Next()
			if err != nil {
				return
			}
			switch typ {
			case TypeTasks:
				if ts, err := DecodeTasks(body); err == nil {
					again, err := DecodeTasks(AppendTasks(nil, ts))
					if err != nil || len(again) != len(ts) {
						t.Fatalf("tasks did not round-trip: %v", err)
					}
				}
			case TypeResults:
				if rs, err := DecodeResults(body); err == nil {
					enc := AppendCount(nil, len(rs))
					for _, r := range rs {
						enc = AppendResult(enc, r)
					}
					if !bytes.Equal(enc, body) {
						// Varints have a single canonical encoding only
						// when minimal; accept non-minimal input but it
						// must still decode after re-encoding.
						if _, err := DecodeResults(enc); err != nil {
							t.Fatalf("results did not round-trip: %v", err)
						}
					}
				}
			case TypeDefine:
				if d, err := DecodeDefine(body); err == nil {
					if again, err := DecodeDefine(AppendDefine(nil, d)); err != nil || again != d {
						t.Fatalf("define did not round-trip: %v", err)
					}
				}
			case TypeLog:
				DecodeLog(body)
			case TypeCancel:
				DecodeCancel(body)
			case TypeStarted:
				if k, err := DecodeStarted(body); err == nil {
					if again, err := DecodeStarted(AppendStarted(nil, k)); err != nil || again != k {
						t.Fatalf("started did not round-trip: %v", err)
					}
				}
			case TypeHello:
				DecodeHello(body)
			}
		}
	})
}
