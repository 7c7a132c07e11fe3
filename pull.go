package meadowrun

import (
	"iter"
	"sync"
)

// pullAhead is how many arguments pullBatched reads ahead of the map.
const pullAhead = 1024

// pullBatched is iter.Pull for the arguments of a map: a goroutine runs
// seq and hands over what it has read in batches, so that a map of a
// million arguments costs a lock per batch instead of two coroutine
// switches per argument. The goroutine reads at most pullAhead arguments
// ahead of next and never waits to fill a batch: a slow iterator's
// arguments are handed over as they come. stop ends the iteration (seq's
// yield returns false) and waits for seq to return; a panic in seq is
// raised again by next.
func pullBatched[A any](seq iter.Seq[A]) (next func() (A, bool), stop func()) {
	p := &puller[A]{seq: seq}
	p.cond = sync.NewCond(&p.mu)
	return p.next, p.stop
}

type puller[A any] struct {
	seq   iter.Seq[A]
	taken []A // the batch next reads from
	pos   int

	mu       sync.Mutex
	cond     *sync.Cond
	started  bool
	buf      []A // read by the goroutine, not yet taken
	done     bool
	stopped  bool
	exited   chan struct{}
	panicked bool
	panicVal any
}

func (p *puller[A]) next() (A, bool) {
	if p.pos < len(p.taken) {
		p.pos++
		return p.taken[p.pos-1], true
	}
	var zero A
	p.mu.Lock()
	if !p.started && !p.stopped {
		p.started = true
		p.exited = make(chan struct{})
		go p.run()
	}
	for len(p.buf) == 0 && !p.done && !p.stopped {
		p.cond.Wait()
	}
	if len(p.buf) == 0 {
		panicked, v := p.panicked, p.panicVal
		p.mu.Unlock()
		if panicked {
			panic(v)
		}
		return zero, false
	}
	clear(p.taken)
	p.taken, p.buf = p.buf, p.taken[:0]
	p.cond.Broadcast() // room again for the goroutine
	p.mu.Unlock()
	p.pos = 1
	return p.taken[0], true
}

func (p *puller[A]) run() {
	defer close(p.exited)
	defer func() {
		v := recover()
		p.mu.Lock()
		if v != nil {
			p.panicked, p.panicVal = true, v
		}
		p.done = true
		p.cond.Broadcast()
		p.mu.Unlock()
	}()
	for a := range p.seq {
		p.mu.Lock()
		for len(p.buf) >= pullAhead && !p.stopped {
			p.cond.Wait()
		}
		if p.stopped {
			p.mu.Unlock()
			return
		}
		p.buf = append(p.buf, a)
		if len(p.buf) == 1 {
			p.cond.Broadcast() // next may be waiting
		}
		p.mu.Unlock()
	}
}

func (p *puller[A]) stop() {
	clear(p.taken)
	p.taken, p.pos = nil, 0
	p.mu.Lock()
	p.stopped = true
	p.cond.Broadcast()
	exited := p.exited
	p.mu.Unlock()
	if exited != nil {
		<-exited
	}
}
