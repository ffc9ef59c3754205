package calibrate_test

import (
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/analyze/account"
	"github.com/lem-energy/lem/analyze/calibrate"
	"github.com/lem-energy/lem/internal/testutil"
)

var t0 = time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)

// Meter logs in every accepted layout give the same readings: names and units from the header, times as RFC 3339
// (with or without an offset), Unix seconds or nanoseconds, comma, semicolon or tab, comments and blank lines; a
// PTDaemon log in the analyzer host's zone; readings the meter gave as NaN are counted, not kept.
func TestParseMeterLogs(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	require.NoError(t, err)
	want := []calibrate.Reading{{Time: t0, W: 123.5}, {Time: t0.Add(time.Second), W: 456.25}}
	cases := []struct {
		name, format, text string
		loc                *time.Location
		skipped            int
	}{
		{"rfc3339", "auto", "timestamp,watts\n2026-12-02T10:00:00Z,123.5\n2026-12-02T10:00:01Z,456.25\n", nil, 0},
		{"zone from the flag", "csv", "Time,Power (W)\n2026-12-02 11:00:00,123.5\n2026-12-02 11:00:01.000,456.25\n", berlin, 0},
		{"unix seconds", "", "# meter X\n\nt,w\n1796205600,123.5\n1796205601.0,456.25\n", nil, 0},
		{"unix ns, milliwatts", "", "t_ns;power_mw;volts\n1796205600000000000;123500;230\n1796205601000000000;456250;231\n", nil, 0},
		{"tab, extra columns, a NaN", "", "volts\tunix_ms\tpower_watts\n230\t1796205600000\t123.5\n230\t1796205600500\tnan\n231\t1796205601000\t456.25\n", nil, 1},
		{"quoted, CRLF, BOM", "", "\ufeff\"timestamp\",\"W\"\r\n\"2026-12-02T10:00:00Z\",\"123.5\"\r\n\"2026-12-02T10:00:01Z\",\"456.25\"\r\n", nil, 0},
		{"ptd", "auto", "Time,12-02-2026 11:00:00.000,Watts,123.500000,Volts,230.1,Amps,0.6,PF,0.9,Mark,cal\n" +
			"12-02-2026 11:00:00.500: some PTDaemon message\n" +
			"Time,12-02-2026 11:00:01.000,Watts,456.250000,Volts,230.0,Amps,2.0,PF,0.99,Mark,cal\n", berlin, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l, err := calibrate.Parse("m.log", strings.NewReader(c.text), c.format, c.loc)
			require.NoError(t, err)
			require.Len(t, l.Readings, 2)
			for i, r := range l.Readings {
				assert.True(t, r.Time.Equal(want[i].Time), "%s vs %s", r.Time, want[i].Time)
				assert.InDelta(t, want[i].W, r.W, 1e-9)
			}
			assert.Equal(t, c.skipped, l.Skipped)
			if c.name == "ptd" {
				assert.Equal(t, calibrate.FormatPTD, l.Format)
			} else {
				assert.Equal(t, calibrate.FormatCSV, l.Format)
			}
		})
	}
}

// Bad meter logs get one line naming the file, the line and what is wrong.
func TestParseMeterLogErrors(t *testing.T) {
	cases := []struct{ text, want string }{
		{"", "meter log m.csv: empty"},
		{"when,how\n1,2\n", `header "when,how" lacks a time or a power column (accepted: (case-insensitive`},
		{"time,unix_s,watts\n1,1,1\n", `two time columns, "time" and "unix_s"`},
		{"time,watts,mw\n1,1,1\n", `two power columns, "watts" and "mw"`},
		{"time,watts\n1796205600,5\n1796205599,6\n", "line 3: time 2026-12-02T09:59:59Z is not after the previous reading's"},
		{"time,watts\n1796205600,-5\n", `line 2: watts "-5": not a power reading (negative or infinite)`},
		{"time,watts\n1796205600,lots\n", `line 2: watts "lots": not a number`},
		{"time,watts\nyesterday,5\n", `line 2: time "yesterday": want RFC 3339 or Unix seconds`},
		{"unix_ns,watts\n99999999999999999999,5\n", `line 2: unix_ns "99999999999999999999": not a Unix time`},
		{"time,watts\n1796205600\n", "line 2: 1 fields, the header has 2"},
		{"time,watts\n# only a comment\n", "meter log m.csv: no readings"},
		{"time,watts\n1796205600," + strings.Repeat("9", 70000) + "\n", "longer than 65536 bytes"},
		{"Time,12-02-2026 11:00:00.000,Volts,230\n", "line 1: no Watts field"},
		{"Time,12-02-2026 11:00:00.000,Watts,1,Watts,2\n", "2 Watts fields: multi-channel PTDaemon logs are not supported"},
		{"Time,2026-12-02 11:00:00,Watts,1\n", `line 1: time "2026-12-02 11:00:00": want MM-DD-YYYY HH:MM:SS.fff`},
	}
	for _, c := range cases {
		_, err := calibrate.Parse("m.csv", strings.NewReader(c.text), "auto", nil)
		require.Error(t, err, c.text)
		assert.Contains(t, err.Error(), c.want)
		assert.True(t, strings.HasPrefix(err.Error(), "meter log m.csv"), err.Error())
		assert.NotContains(t, err.Error(), "\n")
	}
	_, err := calibrate.Parse("m.csv", strings.NewReader("t,w\n1,1\n"), "xml", nil)
	assert.EqualError(t, err, `meter log m.csv: format "xml", want csv, ptd or auto`)
}

