package journal_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meadowrun-go/meadowrun/internal/journal"
)

// killChildEnv makes the test binary a journal writer that never stops:
// the kill-loop test SIGKILLs it at random moments.
const killChildEnv = "JOURNAL_TEST_KILL_CHILD"

func TestMain(m *testing.M) {
	if dir := os.Getenv(killChildEnv); dir != "" {
		writeForever(dir)
		return
	}
	os.Exit(m.Run())
}

// writeForever creates jobs and commits batches of results to them,
// printing "job seq" after each commit returns.
func writeForever(dir string) {
	ctx := context.Background()
	st := journal.New(dir, journal.Options{})
	out := bufio.NewWriter(os.Stdout)
	for j := 0; ; j++ {
		id := fmt.Sprintf("job-%d-%d", os.Getpid(), j)
		if err := st.Create(ctx, journal.Record{ID: id, Kind: "map", State: "running", Total: -1, Submitted: time.Now()}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		task := 0
		for range 20 {
			n := 1 + rand.IntN(50)
			batch := make([]journal.Result, n)
			for i := range batch {
				batch[i] = journal.Result{Task: task, Attempt: 1, Value: []byte(strings.Repeat("v", rand.IntN(3000)))}
				task++
			}
			if _, err := st.Commit(ctx, id, batch, func(r *journal.Record) error {
				r.Done += n
				return nil
			}); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(3)
			}
			fmt.Fprintf(out, "%s %d\n", id, task)
			out.Flush()
		}
		if _, err := st.Commit(ctx, id, nil, func(r *journal.Record) error {
			r.State, r.Total = "succeeded", task
			return nil
		}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
	}
}

func TestAJournalWriterKilledAtAnyMomentNeverCorruptsIt(t *testing.T) {
	if testing.Short() {
		t.Skip("kill loop skipped in -short mode")
	}
	dir := t.TempDir()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	acked := map[string]int{} // job → tasks acknowledged as committed
	const kills = 30
	for i := range kills {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), killChildEnv+"="+dir)
		cmd.Stderr = os.Stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		// Kill the first round during the journal's creation, the others
		// after a random number of commits and a random delay, so that the
		// kill lands anywhere in a transaction.
		lines := 0
		if i > 0 {
			lines = rand.IntN(15)
		}
		for range lines {
			if !sc.Scan() {
				t.Fatalf("round %d: the writer stopped: %v", i, sc.Err())
			}
			f := strings.Fields(sc.Text())
			n, _ := strconv.Atoi(f[1])
			acked[f[0]] = n
		}
		time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond) // where the kill lands, not synchronisation
		cmd.Process.Signal(syscall.SIGKILL)
		// Commits acknowledged before the kill must be kept too.
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			n, _ := strconv.Atoi(f[1])
			acked[f[0]] = n
		}
		cmd.Wait()

		st := journal.New(dir, journal.Options{})
		if err := st.Verify(context.Background()); err != nil {
			t.Fatalf("round %d: after SIGKILL: %v", i, err)
		}
		for id, n := range acked {
			r, err := st.Get(context.Background(), id)
			if err != nil {
				t.Fatalf("round %d: acknowledged job %s: %v", i, id, err)
			}
			if r.Done < n {
				t.Fatalf("round %d: job %s: %d tasks acknowledged, %d recorded", i, id, n, r.Done)
			}
		}
	}
	recs, err := journal.New(dir, journal.Options{}).List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) < kills/2 {
		t.Errorf("only %d jobs were written in %d rounds", len(recs), kills)
	}
}

