package kubernetes_test

import (
	"context"
	"net/url"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/internal/k8stest"
	"github.com/meadowrun-go/meadowrun/kubernetes"
)

// A host with spot labels and taints has a URL that carries them: the
// host reopened from it (as supervisors and the CLI do) has the same URL.
func TestKubernetesSpotOptionsAreInTheHostsURL(t *testing.T) {
	c := k8stest.Require(t)
	h := newK8s(t, c, kubernetes.Options{SpotNodeLabels: map[string]string{"pool/spot": "", "capacity": "interruptible"},
		SpotTaints: []corev1.Taint{{Key: "spot", Effect: corev1.TaintEffectNoSchedule}, {Key: "pool", Value: "cheap", Effect: corev1.TaintEffectNoExecute}}})
	if h.URL() == "" {
		t.Fatal("a host with spot options has no URL")
	}
	u, err := url.Parse(h.URL())
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if got := q["spot_label"]; len(got) != 2 || got[0] != "capacity=interruptible" || got[1] != "pool/spot" {
		t.Errorf("URL %s: spot_label %q", h.URL(), got)
	}
	if got := q["spot_taint"]; len(got) != 2 || got[0] != "spot:NoSchedule" || got[1] != "pool=cheap:NoExecute" {
		t.Errorf("URL %s: spot_taint %q", h.URL(), got)
	}
	again, err := meadowrun.OpenHost(context.Background(), h.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if again.URL() != h.URL() {
		t.Fatalf("the host reopened from %s has URL %s", h.URL(), again.URL())
	}
	none := newK8s(t, c, kubernetes.Options{SpotNodeLabels: map[string]string{}, SpotTaints: []corev1.Taint{}})
	nu, err := url.Parse(none.URL())
	if err != nil {
		t.Fatal(err)
	}
	if q := nu.Query(); len(q["spot_label"]) != 1 || len(q["spot_taint"]) != 1 {
		t.Errorf("a host with no spot labels and taints has URL %s; want one empty spot_label and spot_taint", none.URL())
	}
}
