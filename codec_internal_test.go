package meadowrun

import (
	"encoding/json"
	"math"
	"testing"
)

// The integer codecs skip reflection; they must write and read exactly
// what encoding/json does, and refuse what it refuses.
func TestNumericCodecsAgreeWithEncodingJSON(t *testing.T) {
	t.Run("int round trips encode as encoding/json does", func(t *testing.T) {
		c, err := codecFor[int]()
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range []int{0, 1, -1, 42, math.MaxInt, math.MinInt} {
			got, _ := c.enc(v)
			want, _ := json.Marshal(v)
			if string(got) != string(want) {
				t.Errorf("enc(%d) = %s, encoding/json writes %s", v, got, want)
			}
			back, err := c.dec(got)
			if err != nil || back != v {
				t.Errorf("dec(%s) = %d, %v; want %d", got, back, err, v)
			}
		}
	})
	t.Run("decoding agrees with encoding/json on odd inputs", func(t *testing.T) {
		ci, _ := codecFor[int32]()
		cu, _ := codecFor[uint64]()
		for _, in := range []string{"-0", "007", "+5", " 5", "5 ", "1e3", "2147483648", "-2147483649", "null", "", "-", "1.0", `"5"`, "18446744073709551616"} {
			var wantI int32
			errI := json.Unmarshal([]byte(in), &wantI)
			gotI, err := ci.dec([]byte(in))
			if (err == nil) != (errI == nil) || (err == nil && gotI != wantI) {
				t.Errorf("int32 dec(%q) = %d, %v; encoding/json: %d, %v", in, gotI, err, wantI, errI)
			}
			var wantU uint64
			errU := json.Unmarshal([]byte(in), &wantU)
			gotU, err := cu.dec([]byte(in))
			if (err == nil) != (errU == nil) || (err == nil && gotU != wantU) {
				t.Errorf("uint64 dec(%q) = %d, %v; encoding/json: %d, %v", in, gotU, err, wantU, errU)
			}
		}
	})
	t.Run("named integer types keep encoding/json", func(t *testing.T) {
		type level int
		c, _ := codecFor[level]()
		got, _ := c.enc(3)
		if string(got) != "3" {
			t.Errorf("enc(level 3) = %s", got)
		}
	})
}
