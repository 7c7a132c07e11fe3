package meadowrun

import "time"

// TaskResult is the outcome of one task of a map, as RunMapAsCompleted
// yields it.
type TaskResult[R any] struct {
	// TaskID is the index of the task's argument.
	TaskID int
	// Attempt is the 1-based attempt that produced this outcome.
	Attempt int
	// Value is the result when Err is nil.
	Value R
	// Err is nil on success, otherwise a *TaskError (or, for a task that
	// never ran because the job ended, the reason).
	Err error
	// Worker and Machine say where the task ran.
	Worker, Machine string
	// LogFile is the job's log file, where the task's output is kept with
	// "[task N]" prefixes.
	LogFile string
	// Duration is how long the task ran in the worker.
	Duration time.Duration
	// PeakMemoryBytes is the worker's peak memory up to the end of the
	// task, 0 if unknown.
	PeakMemoryBytes int64
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
	// LogFile holds the job's output.
	LogFile string
	// Machine and Worker say where the job ran.
	Machine, Worker string
	// Duration is how long the job ran in the worker.
	Duration time.Duration
	// PeakMemoryBytes is the worker's peak memory, 0 if unknown.
	PeakMemoryBytes int64
}
