package container

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
)

func TestImageRefSplitsNameAndTagOrDigest(t *testing.T) {
	for _, tt := range []struct{ ref, name, tag string }{
		{"debian", "debian", "latest"},
		{"debian:12", "debian", "12"},
		{"localhost:5000/team/img", "localhost:5000/team/img", "latest"},
		{"localhost:5000/team/img:v1", "localhost:5000/team/img", "v1"},
		{"reg.example/img@sha256:abc", "reg.example/img", "sha256:abc"},
	} {
		name, tag := imageRef(tt.ref)
		if name != tt.name || tag != tt.tag {
			t.Errorf("imageRef(%q) = %q, %q; want %q, %q", tt.ref, name, tag, tt.name, tt.tag)
		}
	}
}

func TestVersionLessIsNumeric(t *testing.T) {
	if !versionLess("1.9", "1.41") || versionLess("1.41", "1.41") || !versionLess("1.45", "2.0") || versionLess("1.45", "1.44") {
		t.Error("versionLess does not compare API versions numerically")
	}
}

func TestEngineAddressesAreCheckedAtOnce(t *testing.T) {
	for _, bad := range []string{"ssh://host", "::"} {
		if _, err := newAPIClient(bad); err == nil {
			t.Errorf("newAPIClient(%q) = nil error", bad)
		}
	}
	for _, good := range []string{"unix:///var/run/docker.sock", "tcp://127.0.0.1:2375"} {
		if _, err := newAPIClient(good); err != nil {
			t.Errorf("newAPIClient(%q): %v", good, err)
		}
	}
}

func TestRegistryAuthIsTheEnginesHeader(t *testing.T) {
	enc, err := registryAuth(&Auth{Username: "u", Password: "p+/="}, "localhost:5000")
	if err != nil {
		t.Fatal(err)
	}
	b, err := base64.URLEncoding.DecodeString(enc)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil || m["username"] != "u" || m["password"] != "p+/=" || m["serveraddress"] != "localhost:5000" {
		t.Errorf("decoded %s (%v)", b, err)
	}
	if strings.ContainsAny(enc, "+/") {
		t.Errorf("%q is not URL-safe base64", enc)
	}
}
