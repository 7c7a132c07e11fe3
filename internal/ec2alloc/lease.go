package ec2alloc

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// Leases. A client holds its bookings on an instance under a lease that
// it renews while it lives (Renew); a client that dies without releasing
// them (killed, its machine lost) stops renewing, and once the lease has
// ended a sweep releases its bookings (ReleaseExpired), so that the
// instance can go idle and be terminated. The holder of a booking is its
// worker name up to the last "-": workers are named HOLDER-N.

// HolderOf returns the holder of worker's booking.
func HolderOf(worker string) string {
	if i := strings.LastIndexByte(worker, '-'); i > 0 {
		return worker[:i]
	}
	return worker
}

// Renew extends holder's lease on the instance until until; it fails with
// [ErrNotRegistered] when the instance is not in the table.
func (t *Table) Renew(ctx context.Context, instanceID, holder string, until time.Time) error {
	for range 3 {
		// The lease map exists: set the holder's entry.
		_, err := t.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
			TableName: aws.String(t.name), Key: key(instanceID),
			ConditionExpression:       aws.String("attribute_exists(instance_id) AND attribute_exists(leases)"),
			UpdateExpression:          aws.String("SET leases.#h = :u"),
			ExpressionAttributeNames:  map[string]string{"#h": holder},
			ExpressionAttributeValues: map[string]types.AttributeValue{":u": num(until.UnixMilli())},
		})
		if err == nil {
			return nil
		}
		if !isConditionFailed(err) {
			return fmt.Errorf("ec2alloc: renewing the lease of %s on %s: %w", holder, instanceID, err)
		}
		// No lease map yet (or no instance): make it.
		_, err = t.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
			TableName: aws.String(t.name), Key: key(instanceID),
			ConditionExpression: aws.String("attribute_exists(instance_id) AND attribute_not_exists(leases)"),
			UpdateExpression:    aws.String("SET leases = :m"),
			ExpressionAttributeValues: map[string]types.AttributeValue{
				":m": &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{holder: num(until.UnixMilli())}}},
		})
		if err == nil {
			return nil
		}
		if !isConditionFailed(err) {
			return fmt.Errorf("ec2alloc: renewing the lease of %s on %s: %w", holder, instanceID, err)
		}
		if _, gerr := t.Get(ctx, instanceID); errors.Is(gerr, ErrNotRegistered) {
			return gerr
		}
		// Another holder made the map in between: set the entry.
	}
	return fmt.Errorf("ec2alloc: renewing the lease of %s on %s: the item keeps changing", holder, instanceID)
}

// ReleaseExpired releases the bookings of rec whose holder's lease has
// ended, and those of holders with no lease that were made or changed
// more than grace ago (by a client that died before its first renewal),
// and drops the ended leases. It returns the workers released.
func (t *Table) ReleaseExpired(ctx context.Context, rec Record, grace time.Duration) ([]string, error) {
	now := t.now()
	expired := map[string]bool{}
	var out []string
	var errs []error
	for w := range rec.Workers {
		h := HolderOf(w)
		until, ok := rec.Leases[h]
		if ok && until.After(now) || !ok && rec.LastUpdate.After(now.Add(-grace)) {
			continue
		}
		if ok {
			expired[h] = true
		}
		err := t.releaseExpired(ctx, rec.InstanceID, w, rec.Workers[w], now, grace)
		switch {
		case err == nil:
			out = append(out, w)
		case isConditionFailed(err):
			// Renewed, or released, meanwhile.
		default:
			errs = append(errs, fmt.Errorf("ec2alloc: releasing %s on %s: %w", w, rec.InstanceID, err))
		}
	}
	for h, until := range rec.Leases {
		if !until.After(now) {
			expired[h] = true
		}
	}
	for h := range expired {
		// Unless renewed meanwhile.
		_, err := t.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
			TableName: aws.String(t.name), Key: key(rec.InstanceID),
			ConditionExpression:       aws.String("leases.#h <= :now"),
			UpdateExpression:          aws.String("REMOVE leases.#h"),
			ExpressionAttributeNames:  map[string]string{"#h": h},
			ExpressionAttributeValues: map[string]types.AttributeValue{":now": num(now.UnixMilli())},
		})
		if err != nil && !isConditionFailed(err) {
			errs = append(errs, fmt.Errorf("ec2alloc: dropping the lease of %s on %s: %w", h, rec.InstanceID, err))
		}
	}
	return out, errors.Join(errs...)
}

// leasesOf reads an item's leases.
func leasesOf(it map[string]types.AttributeValue) map[string]time.Time {
	m, ok := it["leases"].(*types.AttributeValueMemberM)
	if !ok {
		return nil
	}
	out := map[string]time.Time{}
	for h, v := range m.Value {
		if n, ok := v.(*types.AttributeValueMemberN); ok {
			if ms, err := strconv.ParseInt(n.Value, 10, 64); err == nil {
				out[h] = time.UnixMilli(ms)
			}
		}
	}
	return out
}

// releaseExpired is Release of worker, holding held, on the condition,
// checked with the write, that its holder's lease has ended (or that it
// has none and the item is older than grace): a holder that renews
// meanwhile keeps its bookings.
func (t *Table) releaseExpired(ctx context.Context, instanceID, worker string, held Capacity, now time.Time, grace time.Duration) error {
	_, err := t.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: aws.String(t.name), Key: key(instanceID),
		ConditionExpression:      aws.String("attribute_exists(workers.#w) AND (leases.#h <= :now OR (attribute_not_exists(leases.#h) AND last_update <= :cutoff))"),
		UpdateExpression:         aws.String("SET free_cpu = free_cpu + :cpu, free_mem = free_mem + :mem, free_gpu = free_gpu + :gpu, free_gpu_mem = free_gpu_mem + :gmem, last_update = :now REMOVE workers.#w"),
		ExpressionAttributeNames: map[string]string{"#w": worker, "#h": HolderOf(worker)},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":cpu": num(held.MilliCPU), ":mem": num(held.MemoryBytes), ":gpu": num(held.MilliGPUs), ":gmem": num(held.GPUMemoryBytes),
			":now": num(now.UnixMilli()), ":cutoff": num(now.Add(-grace).UnixMilli()),
		},
	})
	return err
}
