// Package rec is the JSON line format (schema 1) shared by the benchmark
// harness and the peer scripts; see bench/README.md.
package rec

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"
	"sync"
)

// Schema is the version of the line layout.
const Schema = 1

// Record is one measurement.
type Record struct {
	Schema   int            `json:"schema"`
	Workload string         `json:"workload"`
	Impl     string         `json:"impl"`
	Params   map[string]any `json:"params"`
	Metric   string         `json:"metric"`
	Value    float64        `json:"value"`
	Unit     string         `json:"unit"`
	Rep      int            `json:"rep"`
	Version  string         `json:"version,omitempty"`
	Note     string         `json:"note,omitempty"`
}

// Size is the record's size key: params.n, params.calls, or "" (P3).
func (r Record) Size() string {
	for _, k := range []string{"n", "calls"} {
		if v, ok := r.Params[k]; ok {
			switch x := v.(type) {
			case float64:
				return fmt.Sprintf("%d", int64(x))
			case int:
				return fmt.Sprintf("%d", x)
			default:
				return fmt.Sprint(x)
			}
		}
	}
	return ""
}

// Parse decodes and checks one line, as bench/peers/validate.py does.
func Parse(line []byte) (Record, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(line, &raw); err != nil {
		return Record{}, err
	}
	for _, k := range []string{"schema", "workload", "impl", "params", "metric", "value", "unit", "rep"} {
		if _, ok := raw[k]; !ok {
			return Record{}, fmt.Errorf("missing %q", k)
		}
	}
	var r Record
	if err := json.Unmarshal(line, &r); err != nil {
		return Record{}, err
	}
	switch {
	case r.Schema != Schema:
		return r, fmt.Errorf("schema %d, want %d", r.Schema, Schema)
	case r.Workload == "" || r.Impl == "" || r.Metric == "" || r.Unit == "":
		return r, fmt.Errorf("empty workload, impl, metric or unit")
	case r.Params == nil:
		return r, fmt.Errorf("params is not an object")
	case math.IsNaN(r.Value) || math.IsInf(r.Value, 0):
		return r, fmt.Errorf("non-finite value")
	}
	return r, nil
}

// Emitter writes records as JSON lines.
type Emitter struct {
	mu      sync.Mutex
	W       io.Writer
	Impl    string
	Version string
}

// Emit writes one line; the value is rounded to 6 decimals.
func (e *Emitter) Emit(workload string, params map[string]any, metric string, value float64, unit string, rep int, note string) {
	r := Record{Schema: Schema, Workload: workload, Impl: e.Impl, Params: params, Metric: metric,
		Value: math.Round(value*1e6) / 1e6, Unit: unit, Rep: rep, Version: e.Version, Note: note}
	e.mu.Lock()
	defer e.mu.Unlock()
	enc := json.NewEncoder(e.W)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(r); err != nil {
		panic(err)
	}
}

// Percentile is the nearest-rank percentile (p in 0..100) of ascending vals.
func Percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	k := int(math.Ceil(p / 100 * float64(len(sorted))))
	k = max(1, min(k, len(sorted)))
	return sorted[k-1]
}

// Median of vals (the mean of the two middle values for an even count).
func Median(vals []float64) float64 {
	s := append([]float64(nil), vals...)
	sort.Float64s(s)
	n := len(s)
	switch {
	case n == 0:
		return math.NaN()
	case n%2 == 1:
		return s[n/2]
	default:
		return (s[n/2-1] + s[n/2]) / 2
	}
}
