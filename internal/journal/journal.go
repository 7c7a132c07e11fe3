package journal

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/meadowrun-go/meadowrun/driver"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Errors of the journal, for errors.Is.
var (
	// ErrNotFound: no job has the given id.
	ErrNotFound = errors.New("journal: no such job")
	// ErrExists: a job with the id already exists.
	ErrExists = errors.New("journal: job already exists")
	// ErrLockTimeout: another process held the journal longer than the
	// store's timeout.
	ErrLockTimeout = errors.New("journal: timed out waiting for the journal lock")
)

// FileName is the name of the journal file in its state directory.
const FileName = "journal.db"

// The journal stores the job keepers' types of package driver.
type (
	// Function names a registered function.
	Function = driver.JobFunc
	// Record describes one job; the journal stores it as JSON.
	Record = driver.Job
	// Part is one machine's share of a map split across machines.
	Part = driver.JobPart
	// Failure describes a failed task, or a failure of the whole job.
	Failure = driver.JobFailure
	// Result is the final outcome of one task; Task -1 is the job's.
	Result = driver.JobResult
)

// Options configure a Store. The zero value waits up to 30 s for the lock.
type Options struct {
	// LockTimeout bounds how long an operation waits for another process
	// to release the journal. 0 means 30 s.
	LockTimeout time.Duration
	// MaxSize, when positive, caps the journal file: a transaction that
	// would grow it further fails as if the disk were full.
	MaxSize int
}

// Store is the journal of one state directory. It holds no open file
// between operations and is safe for concurrent use, within a process and
// across processes.
type Store struct {
	dir  string
	path string
	opts Options
}

// New returns the store of the state directory dir. It does no I/O: the
// directory and the file are created by the first write.
func New(dir string, opts Options) *Store {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = 30 * time.Second
	}
	return &Store{dir: dir, path: filepath.Join(dir, FileName), opts: opts}
}

// Path is the journal file.
func (s *Store) Path() string { return s.path }

// Dir is the state directory.
func (s *Store) Dir() string { return s.dir }

var (
	bJobs = []byte("jobs")
	kRec  = []byte("rec")
	bArgs = []byte("args")
	bRes  = []byte("res")
)

// errNoFile is returned by read operations when no journal exists yet.
var errNoFile = errors.New("journal: no journal file")

// open opens the database for one transaction, waiting for the lock.
func (s *Store) open(ctx context.Context, write bool) (*bolt.DB, func(), error) {
	unlock, err := lockProcess(ctx, s.path)
	if err != nil {
		return nil, nil, err
	}
	if write {
		if err := s.ensureFile(); err != nil {
			unlock()
			return nil, nil, err
		}
	} else if _, err := os.Stat(s.path); errors.Is(err, fs.ErrNotExist) {
		unlock()
		return nil, nil, errNoFile
	}
	opts := &bolt.Options{
		ReadOnly: !write,
		MaxSize:  s.opts.MaxSize,
		OpenFile: func(name string, flag int, perm os.FileMode) (*os.File, error) {
			return openLocked(ctx, name, flag, perm, write, s.opts.LockTimeout)
		},
	}
	db, err := bolt.Open(s.path, 0o600, opts)
	if err != nil {
		unlock()
		if errors.Is(err, fs.ErrNotExist) && !write {
			return nil, nil, errNoFile
		}
		return nil, nil, s.wrap("opening", err)
	}
	return db, func() { db.Close(); unlock() }, nil
}

// ensureFile creates the state directory and, atomically, an initialised
// journal file if there is none: the file is built under a temporary name
// and linked into place, so that no process ever sees half of it.
func (s *Store) ensureFile() error {
	if _, err := os.Stat(s.path); err == nil {
		return nil
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("journal: the state directory %s cannot be created: %w (set XDG_STATE_HOME to a writable directory)", s.dir, err)
	}
	f, err := os.CreateTemp(s.dir, FileName+".new-*")
	if err != nil {
		return fmt.Errorf("journal: the state directory %s is not writable: %w (set XDG_STATE_HOME to a writable directory)", s.dir, err)
	}
	tmp := f.Name()
	f.Close()
	defer os.Remove(tmp)
	db, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: time.Second, MaxSize: s.opts.MaxSize})
	if err != nil {
		return s.wrap("creating", err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bJobs)
		return err
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return s.wrap("creating", err)
	}
	if err := os.Link(tmp, s.path); err != nil && !errors.Is(err, fs.ErrExist) {
		return s.wrap("creating", err)
	}
	s.removeStale()
	return nil
}

