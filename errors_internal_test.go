package meadowrun

import (
	"reflect"
	"testing"

	"github.com/meadowrun-go/meadowrun/internal/coord"
)

// taskError must carry every field of the coordinator's Failure: a field
// added to one and not the other, or forgotten in the conversion, fails.
func TestATaskErrorCarriesEveryFieldOfTheFailure(t *testing.T) {
	var f coord.Failure
	fv := reflect.ValueOf(&f).Elem()
	for i := range fv.NumField() {
		switch fld := fv.Field(i); fld.Kind() {
		case reflect.String:
			fld.SetString(fv.Type().Field(i).Name)
		case reflect.Int, reflect.Int64:
			fld.SetInt(int64(i + 1))
		default:
			t.Fatalf("Failure.%s: no test value for a %s", fv.Type().Field(i).Name, fld.Kind())
		}
	}
	te := reflect.ValueOf(taskError(&f)).Elem()
	if te.NumField() != fv.NumField() {
		t.Errorf("TaskError has %d fields, Failure %d", te.NumField(), fv.NumField())
	}
	for i := range fv.NumField() {
		name := fv.Type().Field(i).Name
		got := te.FieldByName(name)
		if !got.IsValid() {
			t.Errorf("TaskError has no field %s", name)
			continue
		}
		want := fv.Field(i)
		if got.Kind() == reflect.String && got.String() != want.String() ||
			got.CanInt() && got.Int() != want.Int() {
			t.Errorf("TaskError.%s = %v, want %v", name, got, want)
		}
	}
}
