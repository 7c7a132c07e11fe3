package ec2alloc

import (
	"fmt"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// The allocation table's item, attribute by attribute: instance_id (the
// hash key), address, instance_type, market, zone, price, launch_key,
// architecture, flags (a list), eviction_rate (thousandths of a percent),
// gpu_mem_each, total_* and free_* for cpu (thousandths), mem, gpu
// (thousandths) and gpu_mem, workers (a map from worker id to what it
// holds), last_update (Unix milliseconds), prevent_further_allocation and
// disk (bytes of root volume for work; missing in items written before it,
// read as 0).

func num(n int64) types.AttributeValue {
	return &types.AttributeValueMemberN{Value: strconv.FormatInt(n, 10)}
}

func str(s string) types.AttributeValue { return &types.AttributeValueMemberS{Value: s} }

func key(instanceID string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{"instance_id": str(instanceID)}
}

func capacityValue(c Capacity) types.AttributeValue {
	return &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{
		"cpu": num(c.MilliCPU), "mem": num(c.MemoryBytes), "gpu": num(c.MilliGPUs), "gpu_mem": num(c.GPUMemoryBytes),
	}}
}

func (r Record) item() map[string]types.AttributeValue {
	flags := make([]types.AttributeValue, len(r.Flags))
	for i, f := range r.Flags {
		flags[i] = str(f)
	}
	workers := map[string]types.AttributeValue{}
	for w, c := range r.Workers {
		workers[w] = capacityValue(c)
	}
	return map[string]types.AttributeValue{
		"instance_id": str(r.InstanceID), "address": str(r.Address), "instance_type": str(r.Type),
		"market": str(string(r.Market)), "zone": str(r.Zone),
		"price":      &types.AttributeValueMemberN{Value: strconv.FormatFloat(r.Price, 'f', -1, 64)},
		"launch_key": str(r.LaunchKey), "architecture": str(r.Architecture),
		"flags":         &types.AttributeValueMemberL{Value: flags},
		"eviction_rate": num(int64(r.EvictionRate * 1000)), "gpu_mem_each": num(r.GPUMemoryEach),
		"total_cpu": num(r.Total.MilliCPU), "total_mem": num(r.Total.MemoryBytes), "total_gpu": num(r.Total.MilliGPUs), "total_gpu_mem": num(r.Total.GPUMemoryBytes),
		"free_cpu": num(r.Free.MilliCPU), "free_mem": num(r.Free.MemoryBytes), "free_gpu": num(r.Free.MilliGPUs), "free_gpu_mem": num(r.Free.GPUMemoryBytes),
		"workers":                    &types.AttributeValueMemberM{Value: workers},
		"last_update":                num(r.LastUpdate.UnixMilli()),
		"prevent_further_allocation": &types.AttributeValueMemberBOOL{Value: r.PreventFurtherAllocation},
		"disk":                       num(r.DiskBytes),
	}
}

// decoder reads attributes of one item, keeping the first error.
type decoder struct {
	item map[string]types.AttributeValue
	err  error
}

func (d *decoder) fail(name, want string) {
	if d.err == nil {
		d.err = fmt.Errorf("item %v: attribute %s is missing or not %s", d.item["instance_id"], name, want)
	}
}

func (d *decoder) s(name string) string {
	if v, ok := d.item[name].(*types.AttributeValueMemberS); ok {
		return v.Value
	}
	d.fail(name, "a string")
	return ""
}

func (d *decoder) n(m map[string]types.AttributeValue, name string) int64 {
	if v, ok := m[name].(*types.AttributeValueMemberN); ok {
		if n, err := strconv.ParseInt(v.Value, 10, 64); err == nil {
			return n
		}
	}
	d.fail(name, "an integer")
	return 0
}

func (d *decoder) capacity(m map[string]types.AttributeValue, prefix string) Capacity {
	return Capacity{d.n(m, prefix+"cpu"), d.n(m, prefix+"mem"), d.n(m, prefix+"gpu"), d.n(m, prefix+"gpu_mem")}
}

func recordOf(it map[string]types.AttributeValue) (Record, error) {
	d := &decoder{item: it}
	r := Record{
		InstanceID: d.s("instance_id"), Address: d.s("address"), Type: d.s("instance_type"),
		Market: Market(d.s("market")), Zone: d.s("zone"), LaunchKey: d.s("launch_key"), Architecture: d.s("architecture"),
		EvictionRate: float64(d.n(it, "eviction_rate")) / 1000, GPUMemoryEach: d.n(it, "gpu_mem_each"),
		Total: d.capacity(it, "total_"), Free: d.capacity(it, "free_"),
		LastUpdate: time.UnixMilli(d.n(it, "last_update")), Workers: map[string]Capacity{},
	}
	if _, ok := it["disk"]; ok {
		r.DiskBytes = d.n(it, "disk")
	}
	if v, ok := it["price"].(*types.AttributeValueMemberN); ok {
		r.Price, _ = strconv.ParseFloat(v.Value, 64)
	}
	if v, ok := it["flags"].(*types.AttributeValueMemberL); ok {
		for _, f := range v.Value {
			if s, ok := f.(*types.AttributeValueMemberS); ok {
				r.Flags = append(r.Flags, s.Value)
			}
		}
	}
	if v, ok := it["workers"].(*types.AttributeValueMemberM); ok {
		for w, c := range v.Value {
			if m, ok := c.(*types.AttributeValueMemberM); ok {
				r.Workers[w] = d.capacity(m.Value, "")
			} else {
				d.fail("workers."+w, "a map")
			}
		}
	}
	if v, ok := it["prevent_further_allocation"].(*types.AttributeValueMemberBOOL); ok {
		r.PreventFurtherAllocation = v.Value
	}
	r.Leases = leasesOf(it)
	return r, d.err
}
