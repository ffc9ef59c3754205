package manifest

import (
	"math"
	"strconv"
)

// Num is a measured value; NaN means not measured and is written as JSON null, never as 0 (a reader must not
// mistake "no baseline" for "no energy above idle"). Sums propagate it: a total of parts one of which is missing is
// missing.
type Num float64

// Null is the unmeasured Num.
var Null = Num(math.NaN())

// Valid says whether n was measured.
func (n Num) Valid() bool { return !math.IsNaN(float64(n)) && !math.IsInf(float64(n), 0) }

// Or returns n, or d when n was not measured.
func (n Num) Or(d float64) float64 {
	if n.Valid() {
		return float64(n)
	}
	return d
}

// MarshalJSON writes null for an unmeasured value.
func (n Num) MarshalJSON() ([]byte, error) {
	if !n.Valid() {
		return []byte("null"), nil
	}
	return strconv.AppendFloat(nil, float64(n), 'g', -1, 64), nil
}

// UnmarshalJSON reads null as unmeasured.
func (n *Num) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*n = Null
		return nil
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return err
	}
	*n = Num(f)
	return nil
}
