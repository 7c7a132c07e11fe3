package hosttest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/meadowrun-go/meadowrun"
)

// The functions the suite runs. They are registered by importing this
// package, in the caller and, since workers re-execute the test binary, in
// every worker too.
var (
	square = meadowrun.Register("hosttest.Square", func(ctx context.Context, x int) (int, error) {
		return x * x, nil
	})
	fail = meadowrun.Register("hosttest.Fail", func(ctx context.Context, msg string) (int, error) {
		return 0, &customError{msg}
	})
	panics = meadowrun.Register("hosttest.Panic", func(ctx context.Context, x int) (int, error) {
		var m map[string]int
		//lint:ignore SA5000 a deliberate runtime panic
		m["boom"] = x
		return 0, nil
	})
	failIf = meadowrun.Register("hosttest.FailIf", func(ctx context.Context, x int) (int, error) {
		if x%7 == 3 {
			return 0, fmt.Errorf("task with argument %d always fails", x)
		}
		return x + 1, nil
	})
	flakyOnce = meadowrun.Register("hosttest.FlakyOnce", func(ctx context.Context, a marked) (int, error) {
		if firstTime(a) {
			return 0, errors.New("first attempt fails on purpose")
		}
		return a.ID * 10, nil
	})
	sleep = meadowrun.Register("hosttest.Sleep", func(ctx context.Context, ms int) (int, error) {
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
			return ms, nil
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	})
	// sleepSaying also says when it has slept, before it returns: how a
	// test knows that a task has finished without guessing how long the
	// host takes to start it.
	sleepSaying = meadowrun.Register("hosttest.SleepSaying", func(ctx context.Context, ms int) (int, error) {
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
			fmt.Printf("slept %d ms\n", ms)
			return ms, nil
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	})
	printer = meadowrun.Register("hosttest.Print", func(ctx context.Context, x int) (int, error) {
		fmt.Printf("stdout line of %d\n", x)
		fmt.Fprintf(os.Stderr, "stderr line of %d\n", x)
		return x, nil
	})
	exits = meadowrun.Register("hosttest.Exit", func(ctx context.Context, code int) (int, error) {
		fmt.Println("about to exit")
		os.Exit(code)
		return 0, nil
	})
	killSelfOnce = meadowrun.Register("hosttest.KillSelfOnce", func(ctx context.Context, a marked) (int, error) {
		if firstTime(a) {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			time.Sleep(time.Minute)
		}
		return a.ID, nil
	})
	alloc = meadowrun.Register("hosttest.Alloc", func(ctx context.Context, mb int) (int, error) {
		// Anonymous memory outside the Go heap: exactly mb MiB, whatever
		// the garbage collector or the race detector would add.
		b, err := syscall.Mmap(-1, 0, mb<<20, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
		if err != nil {
			return 0, err
		}
		defer syscall.Munmap(b)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		// Held for five of the watchdog's 50 ms sampling intervals, where it
		// is used (a pod's agent has no writable cgroup): one interval was
		// missed on a loaded CI machine.
		time.Sleep(250 * time.Millisecond)
		return len(b) >> 20, nil
	})
	badResult = meadowrun.Register("hosttest.BadResult", func(ctx context.Context, x int) (unencodable, error) {
		return unencodable{Fail: x == 1}, nil
	})
	echoArg = meadowrun.Register("hosttest.Echo", func(ctx context.Context, u unencodable) (int, error) {
		return 1, nil
	})
	echoBytes = meadowrun.Register("hosttest.EchoBytes", func(ctx context.Context, b []byte) ([]byte, error) {
		return b, nil
	})
	workerPID = meadowrun.Register("hosttest.PID", func(ctx context.Context, _ int) (int, error) {
		return os.Getpid(), nil
	})
	crashing = meadowrun.Register("hosttest.Crashing", func(ctx context.Context, a crashArg) (int, error) {
		n := countStart(a.Dir, a.ID)
		if a.ID == a.Culprit && (a.Always || n == 1) {
			fmt.Printf("task %d takes its worker down\n", a.ID)
			if a.Kill {
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
				time.Sleep(time.Minute)
			}
			os.Exit(3)
		}
		return a.ID, nil
	})
)

// funcs are the suite's functions as the tests call them: the Go
// functions registered above, or their Python counterparts of
// python/hosttest.py, called by the same names on Python workers.
type funcs struct {
	square, panics, failIf, sleep, sleepSaying, printer, exits, alloc, workerPID meadowrun.Func[int, int]
	fail                                                                         meadowrun.Func[string, int]
	flakyOnce, killSelfOnce                                                      meadowrun.Func[marked, int]
	badResult                                                                    meadowrun.Func[int, unencodable]
	echoArg                                                                      meadowrun.Func[unencodable, int]
	echoBytes                                                                    meadowrun.Func[[]byte, []byte]
	crashing                                                                     meadowrun.Func[crashArg, int]
}

// goFuncs are the registered Go functions.
func goFuncs() funcs {
	return funcs{
		square: square, panics: panics, failIf: failIf, sleep: sleep, sleepSaying: sleepSaying, printer: printer,
		exits: exits, alloc: alloc, workerPID: workerPID, fail: fail, flakyOnce: flakyOnce, killSelfOnce: killSelfOnce,
		badResult: badResult, echoArg: echoArg, echoBytes: echoBytes, crashing: crashing,
	}
}

// pythonFuncs name the same functions in the Python module hosttest.
func pythonFuncs() funcs {
	return funcs{
		square:       meadowrun.Named[int, int]("hosttest.Square"),
		panics:       meadowrun.Named[int, int]("hosttest.Panic"),
		failIf:       meadowrun.Named[int, int]("hosttest.FailIf"),
		sleep:        meadowrun.Named[int, int]("hosttest.Sleep"),
		sleepSaying:  meadowrun.Named[int, int]("hosttest.SleepSaying"),
		printer:      meadowrun.Named[int, int]("hosttest.Print"),
		exits:        meadowrun.Named[int, int]("hosttest.Exit"),
		alloc:        meadowrun.Named[int, int]("hosttest.Alloc"),
		workerPID:    meadowrun.Named[int, int]("hosttest.PID"),
		fail:         meadowrun.Named[string, int]("hosttest.Fail"),
		flakyOnce:    meadowrun.Named[marked, int]("hosttest.FlakyOnce"),
		killSelfOnce: meadowrun.Named[marked, int]("hosttest.KillSelfOnce"),
		badResult:    meadowrun.Named[int, unencodable]("hosttest.BadResult"),
		echoArg:      meadowrun.Named[unencodable, int]("hosttest.Echo"),
		echoBytes:    meadowrun.Named[[]byte, []byte]("hosttest.EchoBytes"),
		crashing:     meadowrun.Named[crashArg, int]("hosttest.Crashing"),
	}
}

// crashArg is an argument of the Crashing function: every start of task ID
// is counted in Dir, and task Culprit takes its worker down (os.Exit(3),
// or SIGKILL when Kill) on its first start, or on every start if Always.
type crashArg struct {
	Dir     string
	ID      int
	Culprit int
	Kill    bool
	Always  bool
}

// countStart records one more start of task id in dir and returns how many
// there have been.
func countStart(dir string, id int) int {
	for n := 1; ; n++ {
		f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("start-%d-%d", id, n)), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err == nil {
			f.Close()
			return n
		}
		if !errors.Is(err, os.ErrExist) {
			panic(err)
		}
	}
}

// startsOf returns how many times task id started, as counted by
// countStart.
func startsOf(dir string, id int) int {
	m, _ := filepath.Glob(filepath.Join(dir, fmt.Sprintf("start-%d-*", id)))
	return len(m)
}

type customError struct{ msg string }

func (e *customError) Error() string { return e.msg }

// marked is an argument whose first attempt is told apart from later ones
// by a marker file, since attempts may run in different processes.
type marked struct {
	Dir string
	ID  int
}

func firstTime(a marked) bool {
	f, err := os.OpenFile(filepath.Join(a.Dir, "marker-"+strconv.Itoa(a.ID)), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// unencodable fails to encode when Fail is set.
type unencodable struct{ Fail bool }

func (u unencodable) MarshalJSON() ([]byte, error) {
	if u.Fail {
		return nil, errors.New("this value refuses to be encoded")
	}
	return []byte(`{"Fail":false}`), nil
}
