package calibrate_test

import (
	"bytes"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/lem-energy/lem/analyze/calibrate"
)

// Meter logs are what a user hands over: whatever the bytes, Parse returns readings in strictly increasing time
// with finite, non-negative power, or one line of error naming the file; it never panics.
func FuzzParseMeterLog(f *testing.F) {
	f.Add([]byte("timestamp,watts\n2026-12-02T10:00:00Z,123.5\n2026-12-02T10:00:01Z,456.25\n"), uint8(0))
	f.Add([]byte("t_ns;power_mw\n1796205600000000000;123500\n"), uint8(1))
	f.Add([]byte("Time,12-02-2026 11:00:00.000,Watts,123.5,Volts,230,Amps,0.6,PF,0.9,Mark,m\n"), uint8(2))
	f.Add([]byte("unix_ms\tw\n1796205600000\tnan\n"), uint8(0))
	f.Fuzz(func(t *testing.T, b []byte, which uint8) {
		format := []string{"auto", "csv", "ptd"}[int(which)%3]
		l, err := calibrate.Parse("fuzz.log", bytes.NewReader(b), format, time.UTC)
		if err != nil {
			if strings.Contains(err.Error(), "\n") || !strings.HasPrefix(err.Error(), "meter log fuzz.log") {
				t.Fatalf("error %q: not one line naming the file", err)
			}
			return
		}
		if len(l.Readings) == 0 {
			t.Fatal("no error and no readings")
		}
		for i, r := range l.Readings {
			if math.IsNaN(r.W) || math.IsInf(r.W, 0) || r.W < 0 {
				t.Fatalf("reading %d: %v W", i, r.W)
			}
			if i > 0 && !r.Time.After(l.Readings[i-1].Time) {
				t.Fatalf("reading %d at %s, not after %s", i, r.Time, l.Readings[i-1].Time)
			}
		}
	})
}

// Calibration files are a user's too: whatever the bytes, a file that parses has boards a correction can use
// (finite corrected energies and uncertainties), and an error is one line naming the file.
func FuzzParseCalibration(f *testing.F) {
	f.Add([]byte(`{"schema":"lem-calibration/1","boards":{"GPU-a":{"gain":1.02,"gain_se":0.001,"offset_w":-3,"offset_se_w":0.5,"cov_gain_offset_w":-0.0004}}}`))
	f.Add([]byte(`{"schema":"lem-calibration/1","boards":{}}`))
	f.Add([]byte(`{"schema":"lem-calibration/1","boards":{"GPU-a":{"gain":1e308}}}`))
	f.Add([]byte(`{"schema":"x"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := calibrate.ParseFile("fuzz.json", b)
		if err != nil {
			if strings.Contains(err.Error(), "\n") || !strings.HasPrefix(err.Error(), "calibration fuzz.json") {
				t.Fatalf("error %q: not one line naming the file", err)
			}
			return
		}
		for u, bd := range c.Boards {
			e, ue := bd.Correct(1000, 10)
			d, ud := bd.CorrectDifference(500)
			for _, v := range []float64{e, ue, d, ud} {
				if math.IsNaN(v) || math.IsInf(v, 0) {
					t.Fatalf("board %s: a correction gives %v", u, v)
				}
			}
		}
	})
}
