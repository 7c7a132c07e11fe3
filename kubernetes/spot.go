package kubernetes

import (
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// The spot options in k8s:// URLs: spot_label=KEY=VALUE (KEY alone: any
// value) and spot_taint=KEY=VALUE:EFFECT (KEY:EFFECT: any value; no
// ":EFFECT": any effect), repeated; one empty parameter (spot_label=)
// stands for an empty map or slice (none), and no parameter for nil (the
// defaults).

// spotQuery adds the spot options to q.
func spotQuery(q url.Values, labels map[string]string, taints []corev1.Taint) {
	if labels != nil && len(labels) == 0 {
		q.Add("spot_label", "")
	}
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		if v := labels[k]; v != "" {
			q.Add("spot_label", k+"="+v)
		} else {
			q.Add("spot_label", k)
		}
	}
	if taints != nil && len(taints) == 0 {
		q.Add("spot_taint", "")
	}
	for _, t := range taints {
		s := t.Key
		if t.Value != "" {
			s += "=" + t.Value
		}
		if t.Effect != "" {
			s += ":" + string(t.Effect)
		}
		q.Add("spot_taint", s)
	}
}

// spotFromQuery reads the spot options of q.
func spotFromQuery(q url.Values) (map[string]string, []corev1.Taint, error) {
	var labels map[string]string
	if vs, ok := q["spot_label"]; ok {
		labels = map[string]string{}
		for _, v := range vs {
			if v == "" {
				if len(vs) > 1 {
					return nil, nil, fmt.Errorf("spot_label=: an empty spot_label (no spot labels) cannot go with others (%q)", vs)
				}
				continue
			}
			k, val, _ := strings.Cut(v, "=")
			if k == "" {
				return nil, nil, fmt.Errorf("spot_label=%q: want KEY=VALUE, or KEY for any value", v)
			}
			if _, dup := labels[k]; dup {
				return nil, nil, fmt.Errorf("spot_label=%q: label %s is given twice", v, k)
			}
			labels[k] = val
		}
	}
	var taints []corev1.Taint
	if vs, ok := q["spot_taint"]; ok {
		taints = []corev1.Taint{}
		for _, v := range vs {
			if v == "" {
				if len(vs) > 1 {
					return nil, nil, fmt.Errorf("spot_taint=: an empty spot_taint (no spot taints) cannot go with others (%q)", vs)
				}
				continue
			}
			t, err := parseTaint(v)
			if err != nil {
				return nil, nil, fmt.Errorf("spot_taint=%q: %w", v, err)
			}
			taints = append(taints, t)
		}
	}
	return labels, taints, nil
}

// parseTaint parses KEY[=VALUE][:EFFECT].
func parseTaint(s string) (corev1.Taint, error) {
	var t corev1.Taint
	kv, effect, hasEffect := strings.Cut(s, ":")
	t.Key, t.Value, _ = strings.Cut(kv, "=")
	if t.Key == "" {
		return t, fmt.Errorf("want KEY=VALUE:EFFECT, KEY:EFFECT or KEY (no key)")
	}
	if hasEffect {
		switch e := corev1.TaintEffect(effect); e {
		case corev1.TaintEffectNoSchedule, corev1.TaintEffectPreferNoSchedule, corev1.TaintEffectNoExecute:
			t.Effect = e
		default:
			return t, fmt.Errorf("effect %q: want NoSchedule, PreferNoSchedule or NoExecute", effect)
		}
	}
	return t, nil
}
