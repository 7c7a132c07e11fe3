package meadowrun

import (
	"context"
	"fmt"
	"reflect"
	"runtime/debug"

	"github.com/meadowrun-go/meadowrun/internal/registry"
	"github.com/meadowrun-go/meadowrun/internal/wire"
)

// Func is a function that can run as a task: a stable name plus the types
// of its argument and result. Register makes one from a Go function;
// Named refers to one by name only.
//
// The name, not the Go identifier, is what crosses the process boundary,
// so it must be the same in the caller and in the worker and must not
// change when code is renamed. Use a dotted, package-qualified name such as
// "imaging.Resize".
type Func[A, R any] struct {
	name     string
	argCodec codec[A]
	resCodec codec[R]
	desc     wire.Function
	err      error // set when A or R cannot be encoded
}

// Name returns the registered name.
func (f Func[A, R]) Name() string { return f.name }

// With binds an argument, giving the call that RunFunction runs.
func (f Func[A, R]) With(arg A) Call[R] {
	return Call[R]{fn: f.name, desc: f.desc, dec: f.resCodec.dec, err: f.err, encode: func() ([]byte, error) {
		if f.err != nil {
			return nil, f.err
		}
		return f.argCodec.enc(arg)
	}}
}

// Call is a function bound to its argument, ready for RunFunction.
type Call[R any] struct {
	fn     string
	desc   wire.Function
	encode func() ([]byte, error)
	dec    func([]byte) (R, error)
	err    error
}

// Register registers fn under name in the process's registry and returns
// the Func to run it. Call it from a package-level variable declaration, so
// that the worker process (the same binary) registers the same functions
// before meadowrun.Main runs. It panics when the name is taken or when A or
// R cannot be sent between processes: both are programming errors found at
// start-up. TryRegister is the variant that returns the error.
func Register[A, R any](name string, fn func(context.Context, A) (R, error)) Func[A, R] {
	f, err := TryRegister(name, fn)
	if err != nil {
		panic(err)
	}
	return f
}

// TryRegister is Register returning an error instead of panicking.
func TryRegister[A, R any](name string, fn func(context.Context, A) (R, error)) (Func[A, R], error) {
	if fn == nil {
		return Func[A, R]{}, fmt.Errorf("meadowrun: registering %q: nil function", name)
	}
	f, err := newFunc[A, R](name)
	if err != nil {
		return f, err
	}
	if f.err != nil {
		return f, fmt.Errorf("meadowrun: registering %q: %w", name, f.err)
	}
	e := &registry.Entry{Function: f.desc, Call: erase(f, fn)}
	if err := registry.Default.Add(e); err != nil {
		return f, err
	}
	return f, nil
}

// Named refers to a function registered under name in the worker without
// registering an implementation here: the caller only needs to know its
// name and types. The worker's registry is checked against them when it
// connects.
//
// With a PreinstalledInterpreter deployment, name is a Python function,
// "package.module.function", which the Python worker imports: its JSON
// argument is the function's single positional argument and its result is
// decoded from JSON, so A and R must use the JSON codec (not string or
// []byte). A Python exception is a *TaskError whose Type, Message and
// Stack are the exception's qualified type, str(e) and traceback.
func Named[A, R any](name string) Func[A, R] {
	f, err := newFunc[A, R](name)
	if err != nil && f.err == nil {
		f.err = err
	}
	return f
}

func newFunc[A, R any](name string) (Func[A, R], error) {
	if name == "" {
		return Func[A, R]{}, fmt.Errorf("meadowrun: a function needs a non-empty name")
	}
	f := Func[A, R]{name: name}
	var errA, errR error
	f.argCodec, errA = codecFor[A]()
	f.resCodec, errR = codecFor[R]()
	switch {
	case errA != nil:
		f.err = fmt.Errorf("argument: %w", errA)
	case errR != nil:
		f.err = fmt.Errorf("result: %w", errR)
	}
	f.desc = wire.Function{Name: name, Arg: qualifiedName(reflect.TypeFor[A]()), Result: qualifiedName(reflect.TypeFor[R]()),
		Codec: f.argCodec.name + "/" + f.resCodec.name}
	return f, nil
}

// qualifiedName names a type with its full package path, so that two
// packages' "Point" types are told apart.
func qualifiedName(t reflect.Type) string {
	if t.Name() != "" && t.PkgPath() != "" {
		return t.PkgPath() + "." + t.Name()
	}
	return t.String()
}

// erase turns a typed function into a registry call on encoded bytes.
func erase[A, R any](f Func[A, R], fn func(context.Context, A) (R, error)) registry.Call {
	return func(ctx context.Context, in []byte) (out []byte, st wire.Status, fail *wire.Failure) {
		arg, err := f.argCodec.dec(in)
		if err != nil {
			return nil, wire.StatusBadInput, &wire.Failure{Type: fmt.Sprintf("%T", err),
				Message: fmt.Sprintf("decoding the argument of %s as %s: %v", f.name, f.desc.Arg, err)}
		}
		defer func() {
			if p := recover(); p != nil {
				out, st = nil, wire.StatusPanic
				fail = &wire.Failure{Type: "panic", Message: fmt.Sprint(p), Stack: string(debug.Stack())}
			}
		}()
		res, err := fn(ctx, arg)
		if err != nil {
			return nil, wire.StatusError, failureOf(err)
		}
		out, err = f.resCodec.enc(res)
		if err != nil {
			return nil, wire.StatusBadOutput, &wire.Failure{Type: fmt.Sprintf("%T", err),
				Message: fmt.Sprintf("encoding the result of %s as %s: %v", f.name, f.desc.Result, err)}
		}
		return out, wire.StatusOK, nil
	}
}

// failureOf describes an error returned by user code.
func failureOf(err error) *wire.Failure {
	f := &wire.Failure{Type: fmt.Sprintf("%T", err), Message: err.Error()}
	// Errors that carry a stack (e.g. from pkg/errors) print it with %+v.
	if s := fmt.Sprintf("%+v", err); s != f.Message {
		f.Stack = s
	}
	return f
}
