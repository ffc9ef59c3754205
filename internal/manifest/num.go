package manifest

import (
	"encoding/json"
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

// Fields added within schema version 2 read as null, never 0, from manifests written before them: each type
// that gained one starts from its unmeasured value before decoding.

// UnmarshalJSON reads an Energy; adjusted_active_j, when absent, is null.
func (e *Energy) UnmarshalJSON(b []byte) error {
	type plain Energy
	p := plain(Unmeasured())
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*e = Energy(p)
	return nil
}

// UnmarshalJSON reads a GPU; idle_w, when absent, is null.
func (g *GPU) UnmarshalJSON(b []byte) error {
	type plain GPU
	p := plain{IdleW: Null, Energy: Unmeasured(), MeanPowerW: Null, PeakPowerW: Null}
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*g = GPU(p)
	return nil
}

// UnmarshalJSON reads a phase's GPU; adjusted_active_j, sm_clock_hz and pstate, when absent, are null.
func (g *PhaseGPU) UnmarshalJSON(b []byte) error {
	type plain PhaseGPU
	p := plain{HybridJ: Null, AdjustedJ: Null, AdjustedActiveJ: Null, SMClockHz: Null, PState: Null}
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*g = PhaseGPU(p)
	return nil
}

// UnmarshalJSON reads a counter lag; u_ms, when absent, is null.
func (l *Lag) UnmarshalJSON(b []byte) error {
	type plain Lag
	p := plain{UMS: Null}
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*l = Lag(p)
	return nil
}
