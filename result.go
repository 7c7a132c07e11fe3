package meadowrun

import "time"

// TaskResult is the outcome of one task of a map, as RunMapAsCompleted
// yields it.
//
// The as-completed iterators (RunMapAsCompleted, RunMapSeq, the handles'
// AsCompleted) also yield one result that belongs to no task when the
// whole job fails or stops before every argument became a task: its
// TaskID is -1 and its Err the job's reason. JobError returns it, so a
// loop that checks only Result() does not mistake it for task 0's.
type TaskResult[R any] struct {
	// TaskID is the index of the task's argument, or -1 for the job's own
	// error (see JobError).
	TaskID int
	// Attempt is the 1-based number of times the task started, counting
	// the start that produced this outcome.
	Attempt int
	// Value is the result when Err is nil.
	Value R
	// Err is nil on success, otherwise a *TaskError (or, for a task that
	// never ran because the job ended, the reason).
	Err error
	// Worker and Machine say where the task ran.
	Worker, Machine string
	// LogFile is the job's log file, where the task's output is kept with
	// "[task N]" prefixes; "" if the job had printed nothing by the time
	// this result was delivered.
	LogFile string
	// Duration is how long the task ran in the worker.
	Duration time.Duration
	// PeakMemoryBytes is the worker's peak memory up to the end of the
	// task, 0 if unknown.
	PeakMemoryBytes int64
	// CostUSD is the task's share of the map's cost, in US dollars: the
	// time each of its attempts that ended with a result ran on its
	// worker, times that worker's price (driver.Priced; 0 on hosts that
	// price nothing). The map's Cost is more than the tasks' sum by its
	// overhead: workers starting (an instance's boot), idle or between
	// tasks, and attempts cut short by a lost worker.
	CostUSD float64
}

// JobError returns the error of a result that belongs to no task: the
// reason a map stopped before every argument became a task (cancellation,
// an error that affects every task, a lost job), delivered by the
// as-completed iterators as a last TaskResult with TaskID -1. It returns
// nil for a task's own result, successful or not.
func (t TaskResult[R]) JobError() error {
	if t.TaskID >= 0 {
		return nil
	}
	return t.Err
}

// IsSuccess reports whether the task succeeded.
func (t TaskResult[R]) IsSuccess() bool { return t.Err == nil }

// Result returns the value or the error: the Go form of result_or_raise.
func (t TaskResult[R]) Result() (R, error) { return t.Value, t.Err }

// JobCompletion describes a finished command or function job.
type JobCompletion struct {
	// JobID identifies the job.
	JobID string
	// ReturnCode is the command's exit code (0 for functions).
	ReturnCode int
	// Result is what the command wrote to the file named by the
	// MEADOWRUN_RESULT_FILE environment variable (nil if nothing); see
	// SetResult.
	Result []byte
	// LogFile holds the job's output; "" if it printed nothing.
	LogFile string
	// Machine and Worker say where the job ran.
	Machine, Worker string
	// Duration is how long the job ran in the worker.
	Duration time.Duration
	// PeakMemoryBytes is the worker's peak memory, 0 if unknown.
	PeakMemoryBytes int64
	// CostUSD is what the job's worker cost, in US dollars, while the
	// job held it: its machine's price times its share of the machine,
	// for that time (hosts that price nothing: 0). See Job.Cost.
	CostUSD float64 `json:",omitempty"`
}