// removeStale removes temporary files left by processes killed while
// creating the journal.
func (s *Store) removeStale() {
	names, _ := filepath.Glob(filepath.Join(s.dir, FileName+".new-*"))
	for _, n := range names {
		if fi, err := os.Stat(n); err == nil && time.Since(fi.ModTime()) > time.Minute {
			os.Remove(n)
		}
	}
}

func (s *Store) wrap(what string, err error) error {
	if errors.Is(err, ErrLockTimeout) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("journal: %s %s: %w", what, s.path, err)
}

// update runs fn in a read-write transaction.
func (s *Store) update(ctx context.Context, what string, fn func(tx *bolt.Tx) error) error {
	db, done, err := s.open(ctx, true)
	if err != nil {
		return err
	}
	defer done()
	if err := db.Update(fn); err != nil {
		if errors.Is(err, ErrNotFound) || errors.Is(err, ErrExists) {
			return err
		}
		var fe *fnError
		if errors.As(err, &fe) {
			return fe.err
		}
		return s.wrap(what, err)
	}
	return nil
}

// view runs fn in a read-only transaction. It reports errNoFile when there
// is no journal yet.
func (s *Store) view(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	db, done, err := s.open(ctx, false)
	if err != nil {
		return err
	}
	defer done()
	if err := db.View(fn); err != nil {
		var fe *fnError
		if errors.As(err, &fe) {
			return fe.err
		}
		if errors.Is(err, ErrNotFound) {
			return err
		}
		return s.wrap("reading", err)
	}
	return nil
}

// fnError carries an error of a caller's function through a transaction
// unwrapped.
type fnError struct{ err error }

func (e *fnError) Error() string { return e.err.Error() }

