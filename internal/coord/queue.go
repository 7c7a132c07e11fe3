package coord

// taskQueue is a lane's tasks waiting for a worker, in order: a list of
// chunks, so that the feeder's batches are queued, and tasks of a dead
// worker put back in front, without copying the queue (a slice consumed
// from the front and appended to at the back copies all of it every time
// it grows, which for a map of short tasks was a tenth of the client's
// time).
type taskQueue struct {
	chunks [][]*task // each non-empty; the queue owns them
	n      int
}

func (q *taskQueue) len() int { return q.n }

// front is the first task; the queue must not be empty.
func (q *taskQueue) front() *task { return q.chunks[0][0] }

// pushBack queues ts, which the queue then owns, after the others.
func (q *taskQueue) pushBack(ts []*task) {
	if len(ts) > 0 {
		q.chunks = append(q.chunks, ts)
		q.n += len(ts)
	}
}

// pushFront queues a copy of ts, in order, before the others.
func (q *taskQueue) pushFront(ts []*task) {
	if len(ts) > 0 {
		q.chunks = append([][]*task{append([]*task(nil), ts...)}, q.chunks...)
		q.n += len(ts)
	}
}

// prefixUnder is how many of the first n tasks (at least one) fit in
// limit bytes of payload.
func (q *taskQueue) prefixUnder(n, limit int) int {
	bytes, i := 0, 0
	for _, c := range q.chunks {
		for _, t := range c {
			if i == n {
				return n
			}
			bytes += len(t.payload)
			if bytes > limit && i > 0 {
				return i
			}
			i++
		}
	}
	return min(i, n)
}

// popFront removes the first n tasks and returns them in a new slice.
func (q *taskQueue) popFront(n int) []*task {
	n = min(n, q.n)
	out := make([]*task, 0, n)
	for len(out) < n {
		c := q.chunks[0]
		k := min(n-len(out), len(c))
		out = append(out, c[:k]...)
		if k == len(c) {
			q.chunks[0] = nil
			q.chunks = q.chunks[1:]
		} else {
			q.chunks[0] = c[k:]
		}
	}
	q.n -= n
	if q.n == 0 {
		q.chunks = nil
	}
	return out
}

// drain removes and returns every task.
func (q *taskQueue) drain() []*task { return q.popFront(q.n) }
