package meadowrun

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"unsafe"
)

// Codecs name how a value crosses the process boundary. They are part of
// the protocol: a worker announces the codec of each function's argument
// and result, and the coordinator refuses a worker that disagrees.
const (
	codecJSON   = "json"   // encoding/json: any JSON-encodable type, language-neutral
	codecBytes  = "bytes"  // []byte, sent as is, without a copy
	codecString = "string" // string, sent as its bytes
)

// codec encodes and decodes values of one type.
type codec[T any] struct {
	name string
	enc  func(T) ([]byte, error)
	dec  func([]byte) (T, error)
	// app, when set, appends the encoding of a value to a buffer, so that
	// the arguments of a map share allocations.
	app func([]byte, T) []byte
}

// codecFor picks the codec of T and checks that T can be encoded at all,
// so that a bad type is reported when the function is registered rather
// than when a task runs.
func codecFor[T any]() (codec[T], error) {
	var zero T
	switch any(zero).(type) {
	case []byte:
		return codec[T]{
			name: codecBytes,
			enc:  func(v T) ([]byte, error) { return any(v).([]byte), nil },
			dec:  func(b []byte) (T, error) { return any(b).(T), nil },
		}, nil
	case string:
		return codec[T]{
			name: codecString,
			enc:  func(v T) ([]byte, error) { return []byte(any(v).(string)), nil },
			dec:  func(b []byte) (T, error) { return any(string(b)).(T), nil },
		}, nil
	}
	if c, ok := numericCodec[T](); ok {
		return c, nil
	}
	t := reflect.TypeFor[T]()
	if err := jsonEncodable(t, map[reflect.Type]bool{}); err != nil {
		return codec[T]{}, fmt.Errorf("type %s cannot be sent between processes: %w", t, err)
	}
	return codec[T]{
		name: codecJSON,
		enc:  func(v T) ([]byte, error) { return json.Marshal(v) },
		dec: func(b []byte) (T, error) {
			var v T
			err := json.Unmarshal(b, &v)
			return v, err
		},
	}, nil
}

// jsonEncodable rejects types encoding/json can never encode.
func jsonEncodable(t reflect.Type, seen map[reflect.Type]bool) error {
	if seen[t] {
		return nil
	}
	seen[t] = true
	if t.Implements(reflect.TypeFor[json.Marshaler]()) {
		return nil
	}
	switch t.Kind() {
	case reflect.Chan, reflect.Func, reflect.UnsafePointer, reflect.Complex64, reflect.Complex128:
		return fmt.Errorf("%s values have no JSON encoding", t.Kind())
	case reflect.Pointer, reflect.Slice, reflect.Array:
		return jsonEncodable(t.Elem(), seen)
	case reflect.Map:
		switch t.Key().Kind() {
		case reflect.String, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		default:
			if !t.Key().Implements(reflect.TypeFor[interface{ MarshalText() ([]byte, error) }]()) {
				return fmt.Errorf("map keys of type %s have no JSON encoding", t.Key())
			}
		}
		return jsonEncodable(t.Elem(), seen)
	case reflect.Struct:
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() || f.Tag.Get("json") == "-" {
				continue
			}
			if err := jsonEncodable(f.Type, seen); err != nil {
				return fmt.Errorf("field %s: %w", f.Name, err)
			}
		}
	}
	return nil
}

// numericCodec is the JSON codec of the built-in integer types without
// reflection: strconv writes exactly what encoding/json writes for them,
// and what strconv cannot read as a plain JSON integer goes to
// encoding/json, so errors read as before.
func numericCodec[T any]() (codec[T], bool) {
	var c any
	switch any(*new(T)).(type) {
	case int:
		c = signedCodec[int](strconv.IntSize)
	case int64:
		c = signedCodec[int64](64)
	case int32:
		c = signedCodec[int32](32)
	case uint:
		c = unsignedCodec[uint](strconv.IntSize)
	case uint64:
		c = unsignedCodec[uint64](64)
	case uint32:
		c = unsignedCodec[uint32](32)
	default:
		return codec[T]{}, false
	}
	return c.(codec[T]), true
}

func signedCodec[T ~int | ~int32 | ~int64](bits int) codec[T] {
	return integerCodec(true,
		func(b []byte, v T) []byte { return strconv.AppendInt(b, int64(v), 10) },
		func(s string) (T, error) { n, err := strconv.ParseInt(s, 10, bits); return T(n), err })
}

func unsignedCodec[T ~uint | ~uint32 | ~uint64](bits int) codec[T] {
	return integerCodec(false,
		func(b []byte, v T) []byte { return strconv.AppendUint(b, uint64(v), 10) },
		func(s string) (T, error) { n, err := strconv.ParseUint(s, 10, bits); return T(n), err })
}

// integerCodec writes with format and reads plain integers with parse,
// anything else with encoding/json.
func integerCodec[T any](signed bool, format func([]byte, T) []byte, parse func(string) (T, error)) codec[T] {
	return codec[T]{
		name: codecJSON,
		enc:  func(v T) ([]byte, error) { return format(make([]byte, 0, 8), v), nil },
		app:  format,
		dec: func(b []byte) (T, error) {
			if plainInteger(b, signed) {
				// strconv keeps no reference to its input (its errors
				// copy it), so b is read in place instead of copied.
				if v, err := parse(unsafe.String(unsafe.SliceData(b), len(b))); err == nil {
					return v, nil
				}
			}
			var v T
			err := json.Unmarshal(b, &v)
			return v, err
		},
	}
}

// plainInteger reports whether b is a JSON integer as encoding/json
// writes it: an optional minus sign (when signed), then digits without a
// leading zero.
func plainInteger(b []byte, signed bool) bool {
	if signed && len(b) > 1 && b[0] == '-' {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 20 || (b[0] == '0' && len(b) > 1) {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