// loadSteps is a synthetic board stepping between idle and full load every few seconds for five minutes.
func loadSteps() testutil.Synth {
	s := testutil.Synth{Start: t0, Duration: 5 * time.Minute, Lag: 60 * time.Millisecond}
	r := rand.New(rand.NewPCG(7, 7))
	for at := time.Duration(0); at < s.Duration; at += time.Duration(2000+r.IntN(6000)) * time.Millisecond {
		s.Levels = append(s.Levels, testutil.Level{At: at, W: 80 + 620*r.Float64()})
	}
	return s
}

// truePower is the board's true mean power over each second of its span, from the exact curve.
func truePower(s testutil.Synth) []float64 {
	var out []float64
	for i := 1; time.Duration(i)*time.Second < s.Duration; i++ {
		b := s.Start.Add(time.Duration(i) * time.Second)
		out = append(out, s.Energy(b.Add(-time.Second), b)/time.Second.Seconds())
	}
	return out
}

// meterLog is what a meter on that board logs: every second of its own clock (clock = lem's + offset, each
// reading stamped 0–15 ms late), the mean of gain·P + offset over the second before, plus noise of sd W.
func meterLog(s testutil.Synth, p []float64, gain, offsetW, sd float64, clock time.Duration, r *rand.Rand) []calibrate.Reading {
	out := make([]calibrate.Reading, len(p))
	for i := range p {
		b := s.Start.Add(time.Duration(i+1) * time.Second) // lem time of the reading's end
		stamp := b.Add(clock).Add(time.Duration(r.IntN(15)) * time.Millisecond)
		out[i] = calibrate.Reading{Time: stamp, W: gain*p[i] + offsetW + sd*r.NormFloat64()}
	}
	return out
}

// The fit recovers a known gain, offset and clock offset from a noisy meter: over 200 seeded logs (gain 0.95–1.05,
// offset −10–10 W, clock offset −5–5 s, 3 W noise) the 95 % intervals (Student's t, n − 2) hold the true gain and
// offset in at least 90 % of the trials, and the clock offset is found within 20 ms every time.
func TestFitCoverage(t *testing.T) {
	s := loadSteps()
	p := truePower(s)
	ser := s.Series()
	lem := calibrate.Prepare(account.NewMeter(ser), ser.Samples[0].Time.Time(), ser.Samples[len(ser.Samples)-1].Time.Time())
	trials := 200
	if raceEnabled {
		trials = 30
	}
	inGain, inOffset := 0, 0
	var worstClock time.Duration
	var seGain float64
	for seed := range uint64(trials) {
		r := rand.New(rand.NewPCG(seed, 99))
		gain, off := 0.95+0.1*r.Float64(), -10+20*r.Float64()
		clock := time.Duration(-5000+r.IntN(10000)) * time.Millisecond
		res, err := lem.Fit(meterLog(s, p, gain, off, 3, clock, r), calibrate.Options{})
		require.NoError(t, err, "seed %d", seed)
		q := res.Quantile97()
		if math.Abs(res.Gain-gain) <= q*res.GainSE {
			inGain++
		}
		if math.Abs(res.OffsetW-off) <= q*res.OffsetSE {
			inOffset++
		}
		// The readings are stamped 0–15 ms late: the offset found is the clock's plus their mean lateness.
		worstClock = max(worstClock, (res.ClockOffset - clock - 7*time.Millisecond).Abs())
		seGain += res.GainSE / float64(trials)
	}
	t.Logf("coverage over %d trials: gain %d, offset %d; mean u(gain) %.5f; worst clock offset error %s",
		trials, inGain, inOffset, seGain, worstClock)
	assert.GreaterOrEqual(t, inGain, trials*9/10)
	assert.GreaterOrEqual(t, inOffset, trials*9/10)
	if !raceEnabled {
		assert.LessOrEqual(t, inGain, 199, "intervals not absurdly wide")
	}
	assert.Less(t, worstClock, 20*time.Millisecond)
	assert.Less(t, seGain, 0.002, "300 readings over 80–700 W pin the gain to a fraction of a percent")
}

