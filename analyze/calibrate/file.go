package calibrate

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/lem-energy/lem/internal/fileutil"
)

// Schema names the calibration file's layout (docs/METHODOLOGY.md, "Calibration").
const Schema = "lem-calibration/1"

// File is a calibration file: one fit per board, keyed by GPU UUID.
type File struct {
	Schema string           `json:"schema"`
	Boards map[string]Board `json:"boards"`
}

// Board is one board's calibration: P_meter = Gain·P_lem + OffsetW, with the fit's standard errors and what it
// was fitted on.
type Board struct {
	Name      string  `json:"name,omitempty"`
	Gain      float64 `json:"gain"`
	GainSE    float64 `json:"gain_se"`
	OffsetW   float64 `json:"offset_w"`
	OffsetSEW float64 `json:"offset_se_w"`
	CovW      float64 `json:"cov_gain_offset_w"`
	Points    int     `json:"points"`
	IntervalS float64 `json:"meter_interval_s"`
	MinW      float64 `json:"min_w"`
	MaxW      float64 `json:"max_w"`
	ClockS    float64 `json:"clock_offset_s"`
	ResidualW float64 `json:"residual_sd_w"`
	Lag1      float64 `json:"residual_lag1"`
	// MeterU is the meter's own relative standard uncertainty (its specified accuracy bound over √3), added to
	// every corrected energy's: the fit transfers the meter's scale, errors included.
	MeterU   float64   `json:"meter_u"`
	Meter    string    `json:"meter"`
	Format   string    `json:"format"`
	Trace    string    `json:"trace"`
	FittedAt time.Time `json:"fitted_at"`
}

// BoardOf is a fit as a board's calibration.
func BoardOf(r Result) Board {
	return Board{Gain: r.Gain, GainSE: r.GainSE, OffsetW: r.OffsetW, OffsetSEW: r.OffsetSE, CovW: r.CovW, Points: r.Points,
		IntervalS: r.Interval.Seconds(), MinW: r.MinW, MaxW: r.MaxW, ClockS: r.ClockOffset.Seconds(), ResidualW: r.ResidualSDW,
		Lag1: r.Lag1}
}

// Correct is an energy of e joules over durS seconds on the meter's scale, and the standard uncertainty the fit
// gives it: u² = (e·u_gain)² + (durS·u_offset)² + 2·e·durS·cov.
func (b Board) Correct(e, durS float64) (float64, float64) {
	c := b.Gain*e + b.OffsetW*durS
	u2 := e*e*b.GainSE*b.GainSE + durS*durS*b.OffsetSEW*b.OffsetSEW + 2*e*durS*b.CovW + c*c*b.MeterU*b.MeterU
	return c, math.Sqrt(max(u2, 0))
}

// CorrectDifference is a difference of two energies over the same time (an energy minus idle power × duration,
// both read by this board's sensor) on the meter's scale: the offset cancels, the gain scales it.
func (b Board) CorrectDifference(e float64) (float64, float64) {
	c := b.Gain * e
	return c, math.Hypot(e*b.GainSE, c*b.MeterU)
}

// maxFileSize bounds a calibration file.
const maxFileSize = 4 << 20

// ReadFile reads and checks a calibration file.
func ReadFile(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("calibration: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("calibration %s: %w", path, err)
	}
	if len(b) > maxFileSize {
		return nil, fmt.Errorf("calibration %s: larger than %d bytes", path, maxFileSize)
	}
	return ParseFile(path, b)
}

// ParseFile decodes a calibration file and checks what correcting with it relies on: the schema, a UUID per
// board, a gain near 1 (0.5–2: a sensor further off is not a board sensor), finite offsets, standard errors not
// negative, a covariance the errors allow. name is the file, for errors.
func ParseFile(name string, b []byte) (*File, error) {
	var f File
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("calibration %s: %w", name, err)
	}
	if f.Schema != Schema {
		return nil, fmt.Errorf("calibration %s: schema %q, want %q", name, f.Schema, Schema)
	}
	uuids := make([]string, 0, len(f.Boards))
	for u := range f.Boards {
		uuids = append(uuids, u)
	}
	sort.Strings(uuids)
	for _, u := range uuids {
		c := f.Boards[u]
		finite := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
		switch {
		case strings.TrimSpace(u) == "":
			return nil, fmt.Errorf("calibration %s: a board without a GPU UUID", name)
		case !finite(c.Gain) || c.Gain < 0.5 || c.Gain > 2:
			return nil, fmt.Errorf("calibration %s: board %s: gain %g outside 0.5–2", name, u, c.Gain)
		case !finite(c.OffsetW) || math.Abs(c.OffsetW) > 1e4:
			return nil, fmt.Errorf("calibration %s: board %s: offset %g W is not a board's", name, u, c.OffsetW)
		case !finite(c.GainSE) || c.GainSE < 0 || c.GainSE > 1 || !finite(c.OffsetSEW) || c.OffsetSEW < 0 || c.OffsetSEW > 1e4:
			return nil, fmt.Errorf("calibration %s: board %s: standard errors must be finite, not negative, at most 1 (gain) "+
				"and 10 kW (offset)", name, u)
		case !finite(c.MeterU) || c.MeterU < 0 || c.MeterU > 0.5:
			return nil, fmt.Errorf("calibration %s: board %s: meter_u %g outside 0–0.5", name, u, c.MeterU)
		case !finite(c.CovW) || math.Abs(c.CovW) > c.GainSE*c.OffsetSEW*(1+1e-9):
			return nil, fmt.Errorf("calibration %s: board %s: covariance %g exceeds what the standard errors allow", name, u, c.CovW)
		}
	}
	if f.Boards == nil {
		f.Boards = map[string]Board{}
	}
	return &f, nil
}

// Write stores the file atomically.
func (f *File) Write(path string) error {
	f.Schema = Schema
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("calibration: %w", err)
	}
	if err := fileutil.WriteAtomic(path, append(b, '\n')); err != nil {
		return fmt.Errorf("calibration %s: %w", path, err)
	}
	return nil
}
