package coord

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/meadowrun-go/meadowrun/driver"
)

// Pool keeps warm workers of one host, keyed by deployment and resources,
// and admits new ones against the host's capacity. Workers are lent to one
// job at a time and return warm, so that a second call in the same process
// does not start a process.
type Pool struct {
	drv     driver.Host
	idleFor time.Duration
	digest  string // code identity workers must have ("" = do not check)

	mu      sync.Mutex
	idle    map[string][]*workerConn
	all     map[*workerConn]bool
	changed chan struct{} // closed and replaced whenever capacity may have freed
	seq     int
	closed  bool
	reaping bool
}

// NewPool makes the pool of warm workers of drv. digest is the code
// identity every worker must announce ("" checks none).
func NewPool(drv driver.Host, digest string) *Pool {
	return &Pool{drv: drv, idleFor: defaultIdle, digest: digest, idle: map[string][]*workerConn{},
		all: map[*workerConn]bool{}, changed: make(chan struct{})}
}

// broadcastLocked wakes everyone waiting for capacity.
func (p *Pool) broadcastLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// tryIdle lends an idle worker of key to run, or returns nil at once.
func (p *Pool) tryIdle(run *Job, key string) *workerConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	list := p.idle[key]
	if len(list) == 0 || p.closed {
		return nil
	}
	c := list[len(list)-1]
	p.idle[key] = list[:len(list)-1]
	c.mu.Lock()
	c.run, c.lentAt = run, time.Now()
	c.mu.Unlock()
	return c
}

// acquire lends a worker for spec to run, starting one when no idle worker
// with the same key exists, and waiting while the host is full.
func (p *Pool) acquire(ctx context.Context, run *Job, key string, spec driver.WorkerSpec) (*workerConn, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, errors.New("meadowrun: host closed")
		}
		if list := p.idle[key]; len(list) > 0 {
			c := list[len(list)-1]
			p.idle[key] = list[:len(list)-1]
			c.mu.Lock()
			c.run, c.lentAt = run, time.Now()
			c.mu.Unlock()
			p.mu.Unlock()
			return c, nil
		}
		p.seq++
		spec.Name = fmt.Sprintf("w%d", p.seq)
		changed := p.changed
		p.mu.Unlock()

		startAt := time.Now()
		w, err := p.drv.Start(ctx, spec)
		if err == nil {
			c, err := connect(ctx, p, w, key, spec.Runtime, run)
			if err != nil {
				return nil, err
			}
			p.mu.Lock()
			p.all[c] = true
			c.mu.Lock()
			c.run, c.lentAt, c.rate = run, startAt, rateOf(w)
			c.mu.Unlock()
			// Ports are the job's: its worker is not kept for later jobs,
			// so that they close when it ends.
			c.oneJob = len(spec.Ports) > 0
			p.mu.Unlock()
			return c, nil
		}
		if !errors.Is(err, driver.ErrNoCapacity) {
			return nil, err
		}
		// The host is full. Idle workers of other kinds make way; otherwise
		// wait for a worker to be released or to exit.
		if victim := p.evictIdle(key); victim != nil {
			victim.w.Kill()
			select {
			case <-victim.gone:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			continue
		}
		// Hosts of several machines also gain capacity when a lost machine
		// comes back, which releases no worker here: ask again now and then.
		t := time.NewTimer(capacityPoll)
		select {
		case <-changed:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
		t.Stop()
	}
}

// defaultIdle is how long a warm worker waits for work before it stops.
const defaultIdle = 2 * time.Minute

// capacityPoll is how often a full host is asked again for a worker.
const capacityPoll = time.Second

// evictIdle removes the longest-idle worker whose key differs from key.
func (p *Pool) evictIdle(key string) *workerConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	var victim *workerConn
	vk, vi := "", -1
	for k, list := range p.idle {
		for i, c := range list {
			if victim == nil || c.idleAt.Before(victim.idleAt) {
				victim, vk, vi = c, k, i
			}
		}
	}
	if victim == nil {
		return nil
	}
	_ = key
	p.idle[vk] = append(p.idle[vk][:vi], p.idle[vk][vi+1:]...)
	return victim
}

// release returns a lent worker. A worker with tasks still in flight (its
// job ended early), a dead one, or one holding its job's ports is stopped
// instead of kept.
func (p *Pool) release(c *workerConn) {
	c.charge()
	c.mu.Lock()
	c.run = nil
	keep := !c.dead && len(c.inflight) == 0 && !c.oneJob
	c.idleAt = time.Now()
	c.mu.Unlock()
	if !keep {
		c.w.Kill()
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.w.Kill()
		return
	}
	p.idle[c.key] = append(p.idle[c.key], c)
	p.broadcastLocked()
	if !p.reaping {
		p.reaping = true
		go p.reap()
	}
}

// dropped forgets a worker whose stream has ended.
func (p *Pool) dropped(c *workerConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.all, c)
	list := p.idle[c.key]
	for i, x := range list {
		if x == c {
			p.idle[c.key] = append(list[:i], list[i+1:]...)
			break
		}
	}
	p.broadcastLocked()
}

// reap stops workers idle for longer than idleFor, freeing their capacity.
func (p *Pool) reap() {
	t := time.NewTicker(p.idleFor / 4)
	defer t.Stop()
	for range t.C {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return
		}
		var stale []*workerConn
		n := 0
		for k, list := range p.idle {
			keep := list[:0]
			for _, c := range list {
				if time.Since(c.idleAt) > p.idleFor {
					stale = append(stale, c)
				} else {
					keep = append(keep, c)
				}
			}
			p.idle[k] = keep
			n += len(keep)
		}
		if n == 0 {
			p.reaping = false
		}
		p.mu.Unlock()
		for _, c := range stale {
			c.w.Conn().Close() // end of stream: the worker exits
		}
		if n == 0 {
			return
		}
	}
}

// Close stops every worker of the pool and waits for them. Jobs still
// running on them see their workers die.
func (p *Pool) Close() {
	p.mu.Lock()
	p.closed = true
	cs := make([]*workerConn, 0, len(p.all))
	for c := range p.all {
		cs = append(cs, c)
	}
	p.mu.Unlock()
	for _, c := range cs {
		c.w.Kill()
	}
	for _, c := range cs {
		<-c.gone
	}
}