// A meter whose noise is correlated from reading to reading (AR(1), ρ = 0.7: a slow drift of its own) gives
// residuals that are worth fewer independent readings than they number: the standard errors widened by
// √((1+ρ)/(1−ρ)) still hold the true gain and offset in at least 85 % of 100 trials (left at the plain least-squares
// errors they would cover about half).
func TestFitCoverageCorrelatedNoise(t *testing.T) {
	s := loadSteps()
	p := truePower(s)
	ser := s.Series()
	lem := calibrate.Prepare(account.NewMeter(ser), ser.Samples[0].Time.Time(), ser.Samples[len(ser.Samples)-1].Time.Time())
	trials := 100
	if raceEnabled {
		trials = 20
	}
	in := 0
	for seed := range uint64(trials) {
		r := rand.New(rand.NewPCG(seed, 31))
		gain, off := 0.95+0.1*r.Float64(), -10+20*r.Float64()
		log := meterLog(s, p, gain, off, 0, 0, r)
		e := 0.0
		for i := range log {
			e = 0.7*e + 3*math.Sqrt(1-0.49)*r.NormFloat64()
			log[i].W += e
		}
		res, err := lem.Fit(log, calibrate.Options{})
		require.NoError(t, err)
		q := res.Quantile97()
		if math.Abs(res.Gain-gain) <= q*res.GainSE && math.Abs(res.OffsetW-off) <= q*res.OffsetSE {
			in++
		}
	}
	t.Logf("gain and offset both covered in %d of %d trials", in, trials)
	assert.GreaterOrEqual(t, in, trials*85/100)
}

// What the fit cannot do it says: flat power, too few readings, a clock offset beyond the search, a log beside
// the trace rather than over it.
func TestFitRefuses(t *testing.T) {
	s := loadSteps()
	p := truePower(s)
	ser := s.Series()
	from, to := ser.Samples[0].Time, ser.Samples[len(ser.Samples)-1].Time
	m := account.NewMeter(ser)
	r := rand.New(rand.NewPCG(1, 2))
	good := meterLog(s, p, 1, 0, 1, 0, r)
	_, err := calibrate.Fit(good[:8], m, from.Time(), to.Time(), calibrate.Options{})
	assert.ErrorContains(t, err, "8 meter readings: a fit needs at least 11")
	_, err = calibrate.Fit(meterLog(s, p, 1, 0, 1, 20*time.Second, r), m, from.Time(), to.Time(), calibrate.Options{})
	assert.ErrorContains(t, err, "the best clock offset lies at the search limit (±10s)")
	far := meterLog(s, p, 1, 0, 1, time.Hour, r)
	_, err = calibrate.Fit(far, m, from.Time(), to.Time(), calibrate.Options{})
	assert.ErrorContains(t, err, "0 meter readings overlap the trace")

	flat := testutil.Synth{Start: t0, Duration: 2 * time.Minute, Levels: []testutil.Level{{W: 300}}}
	fs := flat.Series()
	_, err = calibrate.Fit(meterLog(flat, truePower(flat), 1, 0, 1, 0, r), account.NewMeter(fs), fs.Samples[0].Time.Time(),
		fs.Samples[len(fs.Samples)-1].Time.Time(), calibrate.Options{})
	assert.ErrorContains(t, err, "a calibration needs loads across the range")
}

// The calibration file: written and read back, refused with one line for what correcting with it cannot use.
func TestCalibrationFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cal.json")
	f := &calibrate.File{Boards: map[string]calibrate.Board{"GPU-a": {Gain: 1.02, GainSE: 0.001, OffsetW: -3, OffsetSEW: 0.5,
		CovW: -0.0004, Points: 300}}}
	require.NoError(t, f.Write(path))
	back, err := calibrate.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, calibrate.Schema, back.Schema)
	assert.Equal(t, f.Boards["GPU-a"], back.Boards["GPU-a"])
	e, u := back.Boards["GPU-a"].Correct(1000, 10)
	assert.InDelta(t, 1.02*1000-3*10, e, 1e-9)
	assert.InDelta(t, math.Sqrt(1000*1000*1e-6+100*0.25+2*1000*10*-0.0004), u, 1e-9)
	d, ud := back.Boards["GPU-a"].CorrectDifference(500)
	assert.InDelta(t, 510, d, 1e-9)
	assert.InDelta(t, 0.5, ud, 1e-9)

	bad := []struct{ text, want string }{
		{`{"schema":"x"}`, `schema "x", want "lem-calibration/1"`},
		{`{"schema":"lem-calibration/1","boards":{"":{"gain":1}}}`, "a board without a GPU UUID"},
		{`{"schema":"lem-calibration/1","boards":{"GPU-a":{"gain":3}}}`, "board GPU-a: gain 3 outside 0.5–2"},
		{`{"schema":"lem-calibration/1","boards":{"GPU-a":{"gain":1,"gain_se":-1}}}`, "standard errors must be finite"},
		{`{"schema":"lem-calibration/1","boards":{"GPU-a":{"gain":1,"gain_se":0.1,"offset_se_w":1,"cov_gain_offset_w":5}}}`,
			"covariance 5 exceeds"},
		{`{"schema":"lem-calibration/1","boards":{"GPU-a":{"gain":1,"offset_w":1e9}}}`, "offset 1e+09 W is not a board's"},
		{`[1,2]`, "cannot unmarshal"},
	}
	for _, c := range bad {
		require.NoError(t, os.WriteFile(path, []byte(c.text), 0o644))
		_, err := calibrate.ReadFile(path)
		require.Error(t, err, c.text)
		assert.Contains(t, err.Error(), c.want)
		assert.True(t, strings.HasPrefix(err.Error(), "calibration "+path+": "), err.Error())
		assert.NotContains(t, err.Error(), "\n")
	}
}