func TestJournalOperations(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		run  func(t *testing.T, st *journal.Store)
	}{
		{"a new journal lists no jobs and has no file", func(t *testing.T, st *journal.Store) {
			recs, err := st.List(ctx)
			if err != nil || len(recs) != 0 {
				t.Fatalf("List = %v, %v", recs, err)
			}
			if _, err := os.Stat(st.Path()); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("reading created the file: %v", err)
			}
		}},
		{"an unknown job is ErrNotFound", func(t *testing.T, st *journal.Store) {
			if _, err := st.Get(ctx, "nope"); !errors.Is(err, journal.ErrNotFound) {
				t.Fatalf("Get = %v", err)
			}
			st.Create(ctx, journal.Record{ID: "a"})
			if _, err := st.Get(ctx, "nope"); !errors.Is(err, journal.ErrNotFound) {
				t.Fatalf("Get = %v", err)
			}
			if _, err := st.Commit(ctx, "nope", nil, nil); !errors.Is(err, journal.ErrNotFound) {
				t.Fatalf("Commit = %v", err)
			}
		}},
		{"a job id is used once", func(t *testing.T, st *journal.Store) {
			if err := st.Create(ctx, journal.Record{ID: "a"}); err != nil {
				t.Fatal(err)
			}
			if err := st.Create(ctx, journal.Record{ID: "a"}); !errors.Is(err, journal.ErrExists) {
				t.Fatalf("second Create = %v", err)
			}
		}},
		{"results are read back in commit order after a sequence number", func(t *testing.T, st *journal.Store) {
			st.Create(ctx, journal.Record{ID: "a", Total: 3})
			st.Commit(ctx, "a", []journal.Result{{Task: 2, Value: []byte("x")}}, nil)
			st.Commit(ctx, "a", []journal.Result{{Task: 0}, {Task: 1, Err: &journal.Failure{Kind: "error", Message: "m"}}}, nil)
			all, last, _, err := st.Results(ctx, "a", 0)
			if err != nil || len(all) != 3 || last != 3 || all[0].Task != 2 || string(all[0].Value) != "x" || all[2].Err.Message != "m" {
				t.Fatalf("Results = %+v %d %v", all, last, err)
			}
			more, last2, _, err := st.Results(ctx, "a", 1)
			if err != nil || len(more) != 2 || last2 != 3 || more[0].Task != 0 {
				t.Fatalf("Results after 1 = %+v %d %v", more, last2, err)
			}
		}},
		{"a failing mutation records nothing", func(t *testing.T, st *journal.Store) {
			st.Create(ctx, journal.Record{ID: "a"})
			boom := errors.New("boom")
			_, err := st.Commit(ctx, "a", []journal.Result{{Task: 0}}, func(r *journal.Record) error { return boom })
			if err != boom {
				t.Fatalf("Commit = %v, want the mutation's error as is", err)
			}
			res, _, _, _ := st.Results(ctx, "a", 0)
			if len(res) != 0 {
				t.Fatalf("results recorded: %v", res)
			}
		}},
		{"arguments are read back in chunks", func(t *testing.T, st *journal.Store) {
			st.Create(ctx, journal.Record{ID: "a"})
			st.PutArgs(ctx, "a", 0, [][]byte{[]byte("0"), []byte("1"), []byte("2")})
			st.PutArgs(ctx, "a", 3, [][]byte{[]byte("3")})
			a, _ := st.Args(ctx, "a", 0, 2)
			b, _ := st.Args(ctx, "a", 2, 10)
			if len(a) != 2 || len(b) != 2 || string(a[1]) != "1" || string(b[1]) != "3" {
				t.Fatalf("Args = %q %q", a, b)
			}
		}},
		{"jobs are listed oldest first and can be deleted", func(t *testing.T, st *journal.Store) {
			now := time.Now()
			st.Create(ctx, journal.Record{ID: "b", Submitted: now})
			st.Create(ctx, journal.Record{ID: "a", Submitted: now.Add(time.Second)})
			recs, _ := st.List(ctx)
			if len(recs) != 2 || recs[0].ID != "b" {
				t.Fatalf("List = %+v", recs)
			}
			if err := st.Delete(ctx, "b"); err != nil {
				t.Fatal(err)
			}
			if recs, _ := st.List(ctx); len(recs) != 1 {
				t.Fatalf("after Delete: %+v", recs)
			}
		}},
		{"the version changes with every commit", func(t *testing.T, st *journal.Store) {
			if v := st.Version(); v != "" {
				t.Fatalf("Version of no journal = %q", v)
			}
			st.Create(ctx, journal.Record{ID: "a"})
			v1 := st.Version()
			st.Commit(ctx, "a", nil, nil)
			if v2 := st.Version(); v2 == v1 || v2 == "" {
				t.Fatalf("versions %q then %q", v1, v2)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.run(t, journal.New(t.TempDir(), journal.Options{}))
		})
	}
}

func TestAnUnwritableStateDirectoryIsAClearError(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o644)
	st := journal.New(filepath.Join(file, "meadowrun"), journal.Options{})
	err := st.Create(context.Background(), journal.Record{ID: "a"})
	if err == nil || !strings.Contains(err.Error(), "state directory") || !strings.Contains(err.Error(), "XDG_STATE_HOME") {
		t.Fatalf("Create = %v", err)
	}
}

func TestAFullDiskFailsTheCommitAndKeepsTheJournalIntact(t *testing.T) {
	ctx := context.Background()
	st := journal.New(t.TempDir(), journal.Options{MaxSize: 256 << 10})
	if err := st.Create(ctx, journal.Record{ID: "a"}); err != nil {
		t.Fatal(err)
	}
	committed := 0
	var err error
	for i := 0; i < 1000 && err == nil; i++ {
		_, err = st.Commit(ctx, "a", []journal.Result{{Task: i, Value: make([]byte, 8<<10)}}, func(r *journal.Record) error {
			r.Done++
			return nil
		})
		if err == nil {
			committed++
		}
	}
	if err == nil || !strings.Contains(err.Error(), "journal") {
		t.Fatalf("the journal never filled up: %v", err)
	}
	if err := st.Verify(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := st.Get(ctx, "a")
	if err != nil || r.Done != committed {
		t.Fatalf("after the failure: %+v %v, want %d done", r, err, committed)
	}
}

func TestConcurrentWritersWaitForEachOther(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	journal.New(dir, journal.Options{}).Create(ctx, journal.Record{ID: "a"})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			// Each goroutine has its own store, as separate processes would.
			st := journal.New(dir, journal.Options{})
			for range 20 {
				if _, err := st.Commit(ctx, "a", []journal.Result{{Task: 0}}, func(r *journal.Record) error {
					r.Done++
					return nil
				}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	st := journal.New(dir, journal.Options{})
	if r, _ := st.Get(ctx, "a"); r.Done != 160 {
		t.Fatalf("Done = %d, want 160", r.Done)
	}
	if err := st.Verify(ctx); err != nil {
		t.Fatal(err)
	}
}
