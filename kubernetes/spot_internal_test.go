package kubernetes

import (
	"net/url"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// Spot labels and taints survive a k8s:// URL: nil (the defaults), empty
// (none) and lists, values and effects left out included.
func TestSpotOptionsRoundTripThroughTheURL(t *testing.T) {
	for _, tc := range []struct {
		name   string
		labels map[string]string
		taints []corev1.Taint
		want   []string // in the URL
	}{
		{"defaults", nil, nil, nil},
		{"none", map[string]string{}, []corev1.Taint{}, []string{"spot_label=&", "spot_taint=&"}},
		{"lists", map[string]string{"pool/spot": "", "capacity": "interruptible=yes"},
			[]corev1.Taint{{Key: "spot", Effect: corev1.TaintEffectNoSchedule}, {Key: "pool", Value: "cheap", Effect: corev1.TaintEffectNoExecute}, {Key: "any"}},
			[]string{"spot_label=capacity%3Dinterruptible%3Dyes", "spot_label=pool%2Fspot", "spot_taint=spot%3ANoSchedule", "spot_taint=pool%3Dcheap%3ANoExecute", "spot_taint=any"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := k8sURL(Options{SpotNodeLabels: tc.labels, SpotTaints: tc.taints}, "ctx", "ns")
			for _, w := range tc.want {
				if !strings.Contains(s+"&", w) {
					t.Errorf("URL %s lacks %s", s, w)
				}
			}
			if tc.want == nil && strings.Contains(s, "spot_") {
				t.Errorf("URL %s has spot parameters; want none for the defaults", s)
			}
			u, err := url.Parse(s)
			if err != nil {
				t.Fatal(err)
			}
			o, err := optionsOf(u)
			if err != nil {
				t.Fatal(err)
			}
			if (o.SpotNodeLabels == nil) != (tc.labels == nil) || len(tc.labels) > 0 && !reflect.DeepEqual(o.SpotNodeLabels, tc.labels) {
				t.Errorf("labels %#v from %s, want %#v", o.SpotNodeLabels, s, tc.labels)
			}
			if (o.SpotTaints == nil) != (tc.taints == nil) || len(tc.taints) > 0 && !reflect.DeepEqual(o.SpotTaints, tc.taints) {
				t.Errorf("taints %#v from %s, want %#v", o.SpotTaints, s, tc.taints)
			}
			if again := k8sURL(o, "ctx", "ns"); again != s {
				t.Errorf("URL rebuilt from its options is %s, want %s", again, s)
			}
		})
	}
}

// Spot parameters that make no sense are refused, saying which and what
// is wanted.
func TestBadSpotParametersAreRefused(t *testing.T) {
	for q, want := range map[string]string{
		"spot_label==x":                 "want KEY=VALUE",
		"spot_label=a=1&spot_label=a=2": "label a is given twice",
		"spot_label=&spot_label=a":      "cannot go with others",
		"spot_taint=k=v:Sometimes":      `effect "Sometimes": want NoSchedule, PreferNoSchedule or NoExecute`,
		"spot_taint=:NoSchedule":        "no key",
		"spot_taint=&spot_taint=a":      "cannot go with others",
		"spot_labels=a":                 `unknown parameter "spot_labels"`,
	} {
		u, err := url.Parse("k8s://?" + q)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := optionsOf(u); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error saying %q", q, err, want)
		}
	}
}

func TestEveryURLParameterIsAccepted(t *testing.T) {
	o := Options{JobsVolume: "pvc", JobsServiceAccount: "sa", LargeValueBytes: 4096, SpotNodeLabels: map[string]string{"spot": ""},
		StorageSpec: GenericStorageBucketSpec{Bucket: "b", EndpointURL: "http://s3.example:9000", UsernamePasswordSecret: "s"}}
	s := k8sURL(o, "ctx", "ns")
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	back, err := optionsOf(u)
	if err != nil {
		t.Fatalf("the host's own URL %s is refused: %v", s, err)
	}
	if back.LargeValueBytes != 4096 || back.JobsVolume != "pvc" || back.StorageSpec == nil {
		t.Errorf("options from %s: %+v", s, back)
	}
}
