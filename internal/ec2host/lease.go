package ec2host

import (
	"context"
	"fmt"
	"time"
)

// The host holds its bookings under a lease in the allocation table
// (ec2alloc's Renew), renewed every leaseEvery while it is open: when the
// process dies without closing the host, its bookings are released by
// the next sweep once the lease has ended (TerminateIdle), and the
// instance can go idle.

// leaseEvery is how often a host renews its leases for idle timeout idle:
// a quarter of it, at most 30 s.
func leaseEvery(idle time.Duration) time.Duration {
	return max(min(idle/4, 30*time.Second), 100*time.Millisecond)
}

// LeaseTTL is how long a lease lasts unless renewed, for idle timeout
// idle: four renewals.
func LeaseTTL(idle time.Duration) time.Duration { return 4 * leaseEvery(idle) }

// renew extends this host's lease on instance id.
func (h *Host) renew(ctx context.Context, id string) {
	if err := h.table.Renew(ctx, id, h.sess, time.Now().Add(LeaseTTL(h.opts.IdleTimeout))); err != nil {
		fmt.Fprintf(h.opts.Log, "meadowrun: ec2 host: %v\n", err)
	}
}

// leaseLoop renews the leases of the instances this host has workers on
// until it closes.
func (h *Host) leaseLoop() {
	every := leaseEvery(h.opts.IdleTimeout)
	for {
		select {
		case <-h.stopSweep:
			return
		case <-time.After(every):
		}
		h.mu.Lock()
		var ids []string
		for id, inst := range h.instances {
			if inst.workers > 0 {
				ids = append(ids, id)
			}
		}
		h.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), every)
		for _, id := range ids {
			h.renew(ctx, id)
		}
		cancel()
	}
}
