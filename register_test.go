package meadowrun_test

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/inprocess"
)

func TestRegistering(t *testing.T) {
	id := func(ctx context.Context, x int) (int, error) { return x, nil }
	t.Run("a duplicate name is an error, and Register panics on it", func(t *testing.T) {
		if _, err := meadowrun.TryRegister("register.Dup", id); err != nil {
			t.Fatal(err)
		}
		if _, err := meadowrun.TryRegister("register.Dup", id); err == nil || !strings.Contains(err.Error(), "already registered") {
			t.Fatalf("second TryRegister error = %v", err)
		}
		defer func() {
			if recover() == nil {
				t.Fatal("Register of a taken name did not panic")
			}
		}()
		meadowrun.Register("register.Dup", id)
	})
	t.Run("an empty name or a nil function is refused", func(t *testing.T) {
		if _, err := meadowrun.TryRegister("", id); err == nil {
			t.Fatal("empty name accepted")
		}
		if _, err := meadowrun.TryRegister[int, int]("register.Nil", nil); err == nil {
			t.Fatal("nil function accepted")
		}
	})
	t.Run("types that cannot cross processes are refused at registration", func(t *testing.T) {
		type withFunc struct{ F func() }
		if _, err := meadowrun.TryRegister("register.Func", func(ctx context.Context, x withFunc) (int, error) { return 0, nil }); err == nil || !strings.Contains(err.Error(), "field F") {
			t.Fatalf("error = %v, want a refusal naming field F", err)
		}
		if _, err := meadowrun.TryRegister("register.Complex", func(ctx context.Context, x int) (complex128, error) { return 0, nil }); err == nil || !strings.Contains(err.Error(), "result") {
			t.Fatalf("error = %v, want a refusal of the result type", err)
		}
	})
	t.Run("a call of a function that cannot be encoded fails before running", func(t *testing.T) {
		f := meadowrun.Named[chan int, int]("register.Chan")
		_, err := meadowrun.RunFunction(context.Background(), f.With(nil), inprocess.NewHost(1), nil)
		if err == nil || !strings.Contains(err.Error(), "chan") {
			t.Fatalf("error = %v", err)
		}
	})
}

func TestResourcesValidate(t *testing.T) {
	cases := []struct {
		name string
		r    meadowrun.Resources
		bad  string // substring of the error; "" means valid
	}{
		{"the zero value is valid", meadowrun.Resources{}, ""},
		{"a full request is valid", meadowrun.Resources{LogicalCPU: 2, MemoryGB: 4, MaxEvictionRate: 50, GPUs: 1, GPUMemoryGB: 16, Flags: []string{"avx2"}, EphemeralStorageGB: 10}, ""},
		{"a fraction of one GPU is valid", meadowrun.Resources{GPUs: 0.5}, ""},
		{"negative CPUs are refused", meadowrun.Resources{LogicalCPU: -1}, "LogicalCPU is -1"},
		{"NaN memory is refused", meadowrun.Resources{MemoryGB: math.NaN()}, "MemoryGB is NaN"},
		{"infinite storage is refused", meadowrun.Resources{EphemeralStorageGB: math.Inf(1)}, "infinite"},
		{"an eviction rate over 100 is refused", meadowrun.Resources{MaxEvictionRate: 150}, "at most 100"},
		{"1.5 GPUs are refused", meadowrun.Resources{GPUs: 1.5}, "whole number"},
		{"an empty flag is refused", meadowrun.Resources{Flags: []string{" "}}, "empty flag"},
		{"less than a megabyte of memory is refused", meadowrun.Resources{MemoryGB: 1e-9}, "less than 1 MiB"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.r.Validate()
			if c.bad == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, meadowrun.ErrInvalidResources) || !strings.Contains(err.Error(), c.bad) {
				t.Fatalf("Validate() = %v, want ErrInvalidResources mentioning %q", err, c.bad)
			}
		})
	}
}

func TestMapOptionsAreValidated(t *testing.T) {
	h := inprocess.NewHost(1)
	defer h.Close()
	for _, o := range []meadowrun.MapOptions{{Concurrency: -1}, {MaxAttempts: -2}} {
		if _, err := meadowrun.RunMap(context.Background(), typed, []int{1}, h, &o); err == nil {
			t.Fatalf("options %+v accepted", o)
		}
	}
}

func TestErrorKindsSayWhetherRetryingHelps(t *testing.T) {
	for k, want := range map[meadowrun.ErrorKind]bool{
		meadowrun.KindError: true, meadowrun.KindPanic: true, meadowrun.KindExit: true, meadowrun.KindCrash: true,
		meadowrun.KindOOM: true, meadowrun.KindLost: true, meadowrun.KindEncoding: false,
		meadowrun.KindUnknownFunction: false, meadowrun.KindCanceled: false,
	} {
		if k.Retryable() != want {
			t.Errorf("%s.Retryable() = %v, want %v", k, !want, want)
		}
	}
}
