package agentproto

import (
	"errors"
	"testing"
)

// Every frame of refs.go decodes to what was encoded, and a truncated or
// padded body is ErrRefFrame.
func TestRefFramesRoundTrip(t *testing.T) {
	ref := Ref{SHA: "ab12", Size: 3 << 20, URL: "http://store/k?X-Amz-Signature=s", Header: "Authorization: Bearer t"}
	tr := AppendTaskRef(nil, TaskRef{Key: 7, Func: 2, Ref: ref})
	if got, err := DecodeTaskRef(tr); err != nil || got.Key != 7 || got.Func != 2 || got.Ref != ref {
		t.Fatalf("TaskRef: %+v, %v", got, err)
	}
	target := &Target{Method: "PUT", URL: "http://store/r?sig", Header: "X: y"}
	if key, got, err := DecodeResultTarget(AppendResultTarget(nil, 9, target)); err != nil || key != 9 || got == nil || *got != *target {
		t.Fatalf("ResultTarget: %d %+v, %v", key, got, err)
	}
	if key, got, err := DecodeResultTarget(AppendResultTarget(nil, 9, nil)); err != nil || key != 9 || got != nil {
		t.Fatalf("empty ResultTarget: %d %+v, %v", key, got, err)
	}
	if key, size, err := DecodeResultUpload(AppendResultUpload(nil, 4, 1<<30)); err != nil || key != 4 || size != 1<<30 {
		t.Fatalf("ResultUpload: %d %d, %v", key, size, err)
	}
	rr := ResultRef{Key: 5, Status: 1, Nanos: 1234, PeakMemory: 99, Ref: Ref{SHA: "cd34", Size: 10}}
	if got, err := DecodeResultRef(AppendResultRef(nil, rr)); err != nil || got != rr {
		t.Fatalf("ResultRef: %+v, %v", got, err)
	}
	if key, what, msg, err := DecodeRefFailed(AppendRefFailed(nil, 3, RefResult, "upload to store: 403")); err != nil || key != 3 || what != RefResult || msg != "upload to store: 403" {
		t.Fatalf("RefFailed: %d %d %q, %v", key, what, msg, err)
	}
	for name, body := range map[string][]byte{"truncated": tr[:len(tr)-3], "padded": append(tr, 0), "empty": nil} {
		if _, err := DecodeTaskRef(body); !errors.Is(err, ErrRefFrame) {
			t.Errorf("%s TaskRef: %v, want ErrRefFrame", name, err)
		}
	}
}