func jobBucket(tx *bolt.Tx, id string) (*bolt.Bucket, error) {
	jobs := tx.Bucket(bJobs)
	if jobs == nil {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	b := jobs.Bucket([]byte(id))
	if b == nil {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return b, nil
}

func getRecord(b *bolt.Bucket, id string) (Record, error) {
	var r Record
	v := b.Get(kRec)
	if v == nil {
		return r, fmt.Errorf("journal: job %s has no record", id)
	}
	if err := json.Unmarshal(v, &r); err != nil {
		return r, fmt.Errorf("journal: job %s: decoding its record: %w", id, err)
	}
	return r, nil
}

func putRecord(b *bolt.Bucket, r Record) error {
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return b.Put(kRec, v)
}

func u64(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }

// Create records a new job. It fails with ErrExists if the id is taken,
// and with a clear error when the state directory is not writable.
func (s *Store) Create(ctx context.Context, r Record) error {
	if r.ID == "" || strings.ContainsAny(r.ID, "/\x00") {
		return fmt.Errorf("journal: invalid job id %q", r.ID)
	}
	return s.update(ctx, "recording job "+r.ID+" in", func(tx *bolt.Tx) error {
		jobs, err := tx.CreateBucketIfNotExists(bJobs)
		if err != nil {
			return err
		}
		if jobs.Bucket([]byte(r.ID)) != nil {
			return fmt.Errorf("%w: %s", ErrExists, r.ID)
		}
		b, err := jobs.CreateBucket([]byte(r.ID))
		if err != nil {
			return err
		}
		if _, err := b.CreateBucket(bRes); err != nil {
			return err
		}
		return putRecord(b, r)
	})
}

// PutArgs stores encoded arguments first, first+1, ... of a job.
func (s *Store) PutArgs(ctx context.Context, id string, first int, args [][]byte) error {
	return s.update(ctx, "recording the arguments of job "+id+" in", func(tx *bolt.Tx) error {
		b, err := jobBucket(tx, id)
		if err != nil {
			return err
		}
		ab, err := b.CreateBucketIfNotExists(bArgs)
		if err != nil {
			return err
		}
		for i, a := range args {
			if err := ab.Put(u64(uint64(first+i)), a); err != nil {
				return err
			}
		}
		return nil
	})
}

// Args returns up to max arguments of a job from index first on; fewer
// means the end was reached.
func (s *Store) Args(ctx context.Context, id string, first, max int) ([][]byte, error) {
	var out [][]byte
	err := s.view(ctx, func(tx *bolt.Tx) error {
		b, err := jobBucket(tx, id)
		if err != nil {
			return err
		}
		ab := b.Bucket(bArgs)
		if ab == nil {
			return nil
		}
		c := ab.Cursor()
		for k, v := c.Seek(u64(uint64(first))); k != nil && len(out) < max; k, v = c.Next() {
			out = append(out, slices.Clone(v))
		}
		return nil
	})
	if errors.Is(err, errNoFile) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return out, err
}

// Commit appends results to a job and applies mutate to its record, in
// one transaction: either both are recorded or neither. mutate may be nil;
// an error from it aborts the transaction and is returned as is. Commit
// returns the record as stored.
func (s *Store) Commit(ctx context.Context, id string, results []Result, mutate func(*Record) error) (Record, error) {
	var out Record
	what := fmt.Sprintf("recording %d results of job %s in", len(results), id)
	if len(results) == 0 {
		what = "updating job " + id + " in"
	}
	err := s.update(ctx, what, func(tx *bolt.Tx) error {
		b, err := jobBucket(tx, id)
		if err != nil {
			return err
		}
		r, err := getRecord(b, id)
		if err != nil {
			return err
		}
		rb := b.Bucket(bRes)
		for _, res := range results {
			seq, err := rb.NextSequence()
			if err != nil {
				return err
			}
			v, err := json.Marshal(res)
			if err != nil {
				return err
			}
			if err := rb.Put(u64(seq), v); err != nil {
				return err
			}
		}
		if mutate != nil {
			if err := mutate(&r); err != nil {
				return &fnError{err}
			}
		}
		out = r
		return putRecord(b, r)
	})
	return out, err
}

// Get returns a job's record.
func (s *Store) Get(ctx context.Context, id string) (Record, error) {
	var r Record
	err := s.view(ctx, func(tx *bolt.Tx) error {
		b, err := jobBucket(tx, id)
		if err != nil {
			return err
		}
		r, err = getRecord(b, id)
		return err
	})
	if errors.Is(err, errNoFile) {
		return r, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return r, err
}

// List returns every job's record, oldest submission first.
func (s *Store) List(ctx context.Context) ([]Record, error) {
	var out []Record
	err := s.view(ctx, func(tx *bolt.Tx) error {
		jobs := tx.Bucket(bJobs)
		if jobs == nil {
			return nil
		}
		return jobs.ForEachBucket(func(k []byte) error {
			r, err := getRecord(jobs.Bucket(k), string(k))
			if err != nil {
				return err
			}
			out = append(out, r)
			return nil
		})
	})
	if errors.Is(err, errNoFile) {
		return nil, nil
	}
	slices.SortStableFunc(out, func(a, b Record) int {
		if c := a.Submitted.Compare(b.Submitted); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, err
}

// Results returns a job's results recorded after sequence number after
// (0: all), the last sequence number returned, and the job's record, from
// one consistent snapshot.
func (s *Store) Results(ctx context.Context, id string, after uint64) ([]Result, uint64, Record, error) {
	var (
		out  []Result
		last = after
		rec  Record
	)
	err := s.view(ctx, func(tx *bolt.Tx) error {
		b, err := jobBucket(tx, id)
		if err != nil {
			return err
		}
		if rec, err = getRecord(b, id); err != nil {
			return err
		}
		rb := b.Bucket(bRes)
		if rb == nil {
			return nil
		}
		c := rb.Cursor()
		for k, v := c.Seek(u64(after + 1)); k != nil; k, v = c.Next() {
			var r Result
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("journal: job %s: decoding result %d: %w", id, binary.BigEndian.Uint64(k), err)
			}
			out = append(out, r)
			last = binary.BigEndian.Uint64(k)
		}
		return nil
	})
	if errors.Is(err, errNoFile) {
		return nil, after, rec, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return out, last, rec, err
}

// Delete forgets a job: its record, arguments and results.
func (s *Store) Delete(ctx context.Context, id string) error {
	return s.update(ctx, "deleting job "+id+" from", func(tx *bolt.Tx) error {
		jobs := tx.Bucket(bJobs)
		if jobs == nil || jobs.Bucket([]byte(id)) == nil {
			return fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		return jobs.DeleteBucket([]byte(id))
	})
}

// Version identifies the journal file's current contents cheaply, without
// the lock: it is the highest transaction id of the file's two meta pages,
// so it changes whenever a transaction commits. Followers compare it to
// skip reading an unchanged journal. It is "" when there is no journal.
func (s *Store) Version() string {
	f, err := os.Open(s.path)
	if err != nil {
		return ""
	}
	defer f.Close()
	// A meta page: a 16-byte page header, then magic, version, page size
	// and flags (4 bytes each), the root bucket (16), the freelist and
	// high-water page ids (8 each), and the transaction id.
	const pageSizeAt, txidAt = 16 + 8, 16 + 48
	var buf [8]byte
	if _, err := f.ReadAt(buf[:4], pageSizeAt); err != nil {
		return ""
	}
	ps := int64(binary.LittleEndian.Uint32(buf[:4]))
	var txid uint64
	for _, off := range []int64{txidAt, ps + txidAt} {
		if _, err := f.ReadAt(buf[:], off); err == nil {
			txid = max(txid, binary.LittleEndian.Uint64(buf[:]))
		}
	}
	return strconv.FormatUint(txid, 10)
}

// Verify checks the journal's integrity: bbolt's own page-level check,
// then that every record decodes and that each job's results are numbered
// 1..n without a gap and match its counters: Done counts the successes,
// Failed the task failures (Kind set); results of the job as a whole
// (Kind "") count as neither.
func (s *Store) Verify(ctx context.Context) error {
	err := s.view(ctx, func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		if len(errs) > 0 {
			return fmt.Errorf("journal: %s is corrupt: %w", s.path, errors.Join(errs...))
		}
		jobs := tx.Bucket(bJobs)
		if jobs == nil {
			return fmt.Errorf("journal: %s has no jobs bucket", s.path)
		}
		return jobs.ForEachBucket(func(k []byte) error {
			id := string(k)
			b := jobs.Bucket(k)
			r, err := getRecord(b, id)
			if err != nil {
				return err
			}
			rb := b.Bucket(bRes)
			if rb == nil {
				return fmt.Errorf("journal: job %s has no results bucket", id)
			}
			var n uint64
			done, failed := 0, 0
			err = rb.ForEach(func(k, v []byte) error {
				n++
				if got := binary.BigEndian.Uint64(k); got != n {
					return fmt.Errorf("journal: job %s: result %d is numbered %d", id, n, got)
				}
				var res Result
				if err := json.Unmarshal(v, &res); err != nil {
					return fmt.Errorf("journal: job %s: result %d: %w", id, n, err)
				}
				switch {
				case res.Task < 0:
				case res.Err == nil:
					done++
				case res.Err.Kind != "":
					failed++
				}
				return nil
			})
			if err != nil {
				return err
			}
			if rb.Sequence() != n {
				return fmt.Errorf("journal: job %s: %d results but sequence %d", id, n, rb.Sequence())
			}
			if done != r.Done || failed != r.Failed {
				return fmt.Errorf("journal: job %s: %d tasks succeeded and %d failed, but its counters say %d and %d", id, done, failed, r.Done, r.Failed)
			}
			return nil
		})
	})
	if errors.Is(err, errNoFile) {
		return nil
	}
	return err
}
